"""Training across machines: the cluster in ``TF_CONFIG``, the worker's own
folder, and the strategy (``tf.distribute.MultiWorkerMirroredStrategy``).

``TF_CONFIG`` is read and checked before TensorFlow is imported, so a
wrong one is one line (exit 2) at once. The chief (the ``chief`` task, or
worker 0 without one) writes the run folder; every other worker writes into
a temporary folder that is removed when it ends.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

from happysad.edge.errors import HappysadError, UsageError

#: An example for the error messages.
EXAMPLE = '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}'
#: The task types MultiWorkerMirroredStrategy trains with.
JOBS = ("chief", "worker")


@dataclass(frozen=True)
class Cluster:
    """This process's place in the cluster.

    Attributes:
        addresses: every task's "host:port", the chief first (if any), then
            the workers in index order.
        task_type: "chief" or "worker". index: the task's index in its job.
        chiefs: 1 with a ``chief`` job, else 0 (worker 0 is the chief).
    """

    addresses: tuple
    task_type: str
    index: int
    chiefs: int = 0

    @property
    def rank(self) -> int:
        """0 for the chief, then 1, 2, ...: this task's place in :attr:`addresses`."""
        return self.index + (self.chiefs if self.task_type == "worker" else 0)

    @property
    def is_chief(self) -> bool:
        """Whether this task writes the run folder."""
        return self.rank == 0

    @property
    def size(self) -> int:
        """The number of workers (processes) that train."""
        return len(self.addresses)

    @property
    def address(self) -> str:
        return self.addresses[self.rank]


def _fail(what: str) -> UsageError:
    return UsageError(f"TF_CONFIG: {what}; --strategy multi-worker reads the cluster from it, e.g. {EXAMPLE}")


def _job(cluster: dict, name: str) -> list:
    tasks = cluster.get(name, [])
    if not isinstance(tasks, list) or not all(isinstance(a, str) for a in tasks):
        raise _fail(f'cluster.{name} is not a list of "host:port" strings')
    for a in tasks:
        host, _, port = a.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise _fail(f"cluster.{name} address {a!r} is not host:port (port 1-65535)")
    return tasks


def parse_tf_config(text: str | None) -> Cluster:
    """The cluster of a ``TF_CONFIG`` value (its JSON text; None: unset).

    Raises:
        UsageError (exit 2), one line naming the part: unset, not JSON, no
            ``cluster``, no ``worker`` list, a bad address, the same address
            twice, a job other than chief and worker, no ``task``, a task
            type not in the cluster, an index out of range.
    """
    if not text or not text.strip():
        raise _fail("is not set")
    try:
        config = json.loads(text)
    except ValueError as exc:
        raise _fail(f"not JSON ({exc})") from None
    if not isinstance(config, dict):
        raise _fail("not a JSON object")
    cluster = config.get("cluster")
    if not isinstance(cluster, dict) or not cluster:
        raise _fail("no 'cluster'")
    other = sorted(set(cluster) - set(JOBS))
    if other:
        raise _fail(f"cluster has {', '.join(other)}: multi-worker training runs chief and worker tasks only")
    chiefs, workers = _job(cluster, "chief"), _job(cluster, "worker")
    if len(chiefs) > 1:
        raise _fail(f"cluster.chief lists {len(chiefs)} addresses; give one")
    if not workers and not chiefs:
        raise _fail("cluster has no 'worker' list")
    addresses = tuple(chiefs + workers)
    if len(set(addresses)) != len(addresses):
        raise _fail("cluster lists an address twice")
    task = config.get("task")
    if not isinstance(task, dict):
        raise _fail('no \'task\' (this process\'s {"type": "worker", "index": N})')
    kind, index = task.get("type"), task.get("index", 0)
    if kind not in JOBS or kind not in cluster:
        raise _fail(f"task type {kind!r} is not a job of the cluster ({', '.join(n for n in JOBS if n in cluster)})")
    n = len(chiefs if kind == "chief" else workers)
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < n:
        raise _fail(f"task index {index!r} is out of range: cluster.{kind} lists {n} (index 0..{n - 1})")
    return Cluster(addresses, kind, index, len(chiefs))


def check_port(cluster: Cluster) -> None:
    """Refuse a port another process listens on already (TensorFlow's gRPC
    server binds every interface, ``0.0.0.0:port``, and with SO_REUSEPORT
    would share the port silently).

    Raises:
        UsageError: the port of this task's address is in use here.
    """
    port = int(cluster.address.rpartition(":")[2])
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart's TIME_WAIT is no conflict
        try:
            s.bind(("", port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            raise _fail(
                f"task {cluster.task_type} {cluster.index}'s address {cluster.address}: port {port} is in use "
                "on this machine; give this task a free port"
            ) from None


def read_cluster(environ=os.environ) -> Cluster:
    """:func:`parse_tf_config` of ``environ["TF_CONFIG"]``, its port checked (:func:`check_port`)."""
    cluster = parse_tf_config(environ.get("TF_CONFIG"))
    check_port(cluster)
    return cluster


@contextlib.contextmanager
def worker_folder(out: Path, cluster: Cluster):
    """The folder this worker writes: ``out`` for the chief, else a
    temporary folder, removed on the way out (also after an error)."""
    if cluster.is_chief:
        yield out
        return
    tmp = Path(tempfile.mkdtemp(prefix=f"happysad-{cluster.task_type}{cluster.index}-"))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def start_strategy(tf, cluster: Cluster):
    """``MultiWorkerMirroredStrategy`` over the cluster, with one replica per worker.

    Raises:
        HappysadError: a worker holds several replicas (GPUs): this
            training step shards by worker.
    """
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    if strategy.num_replicas_in_sync != cluster.size:
        raise HappysadError(
            f"--strategy multi-worker: {strategy.num_replicas_in_sync} replicas on {cluster.size} workers; "
            "run one process per GPU (CUDA_VISIBLE_DEVICES) so each worker holds one replica"
        )
    return strategy


def chief_values(tf, strategy, values: list, is_chief: bool) -> list:
    """The chief's copy of each tensor in ``values`` on every worker (an
    all-reduce sum of the chief's values and zeros: exact in float64 for
    floats, and for integers below 2**53).

    Returns:
        tensors of the dtypes of ``values``.
    """
    return _all_reduce(tf, strategy, values, 1.0 if is_chief else 0.0)


def mean_over_workers(tf, strategy, values: list) -> list:
    """The mean over the workers of each float tensor in ``values`` (the same
    on every worker: the all-reduce hands each the same sums)."""
    return _all_reduce(tf, strategy, values, 1.0 / strategy.num_replicas_in_sync)


#: One traced all-reduce per strategy (a new ``tf.function`` per call would retrace every epoch).
_REDUCERS: dict = {}


def _all_reduce(tf, strategy, values: list, scale: float) -> list:
    """The sum over the workers of ``values`` times ``scale``, in float64, cast back."""
    if id(strategy) not in _REDUCERS:

        def replica(tensors, factor):
            return tf.distribute.get_replica_context().all_reduce("sum", [t * factor for t in tensors])

        @tf.function(autograph=False, reduce_retracing=True)
        def reduce(tensors, factor):
            return strategy.run(replica, args=(tensors, factor))

        _REDUCERS[id(strategy)] = reduce
    tensors = [tf.cast(v, tf.float64) for v in values]
    summed = strategy.experimental_local_results(_REDUCERS[id(strategy)](tensors, tf.constant(scale, tf.float64)))[0]
    return [tf.cast(s, v.dtype) for s, v in zip(summed, values)]


def split_digest(split: dict) -> bytes:
    """sha256 over each part's image digests (``split.json``'s train, val, test)."""
    h = hashlib.sha256()
    for part in ("train", "val", "test"):
        h.update(json.dumps([(e["sha256"], e["label"]) for e in split[part]]).encode())
    return h.digest()


def check_same_split(tf, strategy, digest: bytes, is_chief: bool) -> None:
    """Compare this worker's split with the chief's.

    Raises:
        HappysadError: they differ (the workers read different data).
    """
    import numpy as np

    own = np.frombuffer(digest, np.uint16).astype(np.int64)
    chiefs = chief_values(tf, strategy, [tf.constant(own)], is_chief)[0].numpy()
    if not np.array_equal(own, chiefs):
        raise HappysadError(
            "this worker's split differs from the chief's (split.json): every worker must read the same "
            "DATA_DIR with the same --seed and --split-ratios"
        )


def lost_worker(tf, exc: Exception, checkpoint: Path) -> HappysadError | None:
    """The one-line error for a collective that failed because a worker
    was lost (killed, restarted, unreachable); None for any other error."""
    lost = (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.DeadlineExceededError)
    if not isinstance(exc, lost):
        return None
    return HappysadError(
        "a worker was lost (" + type(exc).__name__ + "); start every worker again with the same command: "
        f"training resumes from the last completed epoch ({checkpoint})"
    )
