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

import contextlib
import logging
import os
import re
from pathlib import Path

from happysad.edge.errors import HappysadError
from happysad.edge.fileio import copy_file, fsync_dir
from happysad.edge.reading import check_regular
from happysad.edge.runtime.signing import SIG_SUFFIX, signature_path

_log = logging.getLogger(__name__)

CURRENT = "current"
PREVIOUS = "previous"
MODELS = "models"
#: Versions ``install`` keeps in ``DIR/models/`` besides the files ``current``
#: and ``previous`` name (``install --keep``): room to roll back further by
#: hand, bounded so that a model a week never fills the card.
KEEP = 3
#: The name of an installed version: a sha256 prefix, a dash, the file's name.
_VERSION = re.compile(r"[0-9a-f]{16}-.+")


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


def install(model: str | os.PathLike, to: str | os.PathLike, manifest=None, public_key=None, keep: int = KEEP) -> dict:
    """Verify ``model`` and make it ``DIR/current``; the current one becomes ``DIR/previous``.

    The copy is verified where it lies (:func:`edge.device.verify.verify` with a
    manifest: size and sha256; the signature when a key is configured; the
    metadata; a self-test inference) before any link moves. A copy that
    fails is removed with its ``.sig``. Once the links are switched, the
    oldest versions beyond ``keep`` besides ``current`` and ``previous``
    are removed (:func:`prune`).

    Returns:
        {"current": versioned file name, "previous": the one before or None,
        "sha256", "signature" (as :func:`edge.device.verify.signature_status` says),
        "removed": the old versions removed}.

    Raises:
        UsageError: the model or manifest does not exist.
        HappysadError: the file fails a check (nothing changes but its copy
            removed), or ``to`` cannot be written.
    """
    from happysad.edge.device.verify import MANIFEST_NAME, file_digest, verify

    model = Path(model)
    check_regular(model, "model")  # a FIFO, device or folder: one line, never an open that waits
    manifest = Path(manifest) if manifest else model.parent / MANIFEST_NAME
    if os.path.lexists(manifest):  # whatever is there is checked: a FIFO or a dangling link is refused
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
    # The same bytes installed already (a link names them): nothing is copied
    # over them, not even a signature, until the source's own passes.
    already = name in _linked(root)
    try:
        signature = _copy_and_check(model, dest, digest, public_key, already)
    except BaseException:
        if not already:
            _remove_refused(root, dest)
        raise
    previous = current = _target(root / CURRENT)
    if current == f"{MODELS}/{name}":  # installed already: the links stay
        previous = _target(root / PREVIOUS)
    else:
        if current is not None:
            _point(root / PREVIOUS, current)
        _point(root / CURRENT, f"{MODELS}/{name}")
    removed = prune(root, keep)  # only now: a kill before this left `current` whole, old or new
    return {"current": name, "previous": previous, "sha256": digest, "signature": signature, "removed": removed}


def _copy_and_check(model: Path, dest: Path, digest: str, public_key, already: bool) -> str:
    """Copy ``model`` (and its ``.sig``) to ``dest`` unless ``already``
    installed, then check the copy: its sha256, the signature (the source's
    when ``already``), that it loads and its self-test inference runs.

    Returns:
        the signature status (:func:`edge.device.verify.signature_status`).

    Raises:
        HappysadError: a check fails.
    """
    from happysad.edge.classifier import Classifier
    from happysad.edge.device.verify import file_digest, signature_status

    if not already:
        if os.path.lexists(signature_path(model)) and check_regular(signature_path(model), "signature") >= 0:
            copy_file(signature_path(model), signature_path(dest), "signature")
        copy_file(model, dest, "model")
        fsync_dir(dest.parent)
    if file_digest(dest)[1] != digest:
        raise HappysadError(f"{dest}: the copy differs from {model}; check the disk, then install again")
    signature = signature_status(model if already else dest, public_key)
    Classifier(dest)  # loads, its metadata parses, and the self-test inference runs
    return signature


def _linked(root: Path) -> set[str]:
    """The file names in ``DIR/models/`` that ``current`` and ``previous`` point at."""
    return {Path(t).name for t in (_target(root / CURRENT), _target(root / PREVIOUS)) if t}


def _remove_refused(root: Path, dest: Path) -> None:
    """Remove a copy ``install`` refused (and its signature), unless a link
    names it (the file installed already, whose copy was the same bytes)."""
    if dest.name in _linked(root):
        return
    for path in (signature_path(dest), dest):  # the signature first: a kill between leaves a plain version
        with contextlib.suppress(OSError):
            path.unlink()
    fsync_dir(dest.parent)


def prune(root: str | os.PathLike, keep: int = KEEP) -> list[str]:
    """Remove the oldest versions in ``DIR/models/`` (by modification time,
    that is by install) beyond the ``keep`` newest, besides the files that
    ``current`` and ``previous`` point at (never removed); each with its
    ``.sig``, the signature first. Run after the links are switched.

    Returns:
        the names removed, oldest last; one that cannot be removed
        (permissions) is a warning on stderr, not an error: the install
        itself is done.
    """
    models = Path(root) / MODELS
    linked = _linked(Path(root))
    names = os.listdir(models) if models.is_dir() else []
    versions = [models / n for n in names if _VERSION.fullmatch(n) and not n.endswith(SIG_SUFFIX) and n not in linked]
    versions.sort(key=lambda p: (p.lstat().st_mtime_ns, p.name), reverse=True)
    removed = []
    for path in versions[max(0, keep) :]:
        try:
            signature_path(path).unlink(missing_ok=True)
            path.unlink(missing_ok=True)
        except OSError as exc:
            _log.warning("warning: %s: cannot remove this old version (%s)", path, exc.strerror or exc)
            continue
        removed.append(path.name)
    if removed:
        fsync_dir(models)
    return removed


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
