"""Training figures, written as PNG files (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from happysad.edge.fileio import atomic_path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    _pyplot().close(fig)


def curves(history: dict, path: Path) -> None:
    """Loss and accuracy per epoch, train vs validation, side by side."""
    plt = _pyplot()
    epochs = np.arange(1, len(history["loss"]) + 1)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, title in ((axes[0], "loss", "loss (binary cross-entropy)"), (axes[1], "accuracy", "accuracy")):
        ax.plot(epochs, history[key], label="train")
        if f"val_{key}" in history:
            ax.plot(epochs, history[f"val_{key}"], label="validation")
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    _save(fig, path)


def confusion_matrix(cm: np.ndarray, labels, path: Path) -> None:
    """The test split's confusion matrix: counts and row percentages."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    ax.imshow(cm, cmap="Blues")
    rows = cm.sum(axis=1, keepdims=True).clip(min=1)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(
                j,
                i,
                f"{cm[i, j]}\n{cm[i, j] / rows[i, 0]:.1%}",
                ha="center",
                va="center",
                color="white" if cm[i, j] > cm.max() / 2 else "black",
            )
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("test split")
    fig.tight_layout()
    _save(fig, path)


def samples(images, true_labels, predicted, path: Path, cols: int = 8) -> None:
    """A grid of test images titled "true / predicted"; wrong ones in red with a red frame.

    Args:
        images: uint8 (H, W, C) arrays from :func:`edge.runtime.preprocess`.
    """
    plt = _pyplot()
    n = len(images)
    rows = max(1, int(np.ceil(n / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.3, rows * 1.55), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, img, t, p in zip(axes.ravel(), images, true_labels, predicted):
        wrong = t != p
        ax.imshow(img[:, :, 0] if img.shape[2] == 1 else img, cmap="gray", vmin=0, vmax=255)
        ax.set_title(f"{t} / {p}", fontsize=7, color="red" if wrong else "black")
        if wrong:
            ax.axis("on")
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_color("red")
                spine.set_linewidth(2)
    fig.suptitle("test images: true / predicted (wrong in red)", fontsize=9)
    fig.tight_layout()
    _save(fig, path)


def reliability(points: list, path: Path) -> None:
    """A reliability diagram against crowd votes: per confidence bin, the
    mean vote share of the class given against the mean confidence (from
    :func:`edge.metrics.vote_metrics`'s ``reliability``); the diagonal is a
    model whose confidence is the share of people who agree with it."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="scores = vote shares")
    if points:
        x = [p["confidence"] for p in points]
        y = [p["vote_share"] for p in points]
        ax.plot(x, y, marker="o", label="model")
        for p in points:
            ax.annotate(
                str(p["n"]), (p["confidence"], p["vote_share"]), fontsize=7, xytext=(3, -9), textcoords="offset points"
            )
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1),
        xlabel="confidence (top score)",
        ylabel="share of votes for that class",
        title="reliability against FER+ votes (test split)",
    )
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    _save(fig, path)
