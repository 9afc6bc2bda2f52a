"""Each benchmark result against the others: the reference its accuracy is
compared with (:func:`reference_for`), the accuracy drop and agreement
against it, and the speed-up and memory ratios against the Keras model
(:func:`add_comparisons`).
"""

from __future__ import annotations

import numpy as np


def reference_for(result: dict, results: list) -> dict:
    """The model a result's accuracy is compared with: for a row with
    test-time augmentation, the same file without it (its drop is minus
    the augmentation's gain); else the float32 file of the same format
    family (TFLite or ONNX) when one was measured, else the Keras model,
    else the first model given."""
    if result.get("tta", "none") != "none":
        for r in results:
            if r["model"] == result["model"] and r.get("tta", "none") == "none":
                return r
    results = [r for r in results if r.get("tta", "none") == "none"] or results
    family = result["format"].split("-")[0]
    for want in (f"{family}-float32", "keras-float32"):
        for r in results:
            if r["format"] == want:
                return r
    return results[0]


def add_comparisons(results: list[dict]) -> None:
    """Add reference, drop_pp, agreement, and the ratios against Keras, in place.

    drop_pp: reference accuracy minus this accuracy, in percentage points.
    agreement: share (0..1) of images given the reference's label.
    speedup: Keras p50 / this p50 (x); memory_ratio: Keras cold-start peak
    RSS / this one (x); both None without a Keras row.
    """
    keras_row = next((r for r in results if r["format"] == "keras-float32"), None)
    for r in results:
        ref = reference_for(r, results)
        r["reference"] = ref["model"]
        r["drop_pp"] = (ref["accuracy"] - r["accuracy"]) * 100
        r["agreement"] = float(np.mean(np.array(r["predictions"]) == np.array(ref["predictions"])))
        r["speedup"] = r["memory_ratio"] = None
        if keras_row is not None:
            r["speedup"] = keras_row["latency_ms"]["p50"] / r["latency_ms"]["p50"]
            if keras_row["cold_start"] and r["cold_start"]:
                r["memory_ratio"] = keras_row["cold_start"]["peak_rss_mb"] / r["cold_start"]["peak_rss_mb"]
