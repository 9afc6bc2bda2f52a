"""Ed25519 signatures of model files: who made a file, not only that it is whole.

A signature is made over the file's every byte (metadata included) and
kept beside it as ``MODEL.sig``: one line, the 64-byte Ed25519 signature in
base64 (RFC 8032 signatures, made and checked with the ``cryptography``
package). Keys are PEM files: PKCS #8 for the private key (written with
mode 0600), SubjectPublicKeyInfo for the public one.

A device given a public key (``--public-key FILE``, or the
``HAPPYSAD_PUBLIC_KEY`` environment variable naming the file) refuses an
unsigned or wrongly signed file before any interpreter reads it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from pathlib import Path

from happysad.edge.errors import HappysadError
from happysad.edge.fileio import write_bytes
from happysad.edge.reading import LIMITS, read_regular

#: The signature file's suffix, added to the model file's name.
SIG_SUFFIX = ".sig"
#: The environment variable naming a public key file, for every command that loads a model.
KEY_ENV = "HAPPYSAD_PUBLIC_KEY"
#: Largest key or signature file read, bytes (:data:`edge.reading.LIMITS`).
MAX_KEY_BYTES = LIMITS["signature"].max_bytes


def _crypto():
    """The ``cryptography`` package's Ed25519 and serialization modules.

    Raises:
        HappysadError: ``cryptography`` is not installed.
    """
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise HappysadError("signatures need the cryptography package: pip install 'happysad[signed]'") from None
    return ed25519, serialization


def signature_path(model: str | os.PathLike) -> Path:
    """``MODEL.sig``, beside the model file."""
    model = Path(model)
    return model.with_name(model.name + SIG_SUFFIX)


def keygen(out_dir: str | os.PathLike, name: str = "happysad") -> tuple[Path, Path]:
    """Make an Ed25519 key pair: ``NAME.key`` (private, mode 0600) and
    ``NAME.pub`` (public) in ``out_dir``; an existing key is never overwritten.

    Returns:
        (private key path, public key path).

    Raises:
        HappysadError: a key of that name exists, or the folder cannot be written.
    """
    ed25519, serialization = _crypto()
    out = Path(out_dir)
    private, public = out / f"{name}.key", out / f"{name}.pub"
    for path in (private, public):
        if path.exists():
            raise HappysadError(f"{path}: exists already; keys are never overwritten (choose another --out)")
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    out.mkdir(parents=True, exist_ok=True)
    write_bytes(private, pem, mode=0o600)
    write_bytes(public, pub)
    return private, public


def _load_key(path: str | os.PathLike, kind: str, hint: str):
    """An Ed25519 key from a PEM file: ``kind`` "private" (PKCS #8) or
    "public" (SubjectPublicKeyInfo); ``hint`` says where a good one comes from.

    Raises:
        UsageError: the file does not exist. HappysadError: not an Ed25519 key of that kind.
    """
    ed25519, serialization = _crypto()
    load, wanted = {
        "private": (lambda pem: serialization.load_pem_private_key(pem, password=None), ed25519.Ed25519PrivateKey),
        "public": (serialization.load_pem_public_key, ed25519.Ed25519PublicKey),
    }[kind]
    data = read_regular(path, f"{kind} key")
    try:
        key = load(data)
    except (ValueError, TypeError):
        key = None
    if not isinstance(key, wanted):
        raise HappysadError(f"{path}: not an Ed25519 {kind} key (PEM); {hint}")
    return key


def load_private_key(path: str | os.PathLike):
    """An Ed25519 private key from a PEM file.

    Raises:
        UsageError: the file does not exist. HappysadError: not an Ed25519 private key.
    """
    return _load_key(path, "private", "make one with happysad-edge keygen")


def load_public_key(path: str | os.PathLike):
    """An Ed25519 public key from a PEM file.

    Raises:
        UsageError: the file does not exist. HappysadError: not an Ed25519 public key.
    """
    return _load_key(path, "public", "use the .pub file from happysad-edge keygen")


def key_fingerprint(public_key) -> str:
    """sha256 (hex, first 16 digits) of the raw 32-byte public key: which key, in a line."""
    _, serialization = _crypto()
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def sign_file(model: str | os.PathLike, private_key) -> Path:
    """Sign a model file's bytes; writes ``MODEL.sig`` atomically.

    Returns:
        the signature file's path.
    """
    data = read_regular(model, "model")
    sig = base64.b64encode(private_key.sign(data)) + b"\n"
    path = signature_path(model)
    write_bytes(path, sig)
    return path


def verify_file(
    model: str | os.PathLike, public_key, key_name: str = "the public key", content: bytes | None = None
) -> str:
    """Check ``MODEL.sig`` against the model file's bytes, before anything else reads them.

    ``content``: the file's bytes, already read (and then used, whole, by
    the caller): what is checked is exactly what is loaded.

    Returns:
        the key's fingerprint (:func:`key_fingerprint`).

    Raises:
        HappysadError: no signature file, a malformed one, or a signature
            that does not match (the file or its signature was changed, or
            another key signed it).
    """
    from cryptography.exceptions import InvalidSignature

    # Through a link (an install's DIR/current) to the file itself, whose
    # signature lies beside it.
    model = Path(model).resolve()
    sig_path = signature_path(model)
    if not sig_path.exists():
        raise HappysadError(
            f"{model}: unsigned (no {sig_path.name}) and {key_name} asks for a signature; "
            "copy the .sig file beside it, or export with --sign"
        )
    try:
        sig = base64.b64decode(read_regular(sig_path, "signature").strip(), validate=True)
    except (binascii.Error, ValueError):
        sig = b""
    if len(sig) != 64:
        raise HappysadError(f"{sig_path}: not an Ed25519 signature (64 bytes, base64); copy it again")
    try:
        public_key.verify(sig, content if content is not None else read_regular(model, "model"))
    except InvalidSignature:
        raise HappysadError(
            f"{model}: the signature does not match: the file or {sig_path.name} was changed, or "
            f"another key signed it (checked with {key_name}); do not use this file"
        ) from None
    return key_fingerprint(public_key)


def configured_key(path: str | os.PathLike | None):
    """(public key, its file name) from ``path``, else from the
    :data:`KEY_ENV` environment variable, else (None, None)."""
    path = path or os.environ.get(KEY_ENV) or None
    if not path:
        return None, None
    return load_public_key(path), str(path)
