"""How long and in what precision a run trains: the learning-rate schedule
(warm-up + cosine) whose length a time budget can set, and bfloat16 mixed
precision on processors with native bfloat16 arithmetic.

A fixed epoch count is the wrong unit for "train as well as 15 minutes
allow": the same count takes 7 minutes on one 2-core machine and 15 on
another. With ``--time-budget`` the run measures its own epochs and fits
its cosine schedule to the epochs that fit the budget (at most
``--epochs``), re-estimated after every epoch, so the learning rate still
anneals to zero at the last epoch actually run.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from happysad.edge.console import log as _log

#: ``--precision`` choices. ``auto``: bfloat16 where :func:`native_bfloat16`.
PRECISIONS = ("auto", "float32", "bfloat16")

#: /proc/cpuinfo flags of x86 processors with bfloat16 dot products
#: (AVX512_BF16: Cooper Lake, Sapphire Rapids, AMD Zen 4 and later; AMX-BF16:
#: Sapphire Rapids), as Linux names them (arch/x86/include/asm/cpufeatures.h).
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def native_bfloat16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Whether this processor does bfloat16 arithmetic natively (one of
    :data:`BF16_FLAGS` among the flags of ``cpuinfo``; False where the file
    cannot be read, as on other systems). Elsewhere bfloat16 is emulated and
    slower than float32, so ``--precision auto`` keeps float32 there."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return any(flag in line.split() for flag in BF16_FLAGS)
    return False


#: ``--precision auto`` trains in bfloat16 from this many training images
#: on: a run on fewer takes minutes in float32 anyway, and on tens of
#: images bfloat16's rounding costs more than its speed brings (a two-way
#: test training of 6 epochs on 100 faces fell to chance).
BF16_MIN_IMAGES = 5000


def resolve_precision(
    precision: str, plain: bool = True, cpuinfo: str | Path = "/proc/cpuinfo", n_images: int = BF16_MIN_IMAGES
) -> str:
    """``"float32"`` or ``"bfloat16"`` for a ``--precision`` choice: ``auto`` is
    bfloat16 only for a ``plain`` run (one device, no teachers) of at least
    :data:`BF16_MIN_IMAGES` training images on a processor that has it
    natively (:func:`native_bfloat16`)."""
    if precision == "auto":
        big = n_images >= BF16_MIN_IMAGES
        return "bfloat16" if plain and big and native_bfloat16(cpuinfo) else "float32"
    return precision


def schedule(keras, peak: float, steps_per_epoch: int, epochs: int):
    """The learning rate: linear warm-up over the first 5% of ``epochs *
    steps_per_epoch`` steps, one epoch at most, to ``peak``, then cosine decay to 0 at the end of the
    last epoch (Loshchilov & Hutter 2017, "SGDR", without restarts;
    the warm-up after Goyal et al. 2017). Its length is a variable
    (``total_steps``) that :func:`budget_callback` may shorten.

    Returns:
        a ``keras.optimizers.schedules.LearningRateSchedule``.
    """
    import tensorflow as tf

    steps = max(1, epochs * steps_per_epoch)
    # At most one epoch: a budget may leave far fewer epochs than ``epochs``.
    warmup = max(1, min(steps // 20, steps_per_epoch))

    class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
        def __init__(self):
            self.total_steps = tf.Variable(float(steps), trainable=False, dtype=tf.float32)
            self.steps_per_epoch = steps_per_epoch

        def __call__(self, step):
            step = tf.cast(step, tf.float32)
            rising = peak * step / warmup
            done = tf.clip_by_value((step - warmup) / tf.maximum(1.0, self.total_steps - warmup), 0.0, 1.0)
            falling = 0.5 * peak * (1.0 + tf.cos(math.pi * done))
            return tf.where(step < warmup, rising, falling)

        def get_config(self):
            return {"peak": peak, "steps_per_epoch": steps_per_epoch, "epochs": epochs}

    return WarmupCosine()


def epochs_within(budget_s: float, elapsed_s: float, epoch_times: list[float], done: int, most: int) -> int:
    """How many epochs a run should have in all, given its budget.

    The epochs left are the time left divided by the median of the epochs
    after the first (the first also decodes and caches every image; it
    stands in alone only until a second has run). At least ``done``, at
    most ``most``.

    Args:
        budget_s: the training's time budget, s. elapsed_s: time so far, s.
        epoch_times: each finished epoch's duration, s (validation included).
        done: epochs finished. most: ``--epochs``.
    """
    later = sorted(epoch_times[1:] or epoch_times)
    typical = later[len(later) // 2]
    left = int((budget_s - elapsed_s) // max(typical, 1e-6))
    return max(done, min(most, done + left))


def budget_callback(keras, lr_schedule, budget_s: float, most: int, record: dict):
    """A Keras callback that, after every epoch, sets the schedule's length
    to the epochs that fit ``budget_s`` (:func:`epochs_within`) and stops
    the fit after the last of them. ``record`` receives ``planned_epochs``
    (the last estimate) and ``epoch_seconds``."""

    class Budget(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.start = self.last = time.perf_counter()
            record["epoch_seconds"] = []

        def on_epoch_end(self, epoch, logs=None):
            now = time.perf_counter()
            record["epoch_seconds"].append(round(now - self.last, 2))
            self.last = now
            done = epoch + 1
            planned = epochs_within(budget_s, now - self.start, record["epoch_seconds"], done, most)
            if planned != record.get("planned_epochs"):
                _log(f"time budget {budget_s / 60:.1f} min: {planned} epochs in all")
            record["planned_epochs"] = planned
            lr_schedule.total_steps.assign(float(planned * lr_schedule.steps_per_epoch))
            if done >= planned:
                self.model.stop_training = True

    return Budget()


def float32_copy(keras, model, build):
    """The trained ``model`` rebuilt in float32 (``build()`` under the float32
    policy) with its weights: what a bfloat16 mixed-precision run saves and
    exports, so that every file downstream is an ordinary float32 model
    (mixed precision keeps the variables in float32 already, so nothing is
    rounded)."""
    keras.mixed_precision.set_global_policy("float32")
    copy = build()
    copy.set_weights(model.get_weights())
    return copy
