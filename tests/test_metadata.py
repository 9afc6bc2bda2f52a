import json
import zipfile

import pytest

from edge import HappysadError, ModelMetadata
from edge.metadata import (MAX_METADATA_BYTES, TFLITE_MEMBER, append_to_tflite, decode, encode,
                           read_tflite_metadata)

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
