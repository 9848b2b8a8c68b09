"""Scale-out: sharded data, and the same training under tf.distribute and keras.distribution.

The engines are real: MirroredStrategy over two logical CPU devices, MultiWorkerMirroredStrategy
with two worker processes on 127.0.0.1 (``TF_CONFIG`` per process), and jax's DataParallel over
two host devices. Strategies that must be set before the backend starts run in subprocesses.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import run_module
from ecgcap.runtime.distribute import Distribution, configure_distribution, read_tf_config
from ecgcap.runtime.errors import EcgcapError
from ecgcap.runtime.shards import (
    ShardSet,
    epoch_plan,
    pipeline_pieces,
    prepare_shards,
    stream,
    write_shard,
)

# ---------------------------------------------------------------- shards and the epoch plan


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 300), per_replica=st.integers(1, 16), pipelines=st.integers(1, 3),
       pieces=st.integers(1, 3), seed=st.integers(0, 5), epoch=st.integers(0, 3))
def test_every_example_exactly_once_per_epoch_across_workers(n, per_replica, pipelines, pieces,
                                                              seed, epoch):
    global_batch = per_replica * pipelines * pieces
    indices, mask = epoch_plan(n, global_batch, seed, epoch)
    assert indices.shape == mask.shape == (-(-n // global_batch), global_batch)
    seen = []
    for idx, m in zip(indices, mask, strict=True):
        rows = np.arange(global_batch)
        for pipeline in range(pipelines):
            for piece in pipeline_pieces(rows, pipeline, pipelines, pieces):
                assert len(piece) == per_replica
                seen.extend(idx[piece][m[piece]].tolist())
    assert sorted(seen) == list(range(n))


def test_epoch_plan_is_seeded_and_changes_every_epoch():
    a, _ = epoch_plan(100, 10, seed=1, epoch=0)
    np.testing.assert_array_equal(a, epoch_plan(100, 10, seed=1, epoch=0)[0])
    assert not np.array_equal(a, epoch_plan(100, 10, seed=1, epoch=1)[0])
    assert not np.array_equal(a, epoch_plan(100, 10, seed=2, epoch=0)[0])


def _square_shard(arg):
    """A module-level shard function (worker processes import it by name)."""
    start, count = arg
    if count < 0:
        raise ValueError("negative count")
    values = np.arange(start, start + count)
    return {"x": values.astype(np.float32)[:, None] ** 2, "id": values}


def test_shards_are_prepared_in_parallel_resumed_and_read_back_in_order(tmp_path):
    tasks = [(f"s{i}", (10 * i, 3 + i)) for i in range(4)]
    shards = prepare_shards(tasks, _square_shard, tmp_path, workers=2, quiet=True)
    assert len(shards) == 3 + 4 + 5 + 6 and list(shards.counts) == [3, 4, 5, 6]
    ids = shards.column("id")
    np.testing.assert_array_equal(ids[:4], [0, 1, 2, 10])
    pick = np.array([17, 0, 5, 9, 3])
    taken = shards.take(pick)
    np.testing.assert_array_equal(taken["id"], ids[pick])
    np.testing.assert_array_equal(taken["x"][:, 0], ids[pick].astype(np.float32) ** 2)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left

    # resumable: finished shards are kept as they are, only missing ones are prepared
    before = (tmp_path / "s0" / "id.npy").stat().st_mtime_ns
    import shutil

    shutil.rmtree(tmp_path / "s2")
    again = prepare_shards(tasks, _square_shard, tmp_path, workers=1, quiet=True)
    assert (tmp_path / "s0" / "id.npy").stat().st_mtime_ns == before
    np.testing.assert_array_equal(again.column("id"), ids)


def test_a_failing_shard_is_one_line_and_leaves_nothing_half_written(tmp_path):
    tasks = [("good", (0, 3)), ("bad", (0, -1))]
    with pytest.raises(EcgcapError, match="could not prepare bad: ValueError: negative count"):
        prepare_shards(tasks, _square_shard, tmp_path, workers=2, quiet=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good"]
    with pytest.raises(EcgcapError, match="shard missing"):
        ShardSet(tmp_path, ["good", "bad"])
    with pytest.raises(ValueError, match="differ in length"):
        write_shard(tmp_path, "uneven", {"a": np.zeros(2), "b": np.zeros(3)})


def test_ragged_arrays_come_back_as_lists_in_order(tmp_path):
    signals = [np.arange(n, dtype=np.float32)[:, None] for n in (5, 0, 3)]
    write_shard(tmp_path, "a", {"signal": signals, "label": np.array(["N", "A", "O"])})
    write_shard(tmp_path, "b", {"signal": [np.ones((2, 1), np.float32)],
                                "label": np.array(["~"])})
    shards = ShardSet(tmp_path, ["a", "b"])
    taken = shards.take(np.array([3, 0, 2, 1]))
    assert taken["label"].tolist() == ["~", "N", "O", "A"]
    assert [len(s) for s in taken["signal"]] == [2, 5, 3, 0]
    np.testing.assert_array_equal(taken["signal"][1][:, 0], np.arange(5))
    assert [len(s) for s in shards.shard(0)["signal"]] == [5, 0, 3]
    with pytest.raises(ValueError, match="ragged"):
        shards.column("signal")


def _warning_shard(arg):
    import warnings

    warnings.warn(f"shard {arg}: 2 annotations ignored", stacklevel=1)
    return {"x": np.zeros(2)}


def test_warnings_of_worker_processes_reach_the_parent(tmp_path):
    with pytest.warns(UserWarning) as caught:
        prepare_shards([("a", 1), ("b", 2)], _warning_shard, tmp_path, workers=2, quiet=True)
    assert sorted(str(w.message) for w in caught) == ["shard 1: 2 annotations ignored",
                                                      "shard 2: 2 annotations ignored"]


def test_restored_state_is_cut_back_to_the_backup(tmp_path):
    from ecgcap.runtime.checkpoint import restored_state

    history = {"loss": [3.0, 2.0, 1.5], "val_score": [0.2, 0.5, 0.9]}
    (tmp_path / "state.json").write_text(json.dumps(
        {"epoch": 3, "best": 0.9, "best_epoch": 3, "wait": 0, "history": history,
         "epoch_seconds": [10.0, 11.0, 12.0]}))
    state = restored_state(tmp_path, 2, "val_score")  # the backup holds 2 epochs
    assert state["history"] == {"loss": [3.0, 2.0], "val_score": [0.2, 0.5]}
    assert state["epoch_seconds"] == [10.0, 11.0]
    assert (state["epoch"], state["best"], state["best_epoch"], state["wait"]) == (2, 0.5, 2, 0)
    assert restored_state(tmp_path, 0, "val_score") is None
    assert restored_state(tmp_path, 4, "val_score") is None  # state behind the backup


def test_tf_data_stream_gives_each_worker_its_share_of_every_epoch(tmp_path):
    import tensorflow as tf

    shards = prepare_shards([(f"s{i}", (10 * i, 7)) for i in range(3)], _square_shard,
                            tmp_path, quiet=True)  # 21 examples
    signature = (tf.TensorSpec((None,), tf.int64), tf.TensorSpec((None,), tf.bool))

    def make_batch(ex, keys, mask, epoch):
        return ex["id"], mask

    steps = 3  # global batch 8 -> 3 steps per epoch, the last one padded
    per_epoch = []
    for epoch in range(2):
        ids = []
        for pipeline in range(2):
            data = stream(shards, make_batch, signature, global_batch=8, seed=0,
                          first_epoch=epoch, pipeline=pipeline, pipelines=2, pieces=2)
            for x, m in data.take(steps * 2):
                assert len(x) == 2  # per-replica batch
                ids.extend(x.numpy()[m.numpy()].tolist())
        assert sorted(ids) == sorted(shards.column("id").tolist())
        per_epoch.append(ids)
    assert per_epoch[0] != per_epoch[1]
    subset = np.array([0, 5, 20, 9])  # one fold's training examples only
    data = stream(shards, make_batch, signature, global_batch=4, seed=0, subset=subset)
    ids = [int(i) for x, m in data.take(1) for i in x.numpy()[m.numpy()]]  # one epoch
    assert sorted(ids) == sorted(shards.column("id")[subset].tolist())
    with pytest.raises(EcgcapError, match="split evenly over 3 replicas"):
        stream(shards, make_batch, signature, global_batch=8, seed=0, pipelines=3)


def test_beat_shards_hold_the_same_beats_as_the_in_memory_pipeline(mitdb_dir, tmp_path):
    from ecgcap.ecg.databases import get_database
    from ecgcap.ecg.dataset import load_beats, write_beat_shards

    db = get_database("mitdb")
    shards = write_beat_shards(mitdb_dir, db, ["100", "114"], folder=tmp_path, workers=2,
                               quiet=True)
    memory = load_beats(mitdb_dir, db, ["100", "114"], use_cache=False, quiet=True)
    assert len(shards) == len(memory["label"]) > 3000
    for key in ("beat", "rr", "label", "sample", "record"):
        np.testing.assert_array_equal(shards.column(key), memory[key])


# ---------------------------------------------------------------- configuration


def test_tf_config_is_read_the_standard_way():
    cluster = {"worker": ["h1:2222", "h2:2222"]}
    assert read_tf_config(json.dumps({"cluster": cluster, "task": {"type": "worker",
                                                                   "index": 1}})) == (2, 1)
    with_chief = {"chief": ["h0:2222"], **cluster}
    assert read_tf_config(json.dumps({"cluster": with_chief, "task": {"type": "chief",
                                                                      "index": 0}})) == (3, 0)
    assert read_tf_config(json.dumps({"cluster": with_chief, "task": {"type": "worker",
                                                                      "index": 0}})) == (3, 1)
    for bad, message in [("", "needs the TF_CONFIG"), ("{not json", "not a valid TF_CONFIG"),
                         ('{"cluster": {}}', "not a valid TF_CONFIG"),
                         (json.dumps({"cluster": cluster, "task": {"type": "worker",
                                                                   "index": 2}}),
                          "task index 2 is not in the cluster"),
                         (json.dumps({"cluster": cluster, "task": {"type": "ps", "index": 0}}),
                          "must be the chief or a worker")]:
        with pytest.raises(EcgcapError, match=message):
            read_tf_config(bad)


def test_option_errors_are_clear():
    with pytest.raises(EcgcapError, match="--distribute ring: unknown strategy"):
        configure_distribution("ring")
    with pytest.raises(EcgcapError, match="--replicas 2: --replicas needs --distribute mirrored"):
        configure_distribution("none", 2)
    with pytest.raises(EcgcapError, match="cluster comes from TF_CONFIG"):
        configure_distribution("multi-worker", 2)
    with pytest.raises(EcgcapError, match="--batch-size 65: the global batch must split"):
        Distribution("mirrored", replicas=2).check_batch(65)
    assert not Distribution().active and Distribution().is_chief


def test_train_ecg_refuses_bad_distribution_options_in_one_line(mitdb_dir, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    common = ["--data-dir", str(mitdb_dir), "--runs-dir", str(tmp_path), "--device", "cpu"]
    for args, message in [
        (["--distribute", "multi-worker"], "TF_CONFIG: --distribute multi-worker needs"),
        (["--distribute", "mirrored", "--replicas", "2", "--batch-size", "65"],
         "--batch-size 65: the global batch must split evenly over 2 replicas"),
        (["--db", "cinc2017", "--distribute", "mirrored", "--folds", "5"],
         "--folds 5: streamed (and distributed) cross-validation runs one fold per job"),
    ]:
        result = subprocess.run([sys.executable, "-m", "ecgcap.train_ecg", *common, *args],
                                capture_output=True, text=True, env=env, timeout=300)
        assert result.returncode == 2, result.stderr[-2000:]
        assert message in result.stderr
        assert "Traceback" not in result.stderr
    assert not list(tmp_path.iterdir())  # nothing written


# ---------------------------------------------------------------- the engines

SAME_TRAINING = textwrap.dedent("""
    # usage: script.py BACKEND DATA_DIR OUT
    import dataclasses, json, sys
    from pathlib import Path


    def main(backend, data_dir, out):
        from ecgcap.runtime.device import configure_device
        from ecgcap.runtime.distribute import Distribution, configure_distribution
        configure_device("cpu")
        mirrored = configure_distribution("mirrored", 2) if backend == "tensorflow" else None
        from ecgcap.runtime.seed import set_seed
        from ecgcap.ecg.databases import get_database
        from ecgcap.ecg.training import TrainConfig, train_beats
        db = dataclasses.replace(get_database("mitdb"),
                                 split={"train": ("101", "106", "118"), "test": ("100",)})
        # tiny LSTM, no batch norm (per-replica statistics); no clipping on tensorflow, where
        # Keras clips each replica's gradient (see the README)
        config = TrainConfig(epochs=2, batch_size=64, units=8, conv_filters=(), dropout=0.0,
                             val_records=("118",), pipeline="shards",
                             clipnorm=None if backend == "tensorflow" else 1.0)
        losses = {}
        for name in ("none", "mirrored"):
            set_seed(0)
            if name == "mirrored" and mirrored is None:
                mirrored = configure_distribution("mirrored", 2)  # jax: DataParallel
            dist = mirrored if name == "mirrored" else Distribution()
            (out / name).mkdir()
            report = train_beats(config, db, data_dir, out / name, quiet=True,
                                 distribution=dist)
            replicas = report["distribution"]["replicas"]
            assert replicas == (2 if name == "mirrored" else 1), replicas
            assert report["distribution"]["per_replica_batch"] == 64 // replicas
            losses[name] = report["history"]["loss"]
        print(json.dumps(losses))
        print("ok", backend)


    if __name__ == "__main__":  # data preparation starts worker processes
        main(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]))
""")


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_mirrored_over_two_devices_reaches_the_same_loss(backend, mitdb_dir, tmp_path):
    """tensorflow: MirroredStrategy over two logical CPU devices; jax: DataParallel over two
    host devices. Same global batch, same data order: the same losses."""
    import importlib.util

    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    script = tmp_path / "same_training.py"
    script.write_text(SAME_TRAINING)
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "KERAS_BACKEND": backend, "CUDA_VISIBLE_DEVICES": "-1",
           "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    result = subprocess.run([sys.executable, str(script), backend, str(mitdb_dir), str(out)],
                            capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert lines[-1] == f"ok {backend}"
    losses = json.loads(lines[-2])
    assert len(losses["none"]) == 2 and losses["none"][1] < losses["none"][0]
    np.testing.assert_allclose(losses["mirrored"], losses["none"], rtol=1e-4)


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _start_workers(mitdb_dir: Path, runs: Path, epochs: int, log_dir: Path, ports: list[int]
                   ) -> list[subprocess.Popen]:
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for i in range(len(ports)):
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": "-1", "KERAS_BACKEND": "tensorflow",
               "TF_CONFIG": json.dumps({"cluster": cluster,
                                        "task": {"type": "worker", "index": i}})}
        log = open(log_dir / f"worker{i}.log", "a")  # noqa: SIM115 - closed by the caller
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "ecgcap.train_ecg", "--data-dir", str(mitdb_dir),
             "--runs-dir", str(runs), "--name", "mw", "--distribute", "multi-worker",
             "--train-records", "101,106", "--val-records", "118", "--units", "8",
             "--batch-size", "64", "--epochs", str(epochs), "--patience", "9",
             "--device", "cpu"], stdout=log, stderr=subprocess.STDOUT, env=env))
    return procs


def _wait_all(procs: list[subprocess.Popen], log_dir: Path, timeout: float = 400) -> None:
    for i, proc in enumerate(procs):
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise
        log = (log_dir / f"worker{i}.log").read_text()
        assert code == 0, log[-3000:]


@pytest.mark.slow
def test_a_killed_worker_is_restarted_and_the_run_finishes_from_the_backup(mitdb_dir, tmp_path):
    """Two ``--distribute multi-worker`` processes (TF_CONFIG, 127.0.0.1): one is killed after
    epoch 1; workers whose backups disagree stop with one line; the same command restarted
    finishes the run from the backups, and only the chief's folder is left."""
    runs, epochs = tmp_path / "runs", 4
    procs = _start_workers(mitdb_dir, runs, epochs, tmp_path, _free_ports(2))
    backups = [runs / "mw" / "backup", runs / "mw.worker-1" / "backup"]

    def backed_up(folder: Path) -> bool:
        meta = folder / "training_metadata.json"
        try:
            return json.loads(meta.read_text()).get("epoch", 0) >= 1
        except (OSError, ValueError):  # not there yet, or being written
            return False

    deadline = time.time() + 400
    while time.time() < deadline and all(p.poll() is None for p in procs):
        if all(backed_up(b) for b in backups):  # both workers finished epoch 1
            break
        time.sleep(0.05)
    assert all(p.poll() is None for p in procs), "the run ended before a worker could be killed"
    procs[1].send_signal(signal.SIGKILL)  # the worker dies mid-run ...
    procs[1].wait()
    try:  # ... its peer cannot go on without it; a launcher restarts the job
        procs[0].wait(timeout=10)
    except subprocess.TimeoutExpired:
        procs[0].kill()
        procs[0].wait()
    assert (runs / "mw.worker-1" / "backup").is_dir()

    # backups that disagree (here: worker 1's made to claim one epoch more) stop both workers
    # with one line, instead of leaving them waiting on each other
    meta = runs / "mw.worker-1" / "backup" / "training_metadata.json"
    saved = meta.read_text()
    meta.write_text(json.dumps({**json.loads(saved), "epoch": json.loads(saved)["epoch"] + 1}))
    procs = _start_workers(mitdb_dir, runs, epochs, tmp_path, _free_ports(2))
    codes = [p.wait(timeout=300) for p in procs]
    assert codes == [2, 2], codes
    assert "the workers disagree on the epoch to resume from" in \
        (tmp_path / "worker0.log").read_text()
    meta.write_text(saved)

    procs = _start_workers(mitdb_dir, runs, epochs, tmp_path, _free_ports(2))  # same command
    _wait_all(procs, tmp_path)
    report = json.loads((runs / "mw" / "report.json").read_text())
    assert 1 <= report["resumed_from_epoch"] < epochs
    assert report["epochs_run"] == epochs
    assert all(len(v) == epochs for v in report["history"].values())
    assert report["records"]["train"] == ["101", "106"]
    assert report["distribution"] == {"strategy": "multi-worker", "replicas": 2, "workers": 2,
                                      "devices": report["distribution"]["devices"],
                                      "global_batch": 64, "per_replica_batch": 32}
    assert f"worker 1 finished after {epochs} epochs" in (tmp_path / "worker1.log").read_text()
    assert "macro-F1 (N, S, V, F)" in (tmp_path / "worker0.log").read_text()
    assert sorted(p.name for p in runs.iterdir()) == ["mw"]  # the other worker cleaned up
    assert sorted(p.name for p in (runs / "mw").iterdir()) == [  # backup removed at the end
        "best.keras", "confusion.png", "learning_curves.png", "model.keras", "report.json"]


def test_help_documents_the_strategies():
    result = run_module("ecgcap.train_ecg", "--help")
    text = " ".join(result.stdout.split())
    assert "--distribute {none,mirrored,multi-worker}" in text and "TF_CONFIG" in text


@pytest.mark.slow
def test_a_streamed_run_restarted_after_sigterm_matches_an_uninterrupted_one(mitdb_dir,
                                                                             tmp_path):
    """--pipeline shards on one device: SIGTERM after epoch 1, the same command again continues
    from the BackupAndRestore backup (weights, optimizer, dropout generators, the stream at
    its epoch) and ends where a run that was never stopped ends."""
    runs = tmp_path / "runs"

    def command(name: str) -> list[str]:
        return [sys.executable, "-m", "ecgcap.train_ecg", "--data-dir", str(mitdb_dir),
                "--runs-dir", str(runs), "--name", name, "--pipeline", "shards",
                "--train-records", "101,106", "--val-records", "118", "--units", "8",
                "--batch-size", "64", "--epochs", "3", "--patience", "9", "--device", "cpu",
                "-q"]

    proc = subprocess.Popen(command("cut"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    meta = runs / "cut" / "backup" / "training_metadata.json"
    deadline = time.time() + 400
    while time.time() < deadline and proc.poll() is None:
        try:
            if json.loads(meta.read_text()).get("epoch", 0) >= 1:
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-2000:]
    again = subprocess.run(command("cut"), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    straight = subprocess.run(command("straight"), capture_output=True, text=True, timeout=600)
    assert straight.returncode == 0, straight.stderr[-2000:]
    cut = json.loads((runs / "cut" / "report.json").read_text())
    whole = json.loads((runs / "straight" / "report.json").read_text())
    assert 1 <= cut["resumed_from_epoch"] < 3 and whole["resumed_from_epoch"] == 0
    for key, values in whole["history"].items():
        assert cut["history"][key] == pytest.approx(values, rel=1e-5), key
