"""A model file replaced under a running camera loop, verified and switched to."""

from __future__ import annotations

import logging
import time

import numpy as np

from happysad.edge.classifier import Classifier, stat_stamp
from happysad.edge.errors import HappysadError
from happysad.edge.runtime.preprocess import channels_of

_log = logging.getLogger(__name__)

#: How often the model file is checked for a replacement, seconds.
RELOAD_CHECK_S = 1.0


class ModelWatcher:
    """Switch to a new model file when the one in use is replaced.

    Shipping a model means copying it in under a temporary name and renaming
    it over the old one. The watcher notices the new file (inode, size or
    mtime changed), loads it, checks that it classifies, and only then hands
    it over; a file that fails is refused with a message and the old model
    keeps running. A model being copied in place (no rename) is picked up
    once its size has stopped changing.
    """

    def __init__(self, classifier: Classifier, threads=None, backend=None):
        self.classifier = classifier
        self._threads, self._backend = threads, backend
        # The file as it was when the classifier loaded it, so a replacement
        # made before the loop started is noticed too.
        self._stamp = classifier.file_stamp
        self._next = time.monotonic() + RELOAD_CHECK_S

    def poll(self) -> Classifier | None:
        """Call between frames; returns the new classifier when it switched, else None."""
        now = time.monotonic()
        if now < self._next:
            return None
        self._next = now + RELOAD_CHECK_S
        stamp = stat_stamp(self.classifier.path)
        if stamp is None or stamp == self._stamp:
            return None
        self._stamp = stamp
        old = self.classifier
        try:
            new = Classifier(
                old.path,
                self._threads,
                self._backend,
                detector=old._detector,
                min_confidence=old.min_confidence,
                tta=old.tta,
                public_key=old.public_key,
            )
            h, w = new.metadata.image_size
            channels = channels_of(new.metadata.color)
            # It must run, not only load: the edge cases of the input range
            # (the Classifier ran a mid-grey self-test already).
            for value in (0, 255):
                if not np.all(np.isfinite(new.scores(np.full((h, w, channels), value, np.uint8)))):
                    raise HappysadError(f"{old.path}: the new model gives a non-finite score")
        except Exception as exc:  # whatever a bad file raises, the running model stays
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            _log.warning("refused the new model file: %s; still running the previous one", reason)
            return None
        self.classifier = new
        _log.warning(
            "switched to the new model file %s (%s, exported %s)",
            old.path,
            new.metadata.extra.get("format", "?"),
            new.metadata.extra.get("exported_at", "?"),
        )
        return new
