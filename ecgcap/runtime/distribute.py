"""``--distribute none|mirrored|multi-worker``: the same training on several devices or hosts.

Nothing here is a distribution engine of its own; the option picks one that Keras supports:

* tensorflow backend: ``mirrored`` is :class:`tf.distribute.MirroredStrategy` over the local GPUs
  (or, on a machine without one, ``--replicas`` logical CPU devices); ``multi-worker`` is
  :class:`tf.distribute.MultiWorkerMirroredStrategy`, configured by the standard ``TF_CONFIG``
  environment variable that cluster launchers set.
* jax backend: ``mirrored`` is :class:`keras.distribution.DataParallel` over the local devices
  (several CPU devices need ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` before jax
  starts); ``multi-worker`` is refused with a clear message.

:func:`configure_distribution` must run before the backend creates its first tensor (the
commands call it from ``setup_runtime``). The result, a :class:`Distribution`, is passed to the
training functions explicitly; the model builders never see it.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ecgcap.runtime.errors import EcgcapError

STRATEGIES = ("none", "mirrored", "multi-worker")


@dataclass
class Distribution:
    """How training is spread: the strategy and this process's place in it.

    ``replicas`` counts model copies over all workers; ``worker`` is this process's index
    (0 is the chief, the only one that writes models and reports).
    """

    name: str = "none"
    replicas: int = 1
    workers: int = 1
    worker: int = 0
    devices: tuple[str, ...] = ()
    strategy: Any = None  # a tf.distribute.Strategy (tensorflow backend), else None

    @property
    def is_chief(self) -> bool:
        return self.worker == 0

    @property
    def active(self) -> bool:
        return self.name != "none"

    @property
    def pieces(self) -> int:
        """Batches each input pipeline hands out per step: one per local replica under a
        tf.distribute strategy; one global batch otherwise (keras.distribution splits it)."""
        return self.replicas // self.workers if self.strategy is not None else 1

    def scope(self) -> contextlib.AbstractContextManager:
        """Where models and optimizers must be created (the strategy's scope)."""
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()

    def check_batch(self, global_batch: int) -> int:
        """The per-replica batch; an error when ``global_batch`` does not split evenly."""
        if global_batch % self.replicas:
            raise EcgcapError(f"the global batch must split evenly over {self.replicas} "
                              "replicas", input=f"--batch-size {global_batch}")
        return global_batch // self.replicas

    def describe(self, global_batch: int, learning_rate: float,
                 clipnorm: float | None = None) -> str:
        """The line every training command prints at start."""
        where = ", ".join(self.devices) if self.devices else "default device"
        workers = f", worker {self.worker} of {self.workers}" if self.workers > 1 else ""
        line = (f"distribute {self.name}: {self.replicas} replica(s) on {where}{workers}; "
                f"global batch {global_batch} = {self.replicas} x "
                f"{global_batch // self.replicas} per replica; learning rate {learning_rate:g}")
        if clipnorm and self.strategy is not None and self.replicas > 1:
            line += (f"; gradient clipping (norm {clipnorm:g}) applies to each replica's "
                     "gradient before they are summed (Keras 3 under tf.distribute)")
        return line

    def as_dict(self, global_batch: int) -> dict[str, Any]:
        return {"strategy": self.name, "replicas": self.replicas, "workers": self.workers,
                "devices": list(self.devices), "global_batch": global_batch,
                "per_replica_batch": global_batch // self.replicas}

    def dataset(self, make: Callable[[int, int, int], Any]) -> Any:
        """The training input: ``make(pipeline, pipelines, pieces)`` returns a ``tf.data``
        dataset of per-replica batches for one input pipeline (one per worker)."""
        if self.strategy is None:
            return make(0, 1, 1)
        return self.strategy.distribute_datasets_from_function(
            lambda ctx: make(ctx.input_pipeline_id, ctx.num_input_pipelines, self.pieces))

    def prepare_fit(self, model: Any, example: Any) -> None:
        """Build ``model``'s training state (metrics, loss, optimizer) from ``example``, one
        local batch ``(x, y, sample_weight)``, before ``fit``.

        Under a tf.distribute strategy, Keras 3 (3.15) ``fit`` otherwise draws a first batch
        and averages it over the replicas to build that state, which fails under
        MultiWorkerMirroredStrategy for dict inputs ("Attempt to convert a value ({...
        PerReplica ...}) ... to a Tensor"); with the state built here that step is skipped.
        """
        if self.strategy is None:
            return
        with self.strategy.scope():
            model._symbolic_build(data_batch=example)
        model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None

    def check_same(self, value: int, what: str, where: str) -> None:
        """Raise unless ``value`` is the same on every worker (e.g. the epoch each worker's
        backup resumes from: workers that disagree would wait on each other forever)."""
        if self.strategy is None or self.workers == 1:
            return
        import tensorflow as tf

        v = float(value)
        sums = self.strategy.reduce(
            "SUM", self.strategy.run(lambda: tf.constant([v, v * v, 1.0])), axis=None)
        total, squares, n = (float(x) for x in np.asarray(sums))
        if abs(n * squares - total * total) > 1e-6:  # equal iff n * sum(v^2) == (sum v)^2
            raise EcgcapError(f"the workers disagree on {what} (this worker: {value}); delete "
                              "every worker's backup (the chief's run folder and each "
                              "<name>.worker-N folder) to start over", input=where)

    def predict(self, model: Any, x: dict[str, np.ndarray], batch_size: int = 1024
                ) -> np.ndarray:
        """``model``'s outputs on ``x`` computed by this process alone, in input order.

        Under a tf.distribute strategy ``model.predict`` would shard ``x`` over the workers;
        callbacks that score every example (and decide early stopping identically on every
        worker) call the model directly instead, in batches that split evenly over the
        replicas.
        """
        if not self.active:
            return model.predict(x, batch_size=batch_size, verbose=0)
        n = len(next(iter(x.values())))
        outs = []
        for i in range(0, n, batch_size):
            chunk = {k: v[i:i + batch_size] for k, v in x.items()}
            rows = len(next(iter(chunk.values())))
            fill = -rows % self.replicas  # keras.distribution splits batches evenly
            if fill:
                chunk = {k: np.concatenate([v, np.repeat(v[-1:], fill, axis=0)])
                         for k, v in chunk.items()}
            outs.append(np.asarray(model(chunk, training=False))[:rows])
        return np.concatenate(outs)


def read_tf_config(text: str | None = None) -> tuple[int, int]:
    """(number of workers, this worker's index) from ``TF_CONFIG``; the chief is index 0.

    Accepts a cluster of ``worker`` tasks (worker 0 is the chief) or one ``chief`` plus workers.
    """
    text = os.environ.get("TF_CONFIG") if text is None else text
    if not text:
        raise EcgcapError("--distribute multi-worker needs the TF_CONFIG environment variable "
                          "(cluster and task; see the README)", input="TF_CONFIG")
    try:
        config = json.loads(text)
        cluster, task = config["cluster"], config["task"]
        chiefs, workers = list(cluster.get("chief", [])), list(cluster.get("worker", []))
        kind, index = task["type"], int(task["index"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise EcgcapError(f"not a valid TF_CONFIG ({type(exc).__name__}: {exc}); expected "
                          '{"cluster": {"worker": [...]}, "task": {"type": "worker", "index": N}}',
                          input="TF_CONFIG") from None
    if len(chiefs) > 1 or kind not in ("chief", "worker"):
        raise EcgcapError("TF_CONFIG may name at most one chief, and this task must be the chief "
                          "or a worker", input="TF_CONFIG")
    tasks = {"chief": chiefs, "worker": workers}[kind]
    if not 0 <= index < len(tasks):
        raise EcgcapError(f"task index {index} is not in the cluster's {kind} list",
                          input="TF_CONFIG")
    return len(chiefs) + len(workers), index + (len(chiefs) if kind == "worker" else 0)


def _cpu_replicas(tf: Any, replicas: int) -> list[str]:
    """Split the CPU into ``replicas`` logical devices (before TensorFlow starts)."""
    cpus = tf.config.list_physical_devices("CPU")
    if replicas > 1:
        try:
            tf.config.set_logical_device_configuration(
                cpus[0], [tf.config.LogicalDeviceConfiguration()] * replicas)
        except RuntimeError:
            if len(tf.config.list_logical_devices("CPU")) != replicas:
                raise EcgcapError("TensorFlow has already started, so the CPU can no longer be "
                                  "split; configure the distribution first",
                                  input=f"--replicas {replicas}") from None
    return [f"/cpu:{i}" for i in range(replicas)]


def _tensorflow(name: str, replicas: int | None, gpus: list[str]) -> Distribution:
    import tensorflow as tf

    if name == "multi-worker":
        workers, worker = read_tf_config()
        strategy = tf.distribute.MultiWorkerMirroredStrategy()  # before TensorFlow starts
        _mean_scalars_over_workers()
        return Distribution(name, strategy.num_replicas_in_sync, workers, worker,
                            tuple(strategy.extended.worker_devices), strategy)
    if gpus:
        n = replicas or len(gpus)
        if n > len(gpus):
            raise EcgcapError(f"only {len(gpus)} GPU(s) visible", input=f"--replicas {n}")
        devices = [f"/gpu:{i}" for i in range(n)]
    else:
        devices = _cpu_replicas(tf, replicas or 1)
    strategy = tf.distribute.MirroredStrategy(devices)
    return Distribution(name, len(devices), 1, 0, tuple(devices), strategy)


def _mean_scalars_over_workers() -> None:
    """Keras 3 (3.15) averages each step's logged metrics over the workers of a
    MultiWorkerMirroredStrategy with ``reduce("MEAN", v, axis=0)``, which fails on scalars
    ("Invalid reduction dimension 0 for input with 0 dimensions", tensorflow/tensorflow#72388).
    Average them with ``axis=None`` instead; every other case goes to Keras unchanged."""
    from keras.src.backend.tensorflow import trainer

    keras_reduce = trainer.reduce_per_replica
    if getattr(keras_reduce, "ecgcap", False):
        return

    def reduce_per_replica(values: Any, strategy: Any, reduction: str) -> Any:
        if reduction in ("auto", "mean") and trainer._collective_all_reduce_multi_worker(
                strategy):
            import tensorflow as tf

            return tf.nest.map_structure(
                lambda v: strategy.reduce("MEAN", v, axis=None if v.shape.rank == 0 else 0),
                values)
        return keras_reduce(values, strategy, reduction)

    reduce_per_replica.ecgcap = True  # type: ignore[attr-defined]
    trainer.reduce_per_replica = reduce_per_replica


def _jax(name: str, replicas: int | None) -> Distribution:
    import keras

    if name == "multi-worker":
        raise EcgcapError("multi-worker training runs on the tensorflow backend "
                          "(KERAS_BACKEND=tensorflow); on jax use --distribute mirrored "
                          "over the local devices", input="--distribute multi-worker")
    devices = keras.distribution.list_devices()
    gpus = [d for d in devices if "gpu" in d.lower() or "cuda" in d.lower()]
    devices = gpus or devices
    n = replicas or len(devices)
    if n > len(devices):
        raise EcgcapError(f"jax sees {len(devices)} device(s); for several CPU devices start "
                          f"with XLA_FLAGS=--xla_force_host_platform_device_count={n}",
                          input=f"--replicas {n}")
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices[:n]))
    return Distribution(name, n, 1, 0, tuple(devices[:n]), None)


def configure_distribution(name: str = "none", replicas: int | None = None, *,
                           gpus: list[str] | None = None) -> Distribution:
    """Set up strategy ``name`` (one of :data:`STRATEGIES`) and return it.

    ``replicas`` limits ``mirrored`` to that many GPUs, or splits a GPU-less machine's CPU
    into that many logical devices (default: every GPU, else one CPU device). ``gpus`` is
    the list of visible GPUs (from :func:`ecgcap.runtime.device.list_gpus`).

    Examples
    --------
    >>> dist = configure_distribution("mirrored", replicas=2)   # doctest: +SKIP
    >>> with dist.scope():
    ...     model = build_lstm_classifier(...)
    """
    if name not in STRATEGIES:
        raise EcgcapError(f"unknown strategy; choose one of {', '.join(STRATEGIES)}",
                          input=f"--distribute {name}")
    if replicas is not None and replicas < 1:
        raise EcgcapError("must be 1 or more", input=f"--replicas {replicas}")
    if name == "none":
        if replicas not in (None, 1):
            raise EcgcapError("--replicas needs --distribute mirrored",
                              input=f"--replicas {replicas}")
        return Distribution()
    if name == "multi-worker" and replicas is not None:
        raise EcgcapError("with multi-worker, every worker uses its local devices; the cluster "
                          "comes from TF_CONFIG", input=f"--replicas {replicas}")
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        return _tensorflow(name, replicas, gpus or [])
    if backend == "jax":
        return _jax(name, replicas)
    raise EcgcapError(f"distributed training is not supported on the {backend} backend; "
                      "use tensorflow or jax", input=f"--distribute {name}")


@contextlib.contextmanager
def no_distribution() -> Iterator[None]:
    """Run the block without the jax backend's global distribution (plain single-device
    models, e.g. for evaluation after training); a no-op on other backends."""
    import keras

    previous = keras.distribution.distribution() if keras.backend.backend() == "jax" else None
    if previous is not None:
        keras.distribution.set_distribution(None)
    try:
        yield
    finally:
        if previous is not None:
            keras.distribution.set_distribution(previous)


def streamed_run_dir(name: str, runs_dir: str | os.PathLike, distribution: Distribution, *,
                     overwrite: bool = False, resume: bool = False,
                     keep_replaced: bool = False) -> Path:
    """The run folder of a training run that backs up with ``BackupAndRestore``.

    The chief's is ``runs_dir/name``. When it holds ``backup/`` (an unfinished run), it is
    continued as it is, whatever ``overwrite`` says: a launcher that restarts a failed worker
    runs the same command again, and that must resume, not start over (delete the folder to
    start over). Other workers keep their backup in ``runs_dir/name.worker-N``.
    """
    from ecgcap.runtime.paths import make_run_dir

    if not distribution.is_chief:
        own = f"{name}.worker-{distribution.worker}"
        return make_run_dir(own, runs_dir, resume=(Path(runs_dir) / own).is_dir())
    folder = Path(runs_dir) / name
    has_backup = (folder / "backup").is_dir() or any(folder.glob("*/backup"))  # or a fold's
    if resume and not has_backup:
        raise EcgcapError("--resume given but the run folder holds no backup of an unfinished "
                          "run", input=str(folder))
    return make_run_dir(name, runs_dir, overwrite=overwrite, resume=has_backup,
                        keep_replaced=keep_replaced)
