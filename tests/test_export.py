"""happysad-export: five verified, self-describing files; options; refusal on a miss."""

import contextlib
import hashlib
import io
import json
import re
import shutil

import numpy as np
import pytest

from happysad.edge import Classifier, load_image, preprocess, read_metadata
from happysad.edge.dataset import read_split, split_items
from happysad.edge.faces.crop import DEFAULT_FACE_MARGIN

FIVE = ("model_float32.tflite", "model_float16.tflite", "model_int8.tflite", "model_float32.onnx", "model_int8.onnx")


def export(*args):
    """Run happysad-export in this process; returns (exit code, stderr text)."""
    from happysad.export.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, err.getvalue()


@pytest.fixture(scope="module")
def val(run_dir):
    """uint8 (N, 48, 48, 1) validation pixels and int labels, as the export reads them."""
    items = split_items(read_split(run_dir / "split.json"), "val")
    return np.stack([preprocess(load_image(p)) for p, _ in items]), np.array([c for _, c in items])


@pytest.fixture(scope="module")
def keras_val(run_dir, val):
    import keras

    model = keras.saving.load_model(run_dir / "model.keras")
    return model.predict(val[0].astype(np.float32), verbose=0).ravel()


def manifest_of(folder):
    return json.loads((folder / "manifest.json").read_text())


def test_five_files_each_verified_and_described(export_dir, val):
    manifest = manifest_of(export_dir)
    assert sorted(manifest["files"]) == sorted(FIVE) and manifest["refused"] == {}
    for name, rec in manifest["files"].items():
        data = (export_dir / name).read_bytes()
        assert rec["size_bytes"] == len(data) and rec["sha256"] == hashlib.sha256(data).hexdigest()
        meta = read_metadata(export_dir / name)
        d = meta.to_dict()
        assert d["schema_version"] == 3 and d["output"] == "sigmoid" and meta.extra["format"] == rec["format"]
        # The figures measured before shipping are in the file and in the manifest, alike.
        assert meta.verification == rec["verification"]
        v = rec["verification"]
        assert v["split"] == "val" and v["n"] == len(val[1])
        assert v["drop_pp"] == pytest.approx((v["float_accuracy"] - v["accuracy"]) * 100, abs=1e-3)
        assert v["drop_pp"] <= 1.0  # the default --max-drop
        assert len(meta.extra["run"]["data_fingerprint"]) == 64 and meta.face_margin == DEFAULT_FACE_MARGIN
        # The metadata states the input tensor the interpreter actually has.
        b = Classifier(export_dir / name).backend
        assert meta.input_dtype == np.dtype(b.input_dtype).name
        assert (meta.input_scale, meta.input_zero_point) == (b.input_quant or (None, None))


def test_recorded_figures_match_an_independent_run(export_dir, val, keras_val):
    pixels, labels = val
    keras_acc = np.mean((keras_val >= 0.5) == labels)
    for name in ("model_int8.tflite", "model_int8.onnx"):
        clf = Classifier(export_dir / name)
        pred = np.array([clf.predict_index(clf.scores(x)) for x in pixels])
        v = clf.metadata.verification
        assert v["float_accuracy"] == pytest.approx(keras_acc, abs=1e-6)
        assert v["accuracy"] == pytest.approx(np.mean(pred == labels), abs=1e-6)
        assert v["agreement"] == pytest.approx(np.mean(pred == (keras_val >= 0.5)), abs=1e-6)


def test_float16_is_half_the_size_and_loses_nothing(export_dir, val, keras_val):
    f32, f16 = (
        (export_dir / "model_float32.tflite").stat().st_size,
        (export_dir / "model_float16.tflite").stat().st_size,
    )
    assert f16 < 0.6 * f32
    clf = Classifier(export_dir / "model_float16.tflite")
    assert clf.backend.input_dtype == np.float32 and clf.metadata.input_scale is None
    probs = np.array([clf.scores(x)[1] for x in val[0]])
    np.testing.assert_allclose(probs, keras_val, atol=2e-3)  # float16 has an 11-bit significand


@pytest.fixture(scope="module")
def variant(run_dir, tmp_path_factory):
    """The two int8 files with every non-default quantization option.

    --max-drop 100 lets the files be written whatever they lose: on this
    tiny model Entropy's narrower ranges change the label of a few of the 24
    validation faces, and these tests look at how the files were quantized,
    not at their accuracy.
    """
    out = tmp_path_factory.mktemp("variant")
    code, err = export(
        run_dir,
        "--out",
        out,
        "--formats",
        "tflite-int8,onnx-int8",
        "--io-type",
        "uint8",
        "--no-per-channel",
        "--calibration",
        "entropy",
        "--calib-samples",
        "60",
        "--debug-quant",
        "--max-drop",
        "100",
    )
    assert code == 0, err
    return out, err


def test_few_calibration_images_warn(variant):
    assert re.search(r"warning: 60 calibration images, fewer than 300", variant[1])


def test_uint8_input_takes_raw_pixels(variant, val):
    from ai_edge_litert.interpreter import Interpreter

    path = variant[0] / "model_int8.tflite"
    clf = Classifier(path)
    assert clf.backend.input_dtype == np.uint8 and clf.backend.input_quant == (1.0, 0)
    meta = clf.metadata
    assert (meta.input_dtype, meta.input_scale, meta.input_zero_point) == ("uint8", 1.0, 0)
    # Pixels straight from preprocess go into the interpreter untouched.
    interp = Interpreter(model_path=str(path))
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    for x in val[0][:5]:
        interp.set_tensor(inp["index"], x[None])
        interp.invoke()
        scale, zero = out["quantization"]
        p = scale * (int(interp.get_tensor(out["index"])[0, 0]) - zero)
        assert p == pytest.approx(clf.scores(x)[1], abs=1e-6)


def _weight_and_activation_scales(path):
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    weights = [
        inits[n.input[1]]
        for n in model.graph.node
        if n.op_type == "DequantizeLinear" and n.input[0] in inits and inits[n.input[0]].ndim == 4
    ]
    acts = {
        n.input[0]: float(inits[n.input[1]])
        for n in model.graph.node
        if n.op_type == "QuantizeLinear" and n.input[0] not in inits
    }
    return weights, acts


def test_onnx_per_channel_and_calibration_are_applied(export_dir, variant):
    default_w, default_a = _weight_and_activation_scales(export_dir / "model_int8.onnx")
    tensor_w, entropy_a = _weight_and_activation_scales(variant[0] / "model_int8.onnx")
    assert default_w and any(s.size > 1 for s in default_w)  # one scale per output channel
    assert tensor_w and all(s.size == 1 for s in tensor_w)  # one scale per tensor
    # Same 60 calibration images (same seed): only the method differs, and it
    # picks other ranges for some activations.
    common = set(default_a) & set(entropy_a)
    assert common and any(default_a[k] != pytest.approx(entropy_a[k], rel=1e-3) for k in common)
    q = read_metadata(variant[0] / "model_int8.onnx").extra["quantization"]
    assert q["calibration"] == "Entropy" and q["weights"] == "int8 (7-bit range, reduce_range), per-tensor"
    assert manifest_of(variant[0])["options"]["calibration"] == "entropy"


def test_debug_quant_reports_every_layer(variant):
    import csv

    rows = list(csv.DictReader((variant[0] / "quant_debug_tflite_int8.csv").open()))
    assert len(rows) >= 5 and "CONV_2D" in {r["op_name"] for r in rows}
    assert all(float(r["mean_squared_error"]) >= 0 and float(r["scale"]) > 0 for r in rows)
    rows = list(csv.DictReader((variant[0] / "quant_debug_onnx_int8.csv").open()))
    assert len(rows) >= 5 and all(np.isfinite(float(r["sqnr_vs_float_db"])) for r in rows)
    assert set(manifest_of(variant[0])["debug_reports"]) == {"quant_debug_tflite_int8.csv", "quant_debug_onnx_int8.csv"}


def _folder_with_good_int8(export_dir, tmp_path):
    for name in ("model_int8.tflite", "model_float16.tflite", "manifest.json"):
        shutil.copy(export_dir / name, tmp_path / name)
    return (tmp_path / "model_int8.tflite").read_bytes()


def test_one_sample_calibration_is_refused_and_the_good_file_kept(run_dir, export_dir, tmp_path):
    """One calibration image sets every activation range from one face, so
    other faces clip: on this model the int8 file loses far more than 1 pp
    (half the validation faces change label), and must not be written."""
    good = _folder_with_good_int8(export_dir, tmp_path)
    code, err = export(run_dir, "--out", tmp_path, "--formats", "tflite-int8", "--calib-samples", "1")
    assert code == 1
    line = err.strip().splitlines()[-1]
    m = re.fullmatch(
        r"happysad-export: error: not written: model_int8\.tflite loses (\d+\.\d+) pp on the val "
        r"split \((\S+) -> (\S+), n=\d+\), (\d+\.\d+) pp over --max-drop 1; .*--debug-quant",
        line,
    )
    assert m, line
    drop, missed = float(m.group(1)), float(m.group(4))
    assert missed == pytest.approx(drop - 1.0, abs=0.01)
    assert drop == pytest.approx((float(m.group(2)) - float(m.group(3))) * 100, abs=0.01)
    assert (tmp_path / "model_int8.tflite").read_bytes() == good
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary file left behind"
    manifest = manifest_of(tmp_path)
    assert manifest["refused"]["model_int8.tflite"]["missed_by_pp"] == pytest.approx(missed, abs=0.01)
    # The old file is still listed, so it still verifies.
    assert manifest["files"]["model_int8.tflite"]["sha256"] == hashlib.sha256(good).hexdigest()
    assert manifest["written"] == []


def test_negative_max_drop_refuses_even_a_lossless_file(run_dir, export_dir, tmp_path):
    """--max-drop -100 asks a file to gain 100 pp on the Keras model: a miss on any model."""
    _folder_with_good_int8(export_dir, tmp_path)
    before = (tmp_path / "model_float16.tflite").read_bytes()
    code, err = export(run_dir, "--out", tmp_path, "--formats", "tflite-float16", "--max-drop", "-100")
    assert code == 1
    assert re.search(
        r"model_float16\.tflite loses -?0\.00 pp .* 100\.00 pp over --max-drop -100", err.strip().splitlines()[-1]
    )
    assert (tmp_path / "model_float16.tflite").read_bytes() == before


@pytest.mark.parametrize(
    "args,pattern",
    [
        (("--io-type", "int4"), r"argument --io-type: invalid choice: 'int4'"),
        (("--calibration", "kl"), r"invalid choice: 'kl'"),
        (("--max-drop", "lots"), r"'lots' is not a number of percentage points"),
        (("--formats", "tflite-float8"), r"unknown format tflite-float8; valid formats: .*tflite-float16"),
    ],
)
def test_bad_options_are_usage_errors(tmp_path, args, pattern, capsys):
    from happysad.export.cli import main

    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path), *args])
    assert exc.value.code == 2
    assert re.search(pattern, capsys.readouterr().err)


def test_onnx_int8_weights_fit_in_7_bits_and_auto_calibration_is_recorded(export_dir):
    """Weights in -64..64 (reduce_range, symmetric), so x86 CPUs without VNNI, whose int8
    kernels add two uint8 x int8 products in a saturating int16, give the same
    answers as the rest; the default calibration is chosen on the validation
    split and the choice recorded."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(export_dir / "model_int8.onnx"))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    weights = [
        inits[n.input[0]]
        for n in model.graph.node
        if n.op_type == "DequantizeLinear"
        and n.input[0] in inits
        and inits[n.input[0]].dtype == np.int8
        and inits[n.input[0]].ndim == 4
    ]
    assert weights
    assert all(w.min() >= -64 and w.max() <= 64 for w in weights)  # 255 * 64 * 2 < 32767
    assert max(int(np.abs(w).max()) for w in weights) >= 60  # the 7-bit range is used, not shrunk further
    q = read_metadata(export_dir / "model_int8.onnx").extra["quantization"]
    assert q["weights"].startswith("int8 (7-bit range")
    trials = q["calibration_choice"]["val_accuracy"]
    assert set(trials) == {"minmax", "entropy", "percentile"}
    assert trials[q["calibration"].lower()] == max(trials.values())
    options = manifest_of(export_dir)["options"]
    assert options["calibration"] == "auto" and options["calibration_chosen"] in trials


def test_a_model_near_chance_is_not_exported(dataset, tmp_path):
    """One epoch at a tiny learning rate: the Keras model is near chance on validation, and
    the export says so in one line instead of shipping it (--min-accuracy 0 overrides)."""
    from happysad.train.cli import main as train_main

    run = tmp_path / "weak"
    assert (
        train_main(
            [
                str(dataset),
                "--out",
                str(run),
                "--epochs",
                "1",
                "--lr",
                "0.00001",
                "--arch",
                "seed",
                "--augment",
                "basic",
            ]
        )
        == 0
    )
    code, err = export(run, "--formats", "tflite-float32")
    assert code == 1 and "under --min-accuracy 0.6 (near chance" in err, err[-2000:]
    assert not (run / "export" / "model_float32.tflite").exists()
    code, err = export(run, "--formats", "tflite-float32", "--min-accuracy", "0")
    assert code == 0, err[-2000:]
