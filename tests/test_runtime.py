"""The shared runtime: errors, data location, run folders, atomic files, devices, seeds."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ecgcap.runtime.cli import tidy_on_failure
from ecgcap.runtime.errors import EXIT_FAILURE, EXIT_USAGE, EcgcapError
from ecgcap.runtime.files import atomic_path, atomic_write_json
from ecgcap.runtime.paths import find_dataset, make_run_dir, replaced_path, resolve_data_dir


def test_error_names_the_input_and_carries_its_exit_code():
    err = EcgcapError("no such directory", input="--data-dir /x")
    assert str(err) == "--data-dir /x: no such directory"
    assert err.exit_code == EXIT_USAGE
    assert EcgcapError("boom", exit_code=EXIT_FAILURE).exit_code == 1


def test_data_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv("ECGCAP_DATA", raising=False)
    assert str(resolve_data_dir()) == "data"
    monkeypatch.setenv("ECGCAP_DATA", str(tmp_path))
    assert resolve_data_dir() == tmp_path
    other = tmp_path / "other"
    other.mkdir()
    assert resolve_data_dir(other) == other  # the option wins over the environment
    with pytest.raises(EcgcapError, match="--data-dir .*nowhere: no such directory"):
        resolve_data_dir(tmp_path / "nowhere")
    monkeypatch.setenv("ECGCAP_DATA", str(tmp_path / "gone"))
    with pytest.raises(EcgcapError, match="ECGCAP_DATA"):
        resolve_data_dir()


def test_find_dataset_accepts_the_root_or_the_dataset_folder(tmp_path):
    (tmp_path / "mitdb").mkdir()
    (tmp_path / "mitdb" / "RECORDS").write_text("100\n")
    assert find_dataset("mitdb", "RECORDS", tmp_path) == tmp_path / "mitdb"
    assert find_dataset("mitdb", "RECORDS", tmp_path / "mitdb") == tmp_path / "mitdb"
    with pytest.raises(EcgcapError, match="no cinc2017 dataset"):
        find_dataset("cinc2017", "REFERENCE.csv", tmp_path)


def test_run_folder_is_refused_when_it_exists_unless_overwrite_or_resume(tmp_path):
    run = make_run_dir("a", tmp_path)
    (run / "model.keras").write_text("x")
    with pytest.raises(EcgcapError, match="--overwrite"):
        make_run_dir("a", tmp_path)
    assert make_run_dir("a", tmp_path, resume=True) == run
    assert (run / "model.keras").exists()
    make_run_dir("a", tmp_path, overwrite=True)
    assert not (run / "model.keras").exists()
    (run / "model.keras").write_text("x")
    assert make_run_dir("a", tmp_path, overwrite=True, keep_replaced=True) == run
    assert not any(run.iterdir())
    assert (replaced_path(run) / "model.keras").read_text() == "x"
    with pytest.raises(EcgcapError, match="no run folder to resume"):
        make_run_dir("b", tmp_path, resume=True)
    (tmp_path / "file").write_text("")
    with pytest.raises(EcgcapError, match="is a file"):
        make_run_dir("x", tmp_path / "file")
    with pytest.raises(EcgcapError, match="run names"):
        make_run_dir("../escape", tmp_path)


def _fail(how: str) -> None:
    import os
    import signal

    if how == "SIGTERM":  # a scheduler stopping the call while it prepares data
        os.kill(os.getpid(), signal.SIGTERM)
    raise {"bad data": ValueError, "Ctrl-C": KeyboardInterrupt}.get(how, RuntimeError)(how)


@pytest.mark.parametrize("how", ["bad data", "Ctrl-C", "SIGTERM"])
def test_overwritten_run_comes_back_when_the_new_run_fails_before_writing(tmp_path, how):
    run = make_run_dir("a", tmp_path)
    (run / "model.keras").write_text("old")
    expected = ValueError if how == "bad data" else EcgcapError
    with pytest.raises(expected) as caught, tidy_on_failure(tmp_path) as made:
        made.append(make_run_dir("a", tmp_path, overwrite=True, keep_replaced=True))
        _fail(how)
    if how != "bad data":  # not "continue with --resume": there is nothing new to resume
        assert caught.value.exit_code == 130 and "earlier run is back" in str(caught.value)
    assert [p.name for p in tmp_path.iterdir()] == ["a"]
    assert (run / "model.keras").read_text() == "old"
    # once the new run has written something (a checkpoint to resume), the old one is gone
    with pytest.raises((ValueError, KeyboardInterrupt)), tidy_on_failure(tmp_path) as made:
        made.append(make_run_dir("a", tmp_path, overwrite=True, keep_replaced=True))
        (run / "checkpoint.keras").write_text("new")
        _fail(how)
    assert [p.name for p in tmp_path.iterdir()] == ["a"]
    assert [p.name for p in run.iterdir()] == ["checkpoint.keras"]
    with tidy_on_failure(tmp_path) as made:
        made.append(make_run_dir("a", tmp_path, overwrite=True, keep_replaced=True))
        (run / "model.keras").write_text("newer")
    assert [p.name for p in tmp_path.iterdir()] == ["a"]


def test_training_seconds_add_up_over_the_sessions_of_a_resumed_run(tmp_path):
    import keras

    from ecgcap.runtime.checkpoint import Checkpoint, fit_resumable

    x, y = np.ones((8, 2), np.float32), np.zeros((8, 1), np.float32)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    first = Checkpoint(tmp_path, {}, monitor="loss", save_models=False)
    fit_resumable(model, x, first, tmp_path, epochs=2, initial_epoch=0, y=y, callbacks=[first],
                  verbose=0)
    state = json.loads((tmp_path / "state.json").read_text())
    assert len(state["epoch_seconds"]) == 2
    before = list(state["epoch_seconds"])
    second = Checkpoint(tmp_path, {}, monitor="loss", state=state, save_models=False)
    total = fit_resumable(model, x, second, tmp_path, epochs=3, initial_epoch=2, y=y,
                          callbacks=[second], verbose=0)
    seconds = json.loads((tmp_path / "state.json").read_text())["epoch_seconds"]
    assert len(seconds) == 3 and seconds[:2] == before
    assert total == pytest.approx(sum(seconds))
    older = {k: v for k, v in second.state.items() if k != "epoch_seconds"}  # older file
    assert Checkpoint(tmp_path, {}, state=older).trained_seconds is None


def test_a_run_is_resumed_only_under_the_options_it_began_with(tmp_path):
    from ecgcap.runtime.checkpoint import Checkpoint, check_resume_config, check_same_config

    config = {"epochs": 2, "units": 64, "filters": (32, 32), "rhythm": {"crop": 4500}}
    first = Checkpoint(tmp_path, {}, config=config)
    assert first.state["config"] == {"epochs": 2, "units": 64, "filters": [32, 32],
                                     "rhythm": {"crop": 4500}}           # as state.json has it
    atomic_write_json(tmp_path / "state.json", first.state)
    # how long a run trains may change; a tuple and its JSON list are the same option; an
    # option added since the run began (or dropped) is not compared; no state.json: no check
    check_resume_config(tmp_path / "state.json", {**config, "epochs": 5, "new": 1})
    check_resume_config(tmp_path / "none" / "state.json", {})
    check_same_config(None, config, tmp_path)           # a run begun before configs were kept
    with pytest.raises(EcgcapError) as err:
        check_resume_config([tmp_path / "none.json", tmp_path / "state.json"],
                            {**config, "units": 128, "rhythm": {"crop": 3000}})
    assert err.value.exit_code == EXIT_USAGE and err.value.input == str(tmp_path)
    assert err.value.message == ("the run began with other options (rhythm.crop 4500 -> 3000; "
                                 "units 64 -> 128); resume with the options it began with")
    with pytest.raises(EcgcapError, match=r"\(epochs 2 -> 5\)"):
        check_resume_config(tmp_path / "state.json", {**config, "epochs": 5},
                            may_change=frozenset())
    # a run begun before state.json kept its config: the finished run's report.json has it
    older = tmp_path / "older"
    older.mkdir()
    atomic_write_json(older / "state.json", {"epoch": 2})
    check_resume_config(older / "state.json", {**config, "epochs": 5}, may_change=frozenset())
    atomic_write_json(older / "report.json", {"config": config})
    with pytest.raises(EcgcapError, match=r"\(epochs 2 -> 5\)") as err:
        check_resume_config(older / "state.json", {**config, "epochs": 5},
                            may_change=frozenset())
    assert err.value.input == str(older)
    # an option added since: compared with what runs did before it existed, if that is known
    check_same_config({"units": 64}, {"units": 64, "schedule": "cosine"}, tmp_path)
    with pytest.raises(EcgcapError, match=r"\(schedule 'plateau' -> 'cosine'\)"):
        check_same_config({"units": 64}, {"units": 64, "schedule": "cosine"}, tmp_path,
                          legacy={"schedule": "plateau"})


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "report.json"
    atomic_write_json(target, {"a": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash while writing")
    assert json.loads(target.read_text()) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_atomic_path_keeps_the_suffix_keras_needs(tmp_path):
    with atomic_path(tmp_path / "m.keras") as tmp:
        assert tmp.suffix == ".keras" and tmp.parent == tmp_path
        tmp.write_text("ok")
    assert (tmp_path / "m.keras").read_text() == "ok"


def test_device_cpu_is_reported_and_gpu_without_one_is_a_clear_error():
    from ecgcap.runtime.device import configure_device, list_gpus

    line = configure_device("cpu")
    assert "keras backend" in line and "CPU only" in line and "threads" in line
    if list_gpus():
        pytest.skip("this machine has a GPU")
    with pytest.raises(EcgcapError, match="--device gpu: no GPU"):
        configure_device("gpu")
    with pytest.raises(EcgcapError, match="unknown device"):
        configure_device("tpu")


def _fit_once(seed: int) -> np.ndarray:
    import keras

    from ecgcap.runtime.seed import set_seed

    set_seed(seed)
    x = np.random.default_rng(0).normal(size=(64, 8)).astype("float32")
    y = (x[:, 0] > 0).astype("int64")
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dropout(0.3), keras.layers.Dense(2, "softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=2, batch_size=16, shuffle=True, verbose=0)
    return model.predict(x, verbose=0)


def test_same_seed_same_numbers_on_cpu():
    a, b = _fit_once(7), _fit_once(7)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, _fit_once(8))


def test_shuffled_batches_depend_on_seed_and_epoch_only():
    """A run resumed at epoch k (batches built with epoch=k) sees the batches of an
    uninterrupted run at epoch k; every example once per epoch; epochs differ."""
    from ecgcap.runtime.batches import ShuffledBatches

    def epoch_of(batches: ShuffledBatches) -> list[int]:
        return np.concatenate([batches.batch_indices(i) for i in range(len(batches))]).tolist()

    straight = ShuffledBatches(23, 5, seed=7)
    orders = []
    for epoch in range(3):
        straight.callback().on_epoch_begin(epoch)
        orders.append(epoch_of(straight))
        assert sorted(orders[-1]) == list(range(23)) and len(straight) == 5
    assert orders[0] != orders[1] != orders[2]
    assert epoch_of(ShuffledBatches(23, 5, seed=7, epoch=2)) == orders[2]
    straight.on_epoch_end()  # Keras' own count, without the callback, moves on as well
    assert epoch_of(straight) == epoch_of(ShuffledBatches(23, 5, seed=7, epoch=3))
    assert epoch_of(ShuffledBatches(23, 5, seed=8)) != orders[0]


def test_cached_arrays_answer_only_for_their_source(tmp_path):
    from ecgcap.runtime.files import cached_arrays

    calls = []

    def make():
        calls.append(1)
        return {"x": np.arange(3) + len(calls)}

    path = tmp_path / "c" / "r.npz"
    first = cached_arrays(path, "a", make)
    assert cached_arrays(path, "a", make)["x"].tolist() == first["x"].tolist() and len(calls) == 1
    assert cached_arrays(path, "b", make)["x"].tolist() == [2, 3, 4]  # another source: made again
    path.write_bytes(b"damaged")
    assert cached_arrays(path, "b", make)["x"].tolist() == [3, 4, 5] and len(calls) == 3
    assert cached_arrays(path, "b", make)["x"].tolist() == [3, 4, 5] and len(calls) == 3
    assert not [p for p in path.parent.iterdir() if p != path]  # no temporary files left


def test_run_folder_that_is_not_writable_is_refused(tmp_path, monkeypatch):
    """(Tests run as root here, where permissions never refuse, so the check is made to fail.)"""
    import ecgcap.runtime.paths as paths

    monkeypatch.setattr(paths.os, "access", lambda *a, **k: False)
    with pytest.raises(EcgcapError, match="run folder is not writable") as err:
        make_run_dir("r", tmp_path / "runs")
    assert err.value.exit_code == EXIT_USAGE


def test_shipped_model_file_leaves_the_optimizer_out(tmp_path):
    """``without_optimizer``: same predictions, no Adam moments in the file (a third the size)."""
    import keras

    from ecgcap.runtime.modelfile import load_model, save_model, without_optimizer

    keras.utils.set_random_seed(0)
    inputs = keras.Input((8,))
    hidden = keras.layers.Dense(256, activation="relu")(inputs)
    hidden = keras.layers.Dense(256, activation="relu")(hidden)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(hidden))
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    x, y = np.random.default_rng(0).standard_normal((32, 8)), np.arange(32) % 3
    model.fit(x, y, epochs=1, verbose=0)
    save_model(model, tmp_path / "checkpoint.keras", {"kind": "test"})
    save_model(without_optimizer(model), tmp_path / "model.keras", {"kind": "test"})
    shipped, info = load_model(tmp_path / "model.keras", ("test",))
    assert info == {"kind": "test"} and getattr(shipped, "optimizer", None) is None
    np.testing.assert_array_equal(shipped.predict(x, verbose=0), model.predict(x, verbose=0))
    sizes = {name: (tmp_path / name).stat().st_size for name in ("model.keras", "checkpoint.keras")}
    assert sizes["model.keras"] < 0.5 * sizes["checkpoint.keras"], sizes
