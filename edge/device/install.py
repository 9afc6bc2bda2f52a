"""Installing a model file on a device, with a way back.

``DIR/models/`` keeps each installed file under a versioned name
(``<sha256 prefix>-<name>``, with its ``.sig`` when signed); ``DIR/current``
and ``DIR/previous`` are symbolic links to two of them. An install copies
the file in (written, fsync'd, then renamed), verifies the copy, points
``previous`` at what was current, and then replaces ``current`` by renaming
a new link over it: a rename is atomic, so after a power loss at any
instant ``current`` names either the old file or the new one, whole,
never neither. ``rollback`` swaps the two links the same way. A camera
loop started on ``DIR/current`` switches to a new install between frames
(its hot swap follows the link).
"""

from __future__ import annotations

import os
from pathlib import Path

from happysad.edge.errors import HappysadError, UsageError
from happysad.edge.fileio import copy_file, fsync_dir
from happysad.edge.runtime.signing import signature_path

CURRENT = "current"
PREVIOUS = "previous"
MODELS = "models"


def _point(link: Path, target: str) -> None:
    """Make ``link`` a symbolic link to ``target`` atomically (a new link renamed over it)."""
    tmp = link.with_name(f".{link.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, link)
    fsync_dir(link.parent)


def _target(link: Path) -> str | None:
    """Where a link points (relative to its folder), or None when there is none."""
    try:
        return os.readlink(link)
    except (FileNotFoundError, OSError):
        return None


def install(model: str | os.PathLike, to: str | os.PathLike, manifest=None, public_key=None) -> dict:
    """Verify ``model`` and make it ``DIR/current``; the current one becomes ``DIR/previous``.

    The copy is verified where it lies (:func:`edge.device.verify.verify` with a
    manifest: size and sha256; the signature when a key is configured; the
    metadata; a self-test inference) before any link moves.

    Returns:
        {"current": versioned file name, "previous": the one before or None,
        "sha256", "signature" (as :func:`edge.device.verify.signature_status` says)}.

    Raises:
        UsageError: the model or manifest does not exist.
        HappysadError: the file fails a check (nothing changes), or ``to``
            cannot be written.
    """
    from happysad.edge.classifier import Classifier
    from happysad.edge.device.verify import MANIFEST_NAME, file_digest, signature_status, verify

    model = Path(model)
    if not model.is_file():
        raise UsageError(f"{model}: no such model file; check the path")
    manifest = Path(manifest) if manifest else model.parent / MANIFEST_NAME
    if manifest.is_file():
        verify(model, manifest, public_key=public_key)
    digest = file_digest(model)[1]
    root = Path(to)
    models = root / MODELS
    try:
        models.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HappysadError(f"{root}: cannot create the install folder ({exc.strerror or exc})") from None
    name = f"{digest[:16]}-{model.name}"
    dest = models / name
    if signature_path(model).is_file():
        copy_file(signature_path(model), signature_path(dest))
    copy_file(model, dest)
    fsync_dir(models)
    if file_digest(dest)[1] != digest:
        raise HappysadError(f"{dest}: the copy differs from {model}; check the disk, then install again")
    signature = signature_status(dest, public_key)
    Classifier(dest)  # loads, its metadata parses, and the self-test inference runs
    current = _target(root / CURRENT)
    if current == f"{MODELS}/{name}":
        return {"current": name, "previous": _target(root / PREVIOUS), "sha256": digest, "signature": signature}
    if current is not None:
        _point(root / PREVIOUS, current)
    _point(root / CURRENT, f"{MODELS}/{name}")
    return {"current": name, "previous": current, "sha256": digest, "signature": signature}


def rollback(to: str | os.PathLike) -> dict:
    """Make ``DIR/previous`` current again (and the current one previous).

    Returns:
        {"current", "previous"}: the links' targets after the swap.

    Raises:
        HappysadError: there is nothing to go back to, or its file is gone.
    """
    root = Path(to)
    current, previous = _target(root / CURRENT), _target(root / PREVIOUS)
    if previous is None:
        raise HappysadError(f"{root}: no previous model to go back to (one install so far, or none)")
    if not (root / previous).is_file():
        raise HappysadError(f"{root / previous}: the previous model file is gone; install a model instead")
    _point(root / CURRENT, previous)
    if current is not None:
        _point(root / PREVIOUS, current)
    return {"current": previous, "previous": current}
