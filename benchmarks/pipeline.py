"""The whole photo path, per face detector: faces found, accuracy, time.

For a folder of labelled photos of any size (one sub-folder per class), each
detector in turn runs the path ``happysad-edge classify`` runs
(:meth:`edge.Classifier.classify_photo`): detect, crop the largest face
(:func:`edge.faces.crop.face_crop`), classify; with no face, the whole photo.
Per detector it reports the share of photos with a face found, the accuracy
where one was found, the accuracy over all photos (whole-photo fallback),
the accuracy when photos without a face abstain (``--no-face skip``: the
share answered and the accuracy on those), and detection, crop and
classification milliseconds per photo (p50, p90). Photos are decoded once;
every detector sees the same pixels.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from happysad.edge import Classifier, load_image
from happysad.edge.dataset import labelled_images
from happysad.edge.errors import HappysadError
from happysad.edge.faces import DETECTORS, make_detector


def _ms(values: list) -> dict:
    a = np.asarray(values, dtype=np.float64)
    return (
        {"p50": round(float(np.median(a)), 3), "p90": round(float(np.percentile(a, 90)), 3)}
        if len(a)
        else {"p50": None, "p90": None}
    )


def _classify_face(clf: Classifier, image: np.ndarray, face, ms: dict):
    """Crop ``face`` from ``image`` and classify it (:class:`edge.Prediction`),
    appending the crop and classification times (ms) to ``ms["crop"]`` and
    ``ms["classify"]``."""
    t1 = time.perf_counter()
    region = clf.crop_face(image, face)
    t2 = time.perf_counter()
    pred = clf.classify(region, face=face)
    ms["crop"].append((t2 - t1) * 1e3)
    ms["classify"].append((time.perf_counter() - t2) * 1e3)
    return pred


def evaluate_detector(clf: Classifier, images: list, y: np.ndarray, detector) -> dict:
    """One detector's figures over decoded photos.

    Args:
        clf: the model; its metadata's framing (``face_margin``, ``face_shift``) is used.
        images: uint8 BGR or gray arrays, any size.
        y: int (N,) true class indices into ``clf.labels``.
        detector: anything with ``detect(image) -> list[Face]``.

    Returns:
        dict: ``photos``, ``found`` (photos with >= 1 face), ``found_share``
        (0..1), ``accuracy_found`` (on those, 0..1), ``accuracy_all`` (every
        photo, whole-photo fallback), ``answered_skip`` and
        ``accuracy_skip`` (``--no-face skip``: the share given a label and
        the accuracy on them: the same as ``accuracy_found``),
        ``forced_found`` (where found, the class with the highest score
        among the classes the photos hold: happy vs sad for a
        happy/sad/neutral model, 0..1), ``other_found`` (share of found
        faces given a class the photos do not hold, e.g. neutral), per class
        ``found_by_class``, and ``ms`` (``detect``, ``crop``, ``classify``:
        p50 and p90 per photo; crop and classify over photos with a face).
    """
    found, right_face, right_all, forced_face, elsewhere = 0, 0, 0, 0, 0
    # The classes the photos hold (happy and sad); a model with more (neutral)
    # is also scored "forced", comparing only these classes' scores.
    present = [clf.labels[i] for i in sorted(set(np.asarray(y).tolist()))]
    by_class = np.zeros(len(clf.labels), np.int64)
    ms = {"detect": [], "crop": [], "classify": []}
    for image, label in zip(images, y):
        t0 = time.perf_counter()
        faces = detector.detect(image)
        ms["detect"].append((time.perf_counter() - t0) * 1e3)
        if faces:
            pred = _classify_face(clf, image, faces[0], ms)
            found += 1
            by_class[label] += 1
            ok = pred.label == clf.labels[label]  # never so for "uncertain"
            right_face += ok
            forced_face += max(present, key=lambda lab: pred.scores[lab]) == clf.labels[label]
            elsewhere += pred.label not in present
        else:
            ok = clf.classify(image).label == clf.labels[label]
        right_all += ok
    n = len(images)
    return {
        "photos": n,
        "found": found,
        "found_share": round(found / n, 4),
        "found_by_class": {name: int(c) for name, c in zip(clf.labels, by_class)},
        "accuracy_found": round(right_face / found, 4) if found else None,
        "forced_found": round(forced_face / found, 4) if found else None,
        "other_found": round(elsewhere / found, 4) if found else None,
        "accuracy_all": round(right_all / n, 4),
        "answered_skip": round(found / n, 4),
        "accuracy_skip": round(right_face / found, 4) if found else None,
        "ms": {stage: _ms(values) for stage, values in ms.items()},
    }


def run_pipeline(model: str, data_dir: str, detectors=DETECTORS, threads: int | None = None) -> dict:
    """Every detector of ``detectors`` over the photos of ``data_dir``.

    Returns:
        {"model", "data", "labels", "detectors": {name: figures of
        :func:`evaluate_detector`}}.

    Raises:
        HappysadError: the model or the folder is unusable, a photo cannot
            be read, or a detector cannot be built.
    """
    import cv2

    cv2.setNumThreads(1)  # one thread, as on a busy device and in the detectors' figures in docs/photos.md
    clf = Classifier(model, threads)
    labels, items = labelled_images(data_dir, clf.labels)
    if not items:
        raise HappysadError(f"{data_dir}: no images in its class folders {', '.join(labels)}")
    print(f"decoding {len(items)} photos", file=sys.stderr, flush=True)
    images = [load_image(path) for path, _ in items]
    y = np.array([label for _, label in items], np.int64)
    out = {"model": str(model), "data": str(data_dir), "labels": list(labels), "detectors": {}}
    for name in detectors:
        print(f"detector {name}", file=sys.stderr, flush=True)
        det = make_detector(name, threads=threads, fallback=False)
        evaluate_detector(clf, images[:3], y[:3], det)  # warm-up: first-call allocations
        out["detectors"][name] = evaluate_detector(clf, images, y, det)
    return out


def _pct(x) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def format_pipeline(report: dict) -> str:
    """The per-detector table, Markdown."""
    rows = [
        "| detector | faces found | accuracy where found | forced, where found | called another class "
        "| accuracy, all photos | --no-face skip: answered / accuracy | detect ms p50 / p90 | crop ms p50 "
        "| classify ms p50 |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, d in report["detectors"].items():
        acc_found = f"{d['accuracy_found']:.1%}" if d["accuracy_found"] is not None else "n/a"
        ms = d["ms"]
        rows.append(
            f"| {name} | {d['found']} of {d['photos']} ({d['found_share']:.0%}) | {acc_found} | "
            f"{_pct(d.get('forced_found'))} | {_pct(d.get('other_found'))} | "
            f"{d['accuracy_all']:.1%} | {d['answered_skip']:.0%} / {acc_found} | "
            f"{ms['detect']['p50']:.1f} / {ms['detect']['p90']:.1f} | "
            f"{(ms['crop']['p50'] or 0):.2f} | {(ms['classify']['p50'] or 0):.2f} |"
        )
    return "\n".join(rows)
