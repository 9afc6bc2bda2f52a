"""``happysad-train --strategy multi-worker``: one run trained by several
processes (``tf.distribute.MultiWorkerMirroredStrategy``, the cluster in
``TF_CONFIG``), surviving a lost worker.

Every worker scans and splits the data itself (the same split: checked
against the chief's), trains its shard of each global batch
(:mod:`train.shards`) and saves a checkpoint after every epoch
(``tf.train.Checkpoint`` + ``CheckpointManager``: the chief into
``RUN_DIR/checkpoint``, the others into their temporary folders, as
TensorFlow's multi-worker guide does). A worker started again (after a
crash, a SIGKILL, a lost machine) resumes with the others from the last
completed epoch: the chief's checkpoint, sent to every worker. Only the
chief writes the run folder, as a single-worker run does; the checkpoint is
removed once the run folder is whole.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from happysad.edge.console import log as _log
from happysad.edge.errors import UsageError
from happysad.edge.runtime.preprocess import channels_of

from . import shards
from .distributed import (
    Cluster,
    check_same_split,
    chief_values,
    lost_worker,
    mean_over_workers,
    read_cluster,
    split_digest,
    start_strategy,
    worker_folder,
)
from .options import TrainOptions
from .pipeline import balanced_class_weights, decoded_dataset, weights_sha256

#: For the fault-injection test: a worker whose environment sets it to N
#: waits after checkpointing epoch N (1-based) until it is killed (at most 10 min).
PAUSE_ENV = "HAPPYSAD_PAUSE_AFTER_EPOCH"


def train_multi_worker(opts: TrainOptions, prepare, finish_run) -> dict:
    """:func:`train.trainer.train` across the workers of ``TF_CONFIG``;
    ``prepare`` and ``finish_run`` are the trainer's steps before and after
    the fit (:func:`train.trainer._prepare`, :func:`train.trainer.finish_run`).

    Returns:
        the chief's metrics (``metrics.json``); on another worker, {}.

    Raises:
        UsageError: a bad ``TF_CONFIG`` (:func:`train.distributed.parse_tf_config`),
            its port in use, ``--teacher``, or a trained run in ``out``.
        HappysadError: a worker was lost (start them all again: the run
            resumes), the workers' splits differ, bad data.
    """
    if opts.teachers:
        raise UsageError("--teacher does not go with --strategy multi-worker; distil on one machine")
    cluster = read_cluster()
    out = Path(opts.out)
    if (out / "model.keras").exists() and not opts.overwrite:
        raise UsageError(f"{out}: holds a trained run already (model.keras); pass --overwrite or choose another --out")
    with worker_folder(out, cluster) as own:
        own.mkdir(parents=True, exist_ok=True)
        size = (opts.img_size, opts.img_size)
        data = prepare(opts, own, size)
        from .fitting import start_tensorflow

        keras, tf = start_tensorflow(opts, own)
        strategy = start_strategy(tf, cluster)
        run = _Run(keras, tf, strategy, opts, cluster, out, own, data)
        try:
            check_same_split(tf, strategy, split_digest(json.loads((own / "split.json").read_text())), cluster.is_chief)
            model, history, monitor, seconds = run.fit()
            metrics = {}
            _log(f"{cluster.task_type} {cluster.index}: weights sha256 {weights_sha256(model)}")
            if cluster.is_chief:
                extra = {"workers": cluster.size}
                metrics = finish_run(model, opts, out, data, history, monitor, seconds, None, extra)
            chief_values(tf, strategy, [tf.constant(0.0)], cluster.is_chief)  # the others wait for the run folder
        except tf.errors.OpError as exc:
            lost = lost_worker(tf, exc, run.checkpoint_dir)
            if lost is None:
                raise
            raise lost from None
        if cluster.is_chief:
            shutil.rmtree(run.checkpoint_dir, ignore_errors=True)
        return metrics


class _Run:
    """One worker's training: the model in the strategy's scope, the
    state a checkpoint holds, the epochs."""

    def __init__(self, keras, tf, strategy, opts: TrainOptions, cluster: Cluster, out: Path, own: Path, data):
        from .fitting import make_optimizer
        from .models import augmentation, build_model

        self.keras, self.tf, self.strategy, self.opts, self.cluster, self.data = (
            keras,
            tf,
            strategy,
            opts,
            cluster,
            data,
        )
        self.checkpoint_dir = out / "checkpoint"  # the chief's, read by every worker
        self.own_checkpoints = own / "checkpoint"
        self.size = (opts.img_size, opts.img_size)
        self.steps = shards.steps_per_epoch(len(data.train_y), opts.batch_size, cluster.size)
        n_own = len(data.scan.labels)
        self.n_own = n_own if not data.soft and len(data.labels) > n_own and len(data.val_paths) else None
        self.monitor = "val_shipped_loss" if self.n_own else "val_loss" if len(data.val_paths) else "loss"
        self.keys = ["accuracy", "loss"] + (["val_accuracy", "val_loss"] if len(data.val_paths) else [])
        self.keys += ["val_shipped_accuracy", "val_shipped_loss"] if self.n_own else []
        channels = channels_of(opts.color)
        with strategy.scope():
            self.model = build_model(opts.arch, self.size, channels, len(data.labels))
            self.trainer = keras.Sequential(
                [keras.Input(self.model.input_shape[1:]), augmentation(opts.seed, opts.augment), self.model]
            )
            self.optimizer = make_optimizer(keras, opts, self.steps)
            self.optimizer.build(self.trainer.trainable_variables)
        self.epoch = tf.Variable(0, dtype=tf.int64)
        self.done = tf.Variable(0, dtype=tf.int64)
        self.best = tf.Variable(np.inf, dtype=tf.float64)
        self.wait = tf.Variable(0, dtype=tf.int64)
        self.history = tf.Variable(np.full((opts.epochs, len(self.keys)), np.nan), dtype=tf.float64)
        self.best_weights = [tf.Variable(w) for w in self.model.get_weights()]
        self.ckpt = tf.train.Checkpoint(
            variables=list(self.trainer.variables),  # weights, BatchNorm statistics, augmentation seeds
            optimizer=self.optimizer,
            epoch=self.epoch,
            done=self.done,
            best=self.best,
            wait=self.wait,
            history=self.history,
            best_weights=self.best_weights,
        )

    def _fingerprint(self) -> str:
        """The settings a checkpoint must have been trained with to be resumed."""
        keep = {k: v for k, v in asdict(self.opts).items() if k not in ("verbose", "overwrite")}
        return json.dumps({**keep, "workers": self.cluster.size}, sort_keys=True, default=str)

    def _restore(self) -> None:
        """Resume from the chief's checkpoint where one of this run is
        readable (a worker that cannot read it gets the chief's state all
        the same: every variable is sent from the chief)."""
        tf = self.tf
        meta = self.checkpoint_dir / "run.json"
        latest = tf.train.latest_checkpoint(str(self.checkpoint_dir)) if meta.is_file() else None
        if latest and meta.read_text() == self._fingerprint():
            self.ckpt.restore(latest).expect_partial()
        elif self.cluster.is_chief:
            shutil.rmtree(self.checkpoint_dir, ignore_errors=True)  # another run's, or none
        variables = [*self.trainer.variables, *self.optimizer.variables, self.epoch, self.done, self.best]
        variables += [self.wait, self.history, *self.best_weights]
        for v, value in zip(
            variables,
            chief_values(tf, self.strategy, [tf.convert_to_tensor(v) for v in variables], self.cluster.is_chief),
        ):
            v.assign(value)
        if int(self.epoch.numpy()):
            _log(f"resumed from the checkpoint of epoch {int(self.epoch.numpy())} ({self.checkpoint_dir})")

    def _save(self) -> None:
        """Checkpoint the epoch just completed (every worker saves: the chief
        into the run folder, the others into their own, removed after)."""
        if self.cluster.is_chief:
            self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
            (self.checkpoint_dir / "run.json").write_text(self._fingerprint())
        where = self.checkpoint_dir if self.cluster.is_chief else self.own_checkpoints
        self.tf.train.CheckpointManager(self.ckpt, str(where), max_to_keep=1).save()
        if not self.cluster.is_chief:
            shutil.rmtree(where, ignore_errors=True)

    def _datasets(self):
        data, opts = self.data, self.opts
        from .models import camera_distortions

        cache = Path(self.own_checkpoints.parent / "cache")
        if opts.cache == "disk":
            shutil.rmtree(cache, ignore_errors=True)
            cache.mkdir(parents=True)
        where = {k: str(cache / k) if opts.cache == "disk" else "" for k in ("train", "val")}
        parallel = not opts.deterministic
        train = decoded_dataset(data.train_paths, data.train_y, self.size, opts.color, where["train"], parallel)
        val = decoded_dataset(data.val_paths, data.val_y, self.size, opts.color, where["val"], parallel)
        distort = camera_distortions(opts.seed) if opts.augment == "camera" else None
        return train, val, distort

    def fit(self):
        """Train the remaining epochs.

        Returns:
            (the trained model, rebuilt outside the strategy's scope with the
            best epoch's weights; history {key: [float per epoch]}; the
            monitored key; the wall time of this process's epochs, s).
        """
        from .models import build_model

        tf, opts, data = self.tf, self.opts, self.data
        self._restore()
        train, val, distort = self._datasets()
        hard = np.argmax(data.train_y, axis=1) if data.soft else data.train_y
        weights = balanced_class_weights(hard, len(data.labels))
        loss_fn = shards.loss_of(self.keras, len(data.labels), data.soft)
        cw = np.array([weights[c] for c in range(len(data.labels))])
        step = shards.train_step(tf, self.strategy, self.trainer, self.optimizer, loss_fn, cw, data.soft)
        validate = shards.validator(tf, self.strategy, self.model, loss_fn, self.n_own)
        _log(
            f"model {opts.arch} on {self.cluster.size} workers ({self.cluster.task_type} {self.cluster.index} here): "
            f"{len(data.train_y)} images, {self.steps} global batches of {opts.batch_size} per epoch, "
            f"up to {opts.epochs} epochs"
        )
        start = time.perf_counter()
        writer = self._writers()
        while not int(self.done.numpy()) and int(self.epoch.numpy()) < opts.epochs:
            self._epoch(train, val, distort, step, validate, writer)
        self._restore_best()
        plain = build_model(opts.arch, self.size, channels_of(opts.color), len(data.labels))
        plain.set_weights(self.model.get_weights())
        return plain, self._history(), self.monitor, time.perf_counter() - start

    def _writers(self):
        """TensorBoard's writers (``logs/train``, ``logs/validation``), on the chief only."""
        if not self.cluster.is_chief:
            return None
        logs = Path(self.opts.out) / "logs"
        return {k: self.tf.summary.create_file_writer(str(logs / k)) for k in ("train", "validation")}

    def _epoch(self, train, val, distort, step, validate, writer) -> None:
        tf, opts, e = self.tf, self.opts, int(self.epoch.numpy())
        t = time.perf_counter()
        n, W = len(self.data.train_y), self.cluster.size

        def shard(ctx):
            return shards.train_shard(tf, train, n, opts.batch_size, opts.seed, e, ctx.input_pipeline_id, W, distort)

        it = iter(self.strategy.distribute_datasets_from_function(shard))
        sums = np.zeros(3)
        for _ in range(self.steps):
            sums += step(it).numpy()
        self._sync_statistics()
        logs = {"loss": sums[0] / sums[2], "accuracy": sums[1] / sums[2]}
        if len(self.data.val_paths):
            rank = self.cluster.rank
            logs.update(validate(shards.val_shard(tf, val, rank, W)))
        self._record(e, logs, writer)
        self._save()
        _log(
            f"epoch {e + 1}/{opts.epochs}: "
            + ", ".join(f"{k} {v:.4f}" for k, v in logs.items())
            + f" ({time.perf_counter() - t:.1f} s)"
        )
        if os.environ.get(PAUSE_ENV) == str(e + 1):
            _log(f"{PAUSE_ENV}={e + 1}: waiting to be killed")
            time.sleep(600)

    def _sync_statistics(self) -> None:
        """Average the BatchNorm moving statistics over the workers: each
        worker updates its own from its shard of each batch (as without a
        strategy), so the workers' models would otherwise drift apart there."""
        stats = [v for v in self.model.non_trainable_variables if "float" in str(v.dtype)]
        if stats:
            tensors = [self.tf.convert_to_tensor(v) for v in stats]
            for v, value in zip(stats, mean_over_workers(self.tf, self.strategy, tensors)):
                v.assign(value)

    def _record(self, e: int, logs: dict, writer) -> None:
        """History, early stopping (Keras' EarlyStopping, restore_best_weights)
        and TensorBoard for epoch ``e``."""
        self.history[e].assign(np.array([logs[k] for k in self.keys]))
        current = logs[self.monitor]
        self.wait.assign_add(1)
        if current < float(self.best.numpy()) or e == 0:
            self.best.assign(current)
            for v, w in zip(self.best_weights, self.model.get_weights()):
                v.assign(w)
            self.wait.assign(0)
        elif int(self.wait.numpy()) >= self.opts.patience:
            self.done.assign(1)
        self.epoch.assign(e + 1)
        if writer:
            for part, prefix in (("train", ""), ("validation", "val_")):
                with writer[part].as_default():
                    for k in ("loss", "accuracy"):
                        if prefix + k in logs:
                            self.tf.summary.scalar(f"epoch_{k}", logs[prefix + k], step=e)
                writer[part].flush()

    def _restore_best(self) -> None:
        self.model.set_weights([v.numpy() for v in self.best_weights])

    def _history(self) -> dict:
        rows = self.history.numpy()[: int(self.epoch.numpy())]
        return {k: [float(x) for x in rows[:, i]] for i, k in enumerate(self.keys)}
