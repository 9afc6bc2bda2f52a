import json
import re
import zipfile

import pytest

from happysad.edge import HappysadError, ModelMetadata
from happysad.edge.runtime.embedding import append_to_tflite, read_tflite_metadata, strip_tflite_metadata
from happysad.edge.runtime.metadata import MAX_METADATA_BYTES, TFLITE_MEMBER, decode, encode

META = ModelMetadata(("happy", "sad"), (48, 48), "gray", 0.5, 0.1, extra={"format": "tflite-int8"})


def test_tflite_append_and_read_back(tmp_path):
    body = b"\x1c\x00\x00\x00TFL3" + bytes(200)
    path = tmp_path / "m.tflite"
    path.write_bytes(append_to_tflite(body, META))
    assert path.read_bytes().startswith(body)
    back = read_tflite_metadata(path)
    assert back == META
    assert back.extra["format"] == "tflite-int8"
    assert back.to_dict()["schema_version"] == 1


def test_file_without_metadata(tmp_path):
    path = tmp_path / "m.tflite"
    path.write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes(100))
    with pytest.raises(HappysadError, match="no happysad metadata"):
        read_tflite_metadata(path)


def _with_member(tmp_path, raw: bytes):
    path = tmp_path / "m.tflite"
    with open(path, "wb") as fh:
        fh.write(b"\x1c\x00\x00\x00TFL3" + bytes(100))
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr(TFLITE_MEMBER, raw)
    return path


def test_malformed_json(tmp_path):
    with pytest.raises(HappysadError, match="not valid JSON"):
        read_tflite_metadata(_with_member(tmp_path, b"{not json"))


def test_oversized(tmp_path):
    with pytest.raises(HappysadError, match="limit"):
        read_tflite_metadata(_with_member(tmp_path, b" " * (MAX_METADATA_BYTES + 1)))


def test_unknown_schema_version():
    d = json.loads(encode(META))
    d["schema_version"] = 99
    with pytest.raises(HappysadError, match="schema_version 99"):
        decode(json.dumps(d).encode(), "m")


@pytest.mark.parametrize("field,value", [("labels", ["only"]), ("threshold", 2.0), ("input", {"height": 48})])
def test_bad_fields(field, value):
    d = json.loads(encode(META))
    d[field] = value
    with pytest.raises(HappysadError, match="bad model metadata"):
        decode(json.dumps(d).encode(), "m")


V2 = ModelMetadata(
    ("happy", "sad"),
    (48, 48),
    "gray",
    0.5,
    0.1,
    extra={"format": "tflite-int8"},
    input_dtype="int8",
    input_scale=1.0,
    input_zero_point=-128,
    verification={"split": "val", "n": 24, "float_accuracy": 0.95, "accuracy": 0.9, "drop_pp": 5.0, "agreement": 0.95},
)


def test_schema_3_round_trip_and_schema_2_reads():
    d = json.loads(encode(V2))
    assert d["schema_version"] == 3 and d["output"] == "sigmoid"
    assert decode(json.dumps({**d, "schema_version": 2}).encode(), "m") == V2
    assert d["input"]["dtype"] == "int8" and d["input"]["scale"] == 1.0 and d["input"]["zero_point"] == -128
    back = decode(encode(V2), "m")
    assert back == V2 and back.verification["drop_pp"] == 5.0


def test_schema_1_files_still_read():
    """A version-1 file (no dtype, no figures) reads, and is not rewritten as version 2."""
    d = json.loads(encode(META))
    assert d["schema_version"] == 1 and "dtype" not in d["input"]
    back = decode(json.dumps(d).encode(), "old")
    assert back.input_dtype is None and back.verification is None
    assert back.to_dict()["schema_version"] == 1


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda d: d["input"].pop("dtype"), "missing field 'dtype'"),
        (lambda d: d["input"].update(dtype="int4"), "input dtype 'int4'"),
        (lambda d: d["input"].update(zero_point=None), "needs a scale > 0 and an integer zero point"),
        (lambda d: d["input"].update(zero_point=-129), "outside the int8 range"),
        (lambda d: d["input"].update(dtype="float32"), "a float32 input has no scale"),
        (lambda d: d["verification"].update(accuracy=1.5), "verification accuracy 1.5"),
        (lambda d: d["verification"].pop("n"), "missing field 'n'"),
    ],
)
def test_bad_schema_2_fields(change, message):
    d = json.loads(encode(V2))
    change(d)
    with pytest.raises(HappysadError, match=re.escape(message)):
        decode(json.dumps(d).encode(), "m")


def test_metadata_replaced_not_stacked(tmp_path):
    body = b"\x1c\x00\x00\x00TFL3" + bytes(range(256)) * 4 + b"PK\x03\x04 not a zip"
    first = append_to_tflite(body, META)
    assert strip_tflite_metadata(first) == body
    assert strip_tflite_metadata(body) == body
    path = tmp_path / "m.tflite"
    path.write_bytes(append_to_tflite(strip_tflite_metadata(first), V2))
    assert read_tflite_metadata(path) == V2
    with zipfile.ZipFile(path) as zf:
        assert zf.namelist() == [TFLITE_MEMBER]
