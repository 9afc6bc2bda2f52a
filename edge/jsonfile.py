"""The one JSON reader for every file the tools accept from outside: a
manifest, a split, a benchmark report, a model's metadata.

Bounded before it is parsed: the bytes come through the regular-file gate
(:mod:`edge.reading`: no FIFO, a size cap per kind), and the nesting depth
is measured without recursion and refused past :data:`MAX_JSON_DEPTH`, so
100,000 nested brackets are one line, not a ``RecursionError`` from
Python's recursive parser (or from whatever walks the result later). Then
the top level must be an object, and :func:`check_fields` checks the type
of each field, each failure one line naming the file and the field.
"""

from __future__ import annotations

import json
import os
import re

from happysad.edge.errors import HappysadError
from happysad.edge.reading import LIMITS, Kind, read_regular, shown

#: Deepest nesting of arrays and objects read. The files the tools write
#: nest 4 levels at most (a report's result, its latency figures); 64
#: leaves room for any hand-edited file and stays far under the
#: interpreter's recursion limit (1,000), which parsing and every later walk
#: of the result (``json.dumps``, ``copy.deepcopy``) would otherwise meet.
MAX_JSON_DEPTH = 64

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))
_INNERMOST = re.compile(rb"\[\]|\{\}")
#: JSON's names for the Python types ``json`` gives.
_JSON_TYPES = {dict: "an object", list: "an array", str: "a string", bool: "true or false", type(None): "null"}


def json_type(value) -> str:
    """What a parsed JSON value is, in JSON's words: ``"a string"``, ``"an array"``, ``"a number"``..."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "a whole number" if isinstance(value, int) else "a number"
    return _JSON_TYPES.get(type(value), type(value).__name__)


def too_deep(raw: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when JSON text nests arrays and objects more than ``limit`` deep.

    Strings are taken out first (brackets inside them do not count), then
    everything but the brackets; then innermost ``[]`` and ``{}`` pairs are
    removed, one level per pass: a text still shrinking after ``limit``
    passes is deeper than that. Each pass is one regular-expression scan,
    in C; nothing recurses. An unterminated string or unbalanced brackets
    (not JSON) are left for the parser to refuse.
    """
    s = _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    for _ in range(limit):
        s, n = _INNERMOST.subn(b"", s)
        if not n:
            return False
    return bool(_INNERMOST.search(s))


def parse_json(raw: bytes, source: str, what: str, max_bytes: int | None = None, hint: str = ""):
    """Parse JSON bytes within a size and a depth bound.

    Args:
        raw: UTF-8 JSON. source: names the file in messages. what: names
            its kind (``"model metadata"``). max_bytes: largest accepted
            (None: no cap here; the file's gate had one). hint: what to do,
            added to each message after ``"; "``.

    Returns:
        the parsed value, of any JSON type.

    Raises:
        HappysadError: over ``max_bytes``, nested over :data:`MAX_JSON_DEPTH`,
            or not JSON.
    """
    tail = f"; {hint}" if hint else ""
    if max_bytes is not None and len(raw) > max_bytes:
        raise HappysadError(f"{source}: {what} is {len(raw)} bytes, over the {max_bytes}-byte limit{tail}")
    if too_deep(raw):
        raise HappysadError(f"{source}: {what} is nested too deeply (over {MAX_JSON_DEPTH} levels){tail}")
    try:
        return json.loads(raw)
    except RecursionError:  # brackets the depth scan could not pair (inside an unterminated string)
        raise HappysadError(f"{source}: {what} is nested too deeply{tail}") from None
    except (ValueError, UnicodeDecodeError):
        raise HappysadError(f"{source}: {what} is not valid JSON{tail}") from None


def read_json(path: str | os.PathLike, kind: str | Kind = "manifest", fields: dict | None = None) -> dict:
    """Read a JSON object from a file the tools accept from outside.

    Args:
        kind: a key of :data:`edge.reading.LIMITS` (``"manifest"``,
            ``"split"``, ``"report"``, ``"metrics"``) or a :class:`Kind`:
            its size cap, and its name in messages.
        fields: the type of each top-level field (:func:`check_fields`).

    Returns:
        the object.

    Raises:
        UsageError: no such file (exit status 2).
        HappysadError: not a regular file, too large, too deep, not JSON,
            not an object, or a field of the wrong type; one line naming
            the file (and the field).
    """
    k = kind if isinstance(kind, Kind) else LIMITS[kind]
    source = shown(path)
    obj = parse_json(read_regular(path, k), source, k.what)
    if not isinstance(obj, dict):
        raise HappysadError(f"{source}: {k.what} is not a JSON object (it is {json_type(obj)})")
    if fields:
        check_fields(obj, fields, f"{source}: {k.what}")
    return obj


def _expected(types) -> str:
    types = types if isinstance(types, tuple) else (types,)
    if float in types:
        types = tuple(t for t in types if t not in (int, float)) + (float,)
    return " or ".join(_JSON_TYPES.get(t, "a number" if t is float else "a whole number") for t in types)


def type_ok(value, types) -> bool:
    """True when a parsed JSON value is of ``types`` (a type or a tuple):
    ``int`` takes whole numbers, ``float`` any number; ``true`` and
    ``false`` are never numbers."""
    types = types if isinstance(types, tuple) else (types,)
    if isinstance(value, bool):
        return bool in types
    if isinstance(value, int) and float in types:
        return True
    return isinstance(value, types)


def check_fields(obj: dict, fields: dict, where: str) -> dict:
    """Check the type of each field of a JSON object.

    Args:
        fields: {name: type or tuple of types}; a name ending in ``?`` is
            optional (absent, or null, is let be). ``int``: a whole number,
            ``float``: any number, ``dict``: an object, ``list``: an array.
        where: the message's start, e.g. ``"split.json: split file"``.

    Returns:
        ``obj``.

    Raises:
        HappysadError: a required field is missing, or one has another type:
            ``"split.json: split file field 'test' is a string, expected an array"``.
    """
    for spec, types in fields.items():
        name, optional = spec.rstrip("?"), spec.endswith("?")
        if name not in obj or (optional and obj[name] is None):
            if optional:
                continue
            raise HappysadError(f"{where} has no field {name!r} ({_expected(types)})")
        if not type_ok(obj[name], types):
            raise HappysadError(f"{where} field {name!r} is {json_type(obj[name])}, expected {_expected(types)}")
    return obj
