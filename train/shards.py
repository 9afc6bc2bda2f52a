"""The multi-worker run's input and steps: each worker's shard of every
global batch, the distributed training step (``strategy.run`` of a
``GradientTape`` step, since Keras 3's ``model.fit`` fails under
``MultiWorkerMirroredStrategy``: keras-team/keras#20585) and the validation
pass, whose sums are reduced over the workers.

Sharding is by data, per global batch: epoch ``e`` shuffles every training
image with a seed of (``--seed``, ``e``), cuts the order into batches of
``--batch-size`` (global: across all workers), and worker ``i`` of ``W``
trains on positions ``i, i + W, ...`` of each. An epoch's order and each
image's camera distortions (keyed on its place in the whole run) depend on
the seed and the epoch only, so a run resumed from a checkpoint sees what
an uninterrupted one saw, and so does a run on another number of workers.
"""

from __future__ import annotations

import numpy as np

from happysad.edge.errors import UsageError

#: Validation images per batch, on each worker.
VAL_BATCH = 256


def steps_per_epoch(n: int, batch: int, workers: int) -> int:
    """Global batches per epoch: a last batch smaller than the number of
    workers (some worker would get no image of it) is left out of that
    epoch; the shuffle makes those few images others the next epoch.

    Raises:
        UsageError: ``batch`` is smaller than ``workers``, or no batch is left.
    """
    if batch < workers:
        raise UsageError(f"--batch-size {batch} is smaller than the {workers} workers; give at least {workers}")
    steps = n // batch + (1 if n % batch >= workers else 0)
    if steps < 1:
        raise UsageError(f"{n} training images make no batch for {workers} workers; give more images")
    return steps


def epoch_seed(seed: int, epoch: int) -> int:
    """The shuffle seed of ``epoch`` (0-based) of a run seeded ``seed``."""
    return int(np.random.SeedSequence([seed & 0xFFFFFFFF, epoch]).generate_state(1)[0])


def train_shard(tf, cached, n: int, batch: int, seed: int, epoch: int, rank: int, workers: int, distort=None):
    """Worker ``rank``'s batches of ``epoch`` (:mod:`train.shards`).

    Args:
        cached: the training images, uint8, with labels, in file order
            (:func:`train.pipeline.decoded_dataset`). n: their number.
        batch: the global batch size. distort: the camera distortions
            (:func:`train.models.camera_distortions`) or None.

    Returns:
        a dataset of (float32 images 0..255, labels): this worker's part of
        each of the epoch's :func:`steps_per_epoch` batches.
    """
    ds = cached.shuffle(min(n, 20000), seed=epoch_seed(seed, epoch), reshuffle_each_iteration=False)
    ds = tf.data.Dataset.zip(tf.data.Dataset.range(n), ds)
    ds = ds.filter(lambda p, xy: (p % batch) % workers == rank)
    if distort is not None:
        ds = ds.map(lambda p, xy: distort(p + epoch * n, *xy))
    else:
        ds = ds.map(lambda p, xy: (tf.cast(xy[0], tf.float32), xy[1]))
    own = len(range(rank, batch, workers))
    return ds.batch(own).take(steps_per_epoch(n, batch, workers)).prefetch(tf.data.AUTOTUNE)


def val_shard(tf, cached, rank: int, workers: int):
    """Worker ``rank``'s validation images (every ``workers``-th, from
    ``rank``), float32, in batches of :data:`VAL_BATCH`."""
    ds = cached.enumerate().filter(lambda p, xy: p % workers == rank)
    return ds.map(lambda p, xy: (tf.cast(xy[0], tf.float32), xy[1])).batch(VAL_BATCH)


def loss_of(keras, n_classes: int, soft: bool):
    """The per-image loss ``fit`` would use (binary for two classes, sparse
    categorical for more, categorical on vote shares), and the per-image
    correctness of Keras' "accuracy" for it: f(y, p) -> (loss, correct)."""
    from keras import ops

    if soft:
        fn = keras.losses.CategoricalCrossentropy(reduction=None)
        return lambda y, p: (fn(y, p), ops.cast(ops.argmax(y, -1) == ops.argmax(p, -1), "float32"))
    if n_classes == 2:
        fn = keras.losses.BinaryCrossentropy(reduction=None)
        return lambda y, p: (fn(y[:, None], p), ops.cast(ops.cast(p[:, 0] > 0.5, "float32") == y, "float32"))
    fn = keras.losses.SparseCategoricalCrossentropy(reduction=None)
    return lambda y, p: (fn(y, p), ops.cast(ops.cast(ops.argmax(p, -1), "float32") == y, "float32"))


def train_step(tf, strategy, trainer, optimizer, loss_fn, class_weights: np.ndarray, soft: bool):
    """The distributed step: a ``tf.function`` of a worker's iterator that
    trains one global batch and returns float64 [weighted loss sum,
    correct, images] summed over the workers.

    The loss is ``tf.nn.compute_average_loss`` over the global batch (its
    size all-reduced, so a short last batch averages right); the Keras
    optimizer sums the workers' gradients. Class weights multiply each
    image's loss, as ``fit(class_weight=...)`` does.
    """
    weights = tf.constant(class_weights, tf.float32)
    variables = trainer.trainable_variables

    def step(x, y):
        ctx = tf.distribute.get_replica_context()
        n = ctx.all_reduce("sum", tf.cast(tf.shape(x)[0], tf.float32))
        cls = tf.argmax(y, -1) if soft else tf.cast(y, tf.int64)
        with tf.GradientTape() as tape:
            loss, correct = loss_fn(y, trainer(x, training=True))
            weighted = loss * tf.gather(weights, cls)
            total = tf.nn.compute_average_loss(weighted, global_batch_size=tf.cast(n, tf.int64))
        optimizer.apply_gradients(zip(tape.gradient(total, variables), variables))
        return tf.cast(
            tf.stack([tf.reduce_sum(weighted), tf.reduce_sum(correct), tf.cast(tf.shape(x)[0], tf.float32)]), tf.float64
        )

    @tf.function
    def run(iterator):
        x, y = next(iterator)
        return strategy.reduce("sum", strategy.run(step, args=(x, y)), axis=None)

    return run


def validator(tf, strategy, model, loss_fn, n_own: int | None):
    """The validation pass, traced once: f(this worker's batches) -> the
    figures over every worker's shard: ``val_loss``, ``val_accuracy`` and,
    with ``n_own`` (auxiliary classes: the shipped model's first classes),
    ``val_shipped_loss`` and ``val_shipped_accuracy``
    (:func:`train.pipeline.shipped_loss_callback`'s)."""

    @tf.function
    def sums(x, y):
        p = model(x, training=False)
        loss, correct = loss_fn(y, p)
        out = [tf.reduce_sum(loss), tf.reduce_sum(correct), tf.cast(tf.shape(x)[0], tf.float32)]
        if n_own:
            q = p[:, :n_own] / tf.maximum(tf.reduce_sum(p[:, :n_own], axis=1, keepdims=True), 1e-12)
            q = tf.clip_by_value(q, 1e-7, 1.0)
            yi = tf.cast(y, tf.int64)
            out.append(-tf.reduce_sum(tf.math.log(tf.gather(q, yi, batch_dims=1))))
            out.append(tf.reduce_sum(tf.cast(tf.argmax(q, 1) == yi, tf.float32)))
        return tf.cast(tf.stack(out), tf.float64)

    @tf.function(autograph=False)
    def reduce(local):
        return strategy.reduce("sum", strategy.run(tf.identity, args=(local,)), axis=None)

    def run(batches) -> dict:
        local = np.zeros(5 if n_own else 3)
        for x, y in batches:
            local += sums(x, y).numpy()
        total = reduce(tf.constant(local)).numpy()
        n = max(total[2], 1.0)
        logs = {"val_loss": total[0] / n, "val_accuracy": total[1] / n}
        if n_own:
            logs.update(val_shipped_loss=total[3] / n, val_shipped_accuracy=total[4] / n)
        return logs

    return run
