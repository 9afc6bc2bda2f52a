"""The TFLite Model Metadata block in exported .tflite files, read back with
an independent reader: the schema's generated reader as MediaPipe ships it
(``metadata_schema_py_generated`` from the mediapipe wheel, fetched with pip
into the test's own folder; the wheel is not installed: it would bring a
second OpenCV), and TensorFlow's generated reader of the model schema."""

from __future__ import annotations

import dataclasses
import importlib.util
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from happysad.edge.runtime.embedding import read_tflite_metadata
from happysad.export.ship import embed

from helpers import train_args

#: The MediaPipe release whose generated metadata reader is used.
MEDIAPIPE = "mediapipe==1.2.3"
MEMBER = "mediapipe/tasks/metadata/metadata_schema_py_generated.py"


@pytest.fixture(scope="module")
def mediapipe_wheel(tmp_path_factory):
    """The mediapipe wheel, fetched (not installed) with pip."""
    tmp = tmp_path_factory.mktemp("mediapipe")
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "-d", str(tmp), MEDIAPIPE]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, f"pip could not fetch {MEDIAPIPE}: {res.stderr[-300:]}"
    (wheel,) = tmp.glob("mediapipe-*.whl")
    return wheel


@pytest.fixture(scope="module")
def schema(mediapipe_wheel):
    """MediaPipe's generated reader of metadata_schema.fbs, as a module."""
    wheel = mediapipe_wheel
    path = wheel.parent / "metadata_schema_py_generated.py"
    path.write_bytes(zipfile.ZipFile(wheel).read(MEMBER))
    spec = importlib.util.spec_from_file_location("metadata_schema_py_generated", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def metadata_block(data: bytes) -> bytes:
    """The TFLITE_METADATA buffer of a model, found with TensorFlow's reader of the model schema."""
    from tensorflow.lite.python import schema_py_generated as tfl

    model = tfl.Model.GetRootAs(data, 0)
    names = {model.Metadata(i).Name(): model.Metadata(i).Buffer() for i in range(model.MetadataLength())}
    assert b"TFLITE_METADATA" in names, names
    return model.Buffers(names[b"TFLITE_METADATA"]).DataAsNumpy().tobytes()


def labels_file(data: bytes) -> list[str]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return z.read("labels.txt").decode().splitlines()


def test_exported_int8_file_carries_the_standard_metadata(export_dir, schema):
    data = (export_dir / "model_int8.tflite").read_bytes()
    block = metadata_block(data)
    assert schema.ModelMetadata.ModelMetadataBufferHasIdentifier(block, 0)
    mm = schema.ModelMetadataT.InitFromPackedBuf(block, 0)
    assert b"happy" in mm.name and mm.minParserVersion == b"1.0.0"
    (sub,) = mm.subgraphMetadata
    (inp,), (out,) = sub.inputTensorMetadata, sub.outputTensorMetadata
    assert inp.content.contentPropertiesType == schema.ContentProperties.ImageProperties
    image = inp.content.contentProperties
    assert image.colorSpace == schema.ColorSpaceType.GRAYSCALE
    assert (image.defaultSize.width, image.defaultSize.height) == (48, 48)
    (unit,) = inp.processUnits
    assert unit.optionsType == schema.ProcessUnitOptions.NormalizationOptions
    assert list(unit.options.mean) == [0.0] and list(unit.options.std) == [1.0]
    assert (list(inp.stats.min), list(inp.stats.max)) == ([0.0], [255.0])
    assert out.content.contentPropertiesType == schema.ContentProperties.FeatureProperties
    (labels,) = out.associatedFiles
    assert (labels.name, labels.type) == (b"labels.txt", schema.AssociatedFileType.TENSOR_AXIS_LABELS)
    # One sigmoid unit: the probability of the second label, which the label file names.
    assert labels_file(data) == ["sad"]
    assert read_tflite_metadata("model", data).labels == ("happy", "sad")


def test_softmax_labels_are_written_in_output_order_and_replaced_not_added(export_dir, schema):
    data = (export_dir / "model_int8.tflite").read_bytes()
    meta = read_tflite_metadata("model", data)
    three = dataclasses.replace(meta, labels=("sad", "neutral", "happy"), output="softmax")
    once = embed(data, three)
    assert labels_file(once) == ["sad", "neutral", "happy"]
    mm = schema.ModelMetadataT.InitFromPackedBuf(metadata_block(once), 0)
    assert b"softmax" in mm.subgraphMetadata[0].outputTensorMetadata[0].description
    twice = embed(once, three)
    assert len(twice) == len(once)  # the block's buffer is reused, nothing piles up
    from tensorflow.lite.python import schema_py_generated as tfl

    model = tfl.Model.GetRootAs(twice, 0)
    assert [model.Metadata(i).Name() for i in range(model.MetadataLength())].count(b"TFLITE_METADATA") == 1


CLASSIFY = """
import json, sys
import numpy as np
import mediapipe as mp
from mediapipe.tasks.python.core import base_options
from mediapipe.tasks.python.vision import image_classifier as ic

out = {}
for path in sys.argv[1:]:
    try:
        options = ic.ImageClassifierOptions(base_options=base_options.BaseOptions(model_asset_path=path))
        with ic.ImageClassifier.create_from_options(options) as clf:
            image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.full((96, 96, 3), 128, np.uint8))
            result = clf.classify(image)
            out[path] = [(c.category_name, c.score) for c in result.classifications[0].categories]
    except Exception as exc:
        out[path] = str(exc).splitlines()[0]
print(json.dumps(out))
"""


def test_mediapipe_image_classifier_loads_an_rgb_uint8_export(dataset, export_dir, mediapipe_wheel, tmp_path):
    """MediaPipe's ImageClassifier (mediapipe installed --no-deps in a venv of
    its own) runs the int8 file of a model trained with --color rgb and
    exported with --io-type uint8, naming the label from the metadata; it
    refuses the gray files, for their one channel."""
    import sysconfig

    from happysad.export.cli import main as export_main
    from happysad.train.cli import main as train_main

    run = tmp_path / "rgb"
    assert train_main(train_args(dataset, run, 2, "--color", "rgb")) == 0
    export_args = ["--formats", "tflite-int8", "--io-type", "uint8", "--calib-samples", "30", "--max-drop", "100"]
    assert export_main([str(run), *export_args, "--min-accuracy", "0"]) == 0
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    purelib = Path(sysconfig.get_paths(vars={"base": str(venv), "platbase": str(venv)})["purelib"])
    (purelib / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # numpy, OpenCV, absl, flatbuffers
    pip = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--no-deps", "-q"]
    res = subprocess.run([*pip, str(mediapipe_wheel)], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    rgb, gray = run / "export" / "model_int8.tflite", export_dir / "model_int8.tflite"
    res = subprocess.run(
        [str(venv / "bin" / "python"), "-c", CLASSIFY, str(rgb), str(gray)], capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert isinstance(out[str(rgb)], list), out[str(rgb)]
    ((name, score),) = out[str(rgb)]
    assert name == "sad" and 0.0 <= score <= 1.0  # a sigmoid model: its one output is p(sad)
    assert "got INT8" in out[str(gray)]  # the gray file: int8 input (and one channel) refused
