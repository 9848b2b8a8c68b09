"""Preprocessed examples as NumPy shards with an index, prepared in parallel, read as a stream.

A shard folder holds one sub-folder per shard (``<folder>/<shard>/<array>.npy`` plus
``index.json``: example count, arrays, dtypes and shapes). Shards are written under a temporary
name and renamed into place whole, so an interrupted preparation resumes by skipping the shards
that exist. :class:`ShardSet` reads any subset of shards through memory maps: taking a batch
touches only its rows, never the whole corpus. :func:`epoch_plan` and :func:`stream` turn a
shard set into ``tf.data`` batches that every input pipeline (worker) cuts from the same
global batches, so each example is used exactly once per epoch over all workers.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import numpy as np

from ecgcap.runtime.errors import EcgcapError
from ecgcap.runtime.files import current_umask
from ecgcap.runtime.progress import progress

INDEX = "index.json"


def write_shard(folder: str | os.PathLike, name: str,
                arrays: dict[str, np.ndarray | list[np.ndarray]]) -> Path:
    """Write ``arrays`` (equal first dimension) as shard ``name``, atomically.

    A list of arrays is a ragged array (e.g. recordings of different lengths): stored
    concatenated, with the offsets of its items, and read back as a list.
    """
    folder = Path(folder)
    counts = {len(a) for a in arrays.values()}
    if len(counts) != 1:
        raise ValueError(f"shard {name}: arrays differ in length ({sorted(counts)})")
    folder.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=folder))
    try:
        spec = {}
        for key, value in arrays.items():
            ragged = isinstance(value, list)
            if ragged:
                lengths = [len(v) for v in value]
                np.save(tmp / f"{key}.offsets.npy", np.concatenate([[0], np.cumsum(lengths)]))
                value = np.concatenate(value) if value else np.zeros(0)
            value = np.ascontiguousarray(value)
            np.save(tmp / f"{key}.npy", value, allow_pickle=False)
            spec[key] = {"dtype": value.dtype.str, "shape": list(value.shape[1:]),
                         "ragged": ragged}
        (tmp / INDEX).write_text(json.dumps({"count": counts.pop(), "arrays": spec}))
        os.chmod(tmp, 0o777 & ~current_umask())
        try:
            os.rename(tmp, folder / name)
        except OSError:
            if not (folder / name / INDEX).is_file():  # not a concurrent writer's finished shard
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder / name


def _prepare_one(fn: Callable[[Any], dict[str, np.ndarray]], folder: str, name: str,
                 arg: Any) -> tuple[str | None, list[str]]:
    """Worker side of :func:`prepare_shards`: (the error message or None when written, the
    warnings raised), both sent back for the parent to report."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            write_shard(folder, name, fn(arg))
            error = None
        except EcgcapError as exc:
            error = exc.message
        except Exception as exc:  # noqa: BLE001 - sent back to the parent as one line
            error = f"{type(exc).__name__}: {exc}"
    return error, [str(w.message) for w in caught]


def _rewarn(messages: list[str]) -> None:
    for message in messages:
        warnings.warn(message, stacklevel=3)


def prepare_shards(tasks: Sequence[tuple[str, Any]], fn: Callable[[Any], dict[str, np.ndarray]],
                   folder: str | os.PathLike, *, workers: int = 1, quiet: bool = False,
                   label: str = "preparing") -> ShardSet:
    """Write shard ``name`` = ``fn(arg)`` for every ``(name, arg)`` not yet in ``folder``.

    ``workers`` > 1 runs ``fn`` in that many processes (``spawn``: ``fn`` must be a
    module-level function whose module does not need a deep-learning backend, and a calling
    script needs the usual ``if __name__ == "__main__":`` guard); each process writes its own
    shards, so the parent never holds more than the index. Returns the
    :class:`ShardSet` of all ``tasks``, in their order.
    """
    folder = Path(folder)
    names = [name for name, _ in tasks]
    if len(set(names)) != len(names):
        raise ValueError("shard names must be unique")
    todo = [(n, a) for n, a in tasks if not (folder / n / INDEX).is_file()]
    errors: list[str] = []
    bar = progress(range(len(todo)), label=f"{label} {len(todo)} of {len(tasks)} shards",
                   quiet=quiet or not todo)
    steps = iter(bar)
    if workers > 1 and len(todo) > 1:
        context = multiprocessing.get_context("spawn")
        try:
            with ProcessPoolExecutor(min(workers, len(todo)), mp_context=context) as pool:
                futures = {pool.submit(_prepare_one, fn, str(folder), n, a): n for n, a in todo}
                for future in as_completed(futures):
                    error, raised = future.result()
                    _rewarn(raised)
                    if error is not None:
                        errors.append(f"{futures[future]}: {error}")
                    next(steps, None)
        except BrokenProcessPool:
            raise EcgcapError("a preparation process died (out of memory? a script that "
                              "prepares data needs an `if __name__ == \"__main__\":` guard); "
                              "finished shards are kept, run again to go on",
                              input=str(folder)) from None
    else:
        for n, a in todo:
            error, raised = _prepare_one(fn, str(folder), n, a)
            _rewarn(raised)
            if error is not None:
                errors.append(f"{n}: {error}")
            next(steps, None)
    list(steps)
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise EcgcapError(f"could not prepare {errors[0]}{more}", input=str(folder))
    return ShardSet(folder, names)


class ShardSet:
    """The shards ``names`` of ``folder`` as one indexable set of examples (memory-mapped)."""

    def __init__(self, folder: str | os.PathLike, names: Sequence[str]):
        self.folder, self.names = Path(folder), list(names)
        if not self.names:
            raise EcgcapError("no shards to read", input=str(self.folder))
        self.index = []
        for name in self.names:
            path = self.folder / name / INDEX
            if not path.is_file():
                raise EcgcapError("shard missing; prepare it first", input=str(path.parent))
            self.index.append(json.loads(path.read_text()))
        self.arrays = dict(self.index[0]["arrays"])
        self.counts = np.array([entry["count"] for entry in self.index], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.counts)])
        self._maps: dict[tuple[int, str], np.ndarray] = {}

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def _array(self, shard: int, key: str) -> np.ndarray:
        if (shard, key) not in self._maps:
            path = self.folder / self.names[shard] / f"{key}.npy"
            self._maps[shard, key] = np.load(path, mmap_mode="r", allow_pickle=False)
        return self._maps[shard, key]

    def _ragged(self, shard: int, key: str, rows: np.ndarray) -> list[np.ndarray]:
        offsets = self._array(shard, f"{key}.offsets")
        values = self._array(shard, key)
        return [np.array(values[offsets[r]:offsets[r + 1]]) for r in rows]

    def shard(self, i: int, keys: Sequence[str] | None = None) -> dict[str, Any]:
        """All of shard ``i`` (in memory; ragged arrays as lists)."""
        return {k: self._ragged(i, k, np.arange(self.counts[i])) if self.arrays[k].get("ragged")
                else np.array(self._array(i, k)) for k in keys or self.arrays}

    def column(self, key: str) -> np.ndarray:
        """One array over every example (for small per-example arrays: labels, features)."""
        if self.arrays[key].get("ragged"):
            raise ValueError(f"{key} is ragged; read it with take() or shard()")
        return np.concatenate([self._array(i, key) for i in range(len(self.names))])

    def take(self, indices: np.ndarray, keys: Sequence[str] | None = None) -> dict[str, Any]:
        """The examples at ``indices`` (global positions), in that order (ragged: lists)."""
        indices = np.asarray(indices, dtype=np.int64)
        shard = np.searchsorted(self.offsets, indices, side="right") - 1
        out: dict[str, Any] = {}
        for key in keys or self.arrays:
            spec = self.arrays[key]
            if spec.get("ragged"):
                items: list[Any] = [None] * len(indices)
                for s in np.unique(shard):
                    rows = np.flatnonzero(shard == s)
                    for r, item in zip(rows, self._ragged(int(s), key,
                                                          indices[rows] - self.offsets[s]),
                                       strict=True):
                        items[r] = item
                out[key] = items
                continue
            values = np.empty((len(indices), *spec["shape"]), dtype=np.dtype(spec["dtype"]))
            for s in np.unique(shard):
                rows = np.flatnonzero(shard == s)
                local = indices[rows] - self.offsets[s]
                order = np.argsort(local)  # memory maps read fastest in file order
                values[rows[order]] = self._array(int(s), key)[local[order]]
            out[key] = values
        return out


def epoch_plan(n: int, global_batch: int, seed: int, epoch: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """(indices, mask), each (steps, global_batch): epoch ``epoch``'s order of ``n`` examples.

    Every example appears exactly once with mask True; the last batch is filled up with
    repeats (mask False, to be given zero weight) so every batch has the same size.
    """
    order = np.random.default_rng([seed, epoch]).permutation(n)
    steps = -(-n // global_batch)
    indices = np.resize(order, steps * global_batch)
    mask = np.arange(steps * global_batch) < n
    return indices.reshape(steps, global_batch), mask.reshape(steps, global_batch)


def pipeline_pieces(batch: np.ndarray, pipeline: int, pipelines: int, pieces: int
                    ) -> list[np.ndarray]:
    """Input pipeline ``pipeline``'s ``pieces`` per-replica slices of one global batch."""
    per = len(batch) // (pipelines * pieces)
    first = pipeline * pieces
    return [batch[(first + r) * per:(first + r + 1) * per] for r in range(pieces)]


def stream(shards: ShardSet, make_batch: Callable[[dict[str, np.ndarray], np.ndarray,
                                                   np.ndarray, int], Any],
           signature: Any, *, global_batch: int, seed: int, first_epoch: int = 0,
           pipeline: int = 0, pipelines: int = 1, pieces: int = 1,
           subset: np.ndarray | None = None) -> Any:
    """An endless ``tf.data`` stream of pipeline ``pipeline``'s per-replica batches.

    Epoch after epoch from ``first_epoch`` (train with ``steps_per_epoch``), each global batch
    of :func:`epoch_plan` is cut into ``pipelines * pieces`` equal slices and this pipeline
    yields its ``pieces`` in turn. ``make_batch(examples, indices, mask, epoch)`` turns the
    examples of a slice into what the model trains on (``signature`` describes it).
    ``subset`` restricts the epochs to those positions of ``shards`` (e.g. one fold's
    training recordings).
    """
    import tensorflow as tf

    if global_batch % (pipelines * pieces):
        raise EcgcapError(f"the global batch must split evenly over {pipelines * pieces} "
                          "replicas", input=f"--batch-size {global_batch}")

    def generate() -> Iterator[Any]:
        epoch = first_epoch
        positions = np.arange(len(shards)) if subset is None else np.asarray(subset)
        while True:
            indices, mask = epoch_plan(len(positions), global_batch, seed, epoch)
            indices = positions[indices]
            rows = np.arange(global_batch)
            for idx, m in zip(indices, mask, strict=True):
                for piece in pipeline_pieces(rows, pipeline, pipelines, pieces):
                    yield make_batch(shards.take(idx[piece]), idx[piece], m[piece], epoch)
            epoch += 1

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    dataset = tf.data.Dataset.from_generator(generate, output_signature=signature)
    return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)


def steps_per_epoch(n: int, global_batch: int) -> int:
    return -(-n // global_batch)
