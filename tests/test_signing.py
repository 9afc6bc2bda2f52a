"""Ed25519-signed model files: keygen, export --sign, and every loader refusing a bad signature."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from happysad.edge import Classifier, HappysadError
from happysad.edge.camera.hotswap import ModelWatcher
from happysad.edge.runtime.signing import load_public_key, signature_path

from helpers import assert_one_line_error, run_module


def edge(*args, env=None):
    return run_module("edge", *args, env=env)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    out = tmp_path_factory.mktemp("keys")
    for name in ("good", "other"):
        res = edge("keygen", "--out", out, "--name", name)
        assert res.returncode == 0, res.stderr
    assert oct((out / "good.key").stat().st_mode & 0o777) == "0o600"
    return out


@pytest.fixture(scope="module")
def signed(run_dir, keys, tmp_path_factory):
    """An int8 TFLite file exported with --sign, and its manifest."""
    from happysad.export.cli import main

    out = tmp_path_factory.mktemp("signed")
    args = [str(run_dir), "--out", str(out), "--formats", "tflite-int8,onnx-float32", "--calib-samples", "60"]
    assert main([*args, "--max-drop", "100", "--sign", str(keys / "good.key")]) == 0
    return out / "model_int8.tflite"


def test_a_signed_file_loads_from_the_bytes_checked(signed, keys, dataset):
    """Both formats load from the bytes whose signature was checked (TFLite
    model_content, onnxruntime from bytes) and classify like the plain load."""
    from happysad.edge import load_image

    key = load_public_key(keys / "good.pub")
    image = load_image(dataset / "happy" / "happy_000.png")
    for path in (signed, signed.with_name("model_float32.onnx")):
        checked, plain = Classifier(path, public_key=key), Classifier(path)
        assert checked.classify(image).scores == plain.classify(image).scores


def test_keygen_never_overwrites_a_key(keys):
    res = edge("keygen", "--out", keys, "--name", "good")
    assert_one_line_error(res, 1, r"good\.key: exists already; keys are never overwritten")


def test_signed_export_verifies_and_is_recorded(signed, keys):
    rec = json.loads((signed.parent / "manifest.json").read_text())["files"][signed.name]
    assert rec["signature"] == "model_int8.tflite.sig" and signature_path(signed).is_file()
    res = edge("verify", signed, "--public-key", keys / "good.pub", "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["signature"] == f"valid, key {rec['signed_by']}"
    # No key configured: said, not checked.
    res = edge("verify", signed, "--json", env={k: v for k, v in os.environ.items() if k != "HAPPYSAD_PUBLIC_KEY"})
    assert json.loads(res.stdout)["signature"] == "present, not checked (no public key)"


@pytest.mark.parametrize(
    "tamper, pattern",
    [
        ("model", r"the signature does not match: the file or model_int8\.tflite\.sig was changed"),
        ("signature", r"model_int8\.tflite\.sig: not an Ed25519 signature|the signature does not match"),
        ("key", r"the signature does not match.*another key signed it"),
        ("unsigned", r"unsigned \(no model_int8\.tflite\.sig\)"),
    ],
)
def test_each_tampering_is_one_line_and_exit_1(signed, keys, tmp_path, tamper, pattern, dataset):
    model = tmp_path / signed.name
    shutil.copy(signed, model)
    shutil.copy(signature_path(signed), signature_path(model))
    key = keys / ("other.pub" if tamper == "key" else "good.pub")
    if tamper == "model":
        data = bytearray(model.read_bytes())
        data[len(data) // 2] ^= 0x01
        model.write_bytes(bytes(data))
    elif tamper == "signature":
        sig = bytearray(signature_path(model).read_bytes())
        sig[10] = ord("A") if sig[10] != ord("A") else ord("B")
        signature_path(model).write_bytes(bytes(sig))
    elif tamper == "unsigned":
        signature_path(model).unlink()
    image = dataset / "happy" / "happy_000.png"
    assert_one_line_error(edge("classify", model, image, "--public-key", key), 1, pattern)
    # The same key named by the environment variable, for every command.
    env = {**os.environ, "HAPPYSAD_PUBLIC_KEY": str(key)}
    assert_one_line_error(edge("info", model, env=env), 1, pattern)


def test_hot_swap_refuses_an_unsigned_file_when_a_key_is_configured(signed, keys, tmp_path, caplog):
    model = tmp_path / signed.name
    shutil.copy(signed, model)
    shutil.copy(signature_path(signed), signature_path(model))
    key = load_public_key(keys / "good.pub")
    clf = Classifier(model, public_key=key)
    watcher = ModelWatcher(clf)
    unsigned = tmp_path / "new.tflite"
    shutil.copy(signed, unsigned)
    signature_path(model).unlink()
    os.replace(unsigned, model)  # a new file (inode) renamed over the old, with no signature
    watcher._next = 0.0
    assert watcher.poll() is None and watcher.classifier is clf
    assert "refused the new model file" in caplog.text and "unsigned" in caplog.text
    with pytest.raises(HappysadError, match="unsigned"):
        Classifier(model, public_key=key)
