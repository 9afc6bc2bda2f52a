"""Synthetic happy/sad faces drawn by the tests themselves (no real photos)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def draw_face(rng: np.random.Generator, happy: bool | str, size: int = 48) -> np.ndarray:
    """A gray cartoon face: smiling mouth for happy (True or "happy"),
    frowning for sad (False or "sad"), a straight one for "neutral".

    Returns:
        uint8 (size, size) image with random position, brightness and noise.
    """
    # A background gradient in a random direction makes every image's low
    # frequencies (what perceptual hashes look at) differ, as real photos do.
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:size, 0:size] / size - 0.5
    ramp = (np.cos(angle) * xx + np.sin(angle) * yy) * rng.uniform(60, 140)
    img = np.clip(rng.integers(40, 100) + ramp, 0, 255).astype(np.uint8)
    c = size // 2 + rng.integers(-2, 3, size=2)
    r = int(size * 0.4) + int(rng.integers(-2, 3))
    cv2.circle(img, (int(c[0]), int(c[1])), r, int(rng.integers(150, 230)), -1)
    eye_y = int(c[1] - r * 0.3)
    for dx in (-0.4, 0.4):
        cv2.circle(img, (int(c[0] + dx * r), eye_y), max(1, r // 8), 20, -1)
    mouth_w = int(r * 0.55)
    if happy == "neutral":
        y = int(c[1] + r * 0.45)
        cv2.line(img, (int(c[0]) - mouth_w, y), (int(c[0]) + mouth_w, y), 20, 2)
    elif happy in (True, "happy"):  # arc below its centre: a smile
        cv2.ellipse(img, (int(c[0]), int(c[1] + r * 0.2)), (mouth_w, int(r * 0.3)), 0, 20, 160, 20, 2)
    else:  # arc above its centre: a frown
        cv2.ellipse(img, (int(c[0]), int(c[1] + r * 0.6)), (mouth_w, int(r * 0.3)), 0, 200, 340, 20, 2)
    noise = rng.normal(0, 6, img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def make_dataset(root: Path, per_class: int = 60, seed: int = 0, labels=("happy", "sad")) -> Path:
    """Write ``root/<label>/*.png`` for each of ``labels`` (happy, sad,
    neutral); returns root."""
    rng = np.random.default_rng(seed)
    for label in labels:
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            cv2.imwrite(str(folder / f"{label}_{i:03d}.png"), draw_face(rng, label))
    return root
