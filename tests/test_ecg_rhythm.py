"""Rhythm task end to end on real CinC 2017 records: splits, train_ecg --folds, classify_ecg."""

from __future__ import annotations

import json
import os
from collections import Counter

import numpy as np
import pytest

from conftest import run_module
from ecgcap.ecg import io
from ecgcap.ecg.rhythm_training import RhythmTrainConfig, stratified_splits
from ecgcap.runtime.errors import EcgcapError


@pytest.mark.parametrize("folds", [0, 5])
def test_stratified_splits_are_disjoint_stratified_and_fixed(folds):
    labels = np.array(["N"] * 50 + ["A"] * 15 + ["O"] * 25 + ["~"] * 10)
    config = RhythmTrainConfig(folds=folds)
    splits = stratified_splits(labels, config)
    assert len(splits) == max(folds, 1)
    for s in splits:
        parts = [set(s[k].tolist()) for k in ("train", "val", "test")]
        assert not parts[0] & parts[1] and not parts[0] & parts[2] and not parts[1] & parts[2]
        assert parts[0] | parts[1] | parts[2] == set(range(100))
        assert set(labels[s["val"]]) == {"N", "A", "O", "~"}   # every class validated
    if folds:  # each record is tested exactly once over the folds
        tested = np.concatenate([s["test"] for s in splits])
        assert sorted(tested.tolist()) == list(range(100))
        assert Counter(labels[splits[0]["test"]]) == Counter(N=10, A=3, O=5, **{"~": 2})
    again = stratified_splits(labels, config)
    assert all(np.array_equal(a[k], b[k]) for a, b in zip(splits, again, strict=True)
               for k in a)


def test_one_fold_is_refused():
    with pytest.raises(EcgcapError, match="at least 2 folds"):
        stratified_splits(np.array(["N", "A"] * 10), RhythmTrainConfig(folds=1))


@pytest.fixture(scope="module")
def small_cinc2017(cinc2017_dir, tmp_path_factory):
    """A local WFDB folder of 40 real CinC 2017 records (10 per label), linked, not copied."""
    labels = io.read_reference(cinc2017_dir / "REFERENCE.csv")
    chosen = [r for c in "NAO~" for r in sorted(n for n, lab in labels.items() if lab == c)[:10]]
    folder = tmp_path_factory.mktemp("data") / "cinc2017"
    folder.mkdir()
    for r in chosen:
        for ext in (".hea", ".mat"):
            os.symlink((cinc2017_dir / f"{r}{ext}").resolve(), folder / f"{r}{ext}")
    (folder / "RECORDS").write_text("\n".join(chosen) + "\n")
    (folder / "REFERENCE.csv").write_text("".join(f"{r},{labels[r]}\n" for r in chosen))
    return folder


@pytest.mark.slow
def test_train_cross_validate_resume_and_classify(small_cinc2017, tmp_path):
    runs = tmp_path / "runs"
    args = ["--db", "cinc2017", "--data-dir", str(small_cinc2017), "--folds", "2",
            "--epochs", "2", "--runs-dir", str(runs), "--name", "cv", "--device", "cpu"]
    first = run_module("ecgcap.train_ecg", *args, "--log-gradients")
    assert first.returncode == 0, first.stderr[-2000:]
    assert "challenge score (N, A, O)" in first.stdout and "test challenge score per fold" \
        in first.stdout
    run = runs / "cv"
    report = json.loads((run / "report.json").read_text())
    assert set(report["folds"]) == {"1", "2"} and report["test"]["n"] == 40
    for k in ("1", "2"):
        fold = json.loads((run / f"fold{k}" / "report.json").read_text())
        assert fold["epochs_run"] == 2
        # the default schedule: half a cosine from the start to 1/16 of it at the last epoch
        assert fold["history"]["learning_rate"] == pytest.approx([1e-3, 1e-3 / 16], rel=1e-5)
        grads = fold["history"]["grad_norm/total"]            # --log-gradients
        assert len(grads) == 2 and all(g > 0 for g in grads)
        assert "grad_norm/bilstm1" in fold["history"]
        assert not set(fold["records"]["test"]) & set(fold["records"]["train"] +
                                                        fold["records"]["val"])
    assert (run / "model.keras").is_file() and (run / "confusion.png").is_file()

    # an interrupted second fold is finished from its checkpoint (without --log-gradients:
    # what a run logs may change); the finished first fold is reused
    (run / "fold2" / "report.json").unlink()
    stamp = (run / "fold1" / "report.json").stat().st_mtime_ns
    resume = [*args[:-6], "--runs-dir", str(runs), "--name", "cv", "--device", "cpu", "--resume"]
    resumed = run_module("ecgcap.train_ecg", *resume, "--epochs", "2")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    fold2 = json.loads((run / "fold2" / "report.json").read_text())
    assert fold2["epochs_run"] == 2 and len(fold2["history"]["loss"]) == 2
    assert (run / "fold1" / "report.json").stat().st_mtime_ns == stamp  # over: reused

    # a checkpoint is never continued under other options: not with more epochs under the
    # cosine schedule (its learning rates follow --epochs), nor other crops. A run from before
    # state.json kept its options is checked against a finished fold's report.json; with no
    # finished fold, it is still refused another model (one layer)
    (run / "fold2" / "report.json").unlink()
    before = (run / "fold2" / "checkpoint.keras").read_bytes()
    hidden = run / "fold1" / "report.hidden"
    for extra, older, problem in (
            (["--epochs", "3"], False, "the run began with other options (epochs 2 -> 3); "
                                       "resume with the options it began with"),
            (["--epochs", "2", "--crop-seconds", "20"], False,
             "(rhythm.crop_seconds 30.0 -> 20.0; rhythm.stride_seconds 15.0 -> 10.0); resume "
             "with the options it began with"),
            (["--epochs", "3"], True, "fold1: the run began with other options (epochs 2 -> 3); "
                                      "resume with the options it began with"),
            (["--epochs", "2", "--layers", "1"], True,
             "the checkpoint's model differs from the one these options build; resume with the "
             "options the run began with (--layers, --units, --conv-filters, ...)")):
        for state_file in run.glob("fold*/state.json") if older else ():
            state = json.loads(state_file.read_text())
            state_file.write_text(json.dumps({k: v for k, v in state.items() if k != "config"}))
        if "--layers" in extra:
            (run / "fold1" / "report.json").rename(hidden)
        other = run_module("ecgcap.train_ecg", *resume, *extra)
        if hidden.exists():
            hidden.rename(run / "fold1" / "report.json")
        assert other.returncode == 2, other.stderr[-2000:]
        assert other.stderr.strip().splitlines()[-1].endswith(problem), other.stderr
        assert "--layers" in extra or "fold 2 of 2" not in other.stdout  # before any work
        assert (run / "fold2" / "checkpoint.keras").read_bytes() == before
        assert not (run / "fold2" / "report.json").exists()
    resumed = run_module("ecgcap.train_ecg", *resume, "--epochs", "2")
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    records = [str(small_cinc2017 / r) for r in ("A00001", io.list_records(small_cinc2017)[-1])]
    out = run_module("ecgcap.classify_ecg", *records, "--model", str(run / "model.keras"),
                     "--format", "json", "--device", "cpu")
    assert out.returncode == 0, out.stderr[-2000:]
    results = json.loads(out.stdout)
    assert [r["record"] for r in results] == [os.path.basename(r) for r in records]
    for r in results:
        assert r["label"] in "NAO~" and sum(r["probabilities"].values()) == pytest.approx(1, 1e-3)
        assert r["label"] == max(r["probabilities"], key=r["probabilities"].get)
    csv = run_module("ecgcap.classify_ecg", records[0], "--model", str(run / "model.keras"),
                     "--format", "csv", "--device", "cpu")
    assert csv.stdout.splitlines()[0] == "record,label,p_N,p_A,p_O,p_~"
    wfdb_fmt = run_module("ecgcap.classify_ecg", records[0], "--model",
                          str(run / "model.keras"), "--format", "wfdb", "--device", "cpu")
    assert wfdb_fmt.returncode == 2 and "rhythm model labels whole records" in wfdb_fmt.stderr

    # an ensemble of a run with itself is that run, fold by fold, in one loadable file per fold
    from ecgcap.ecg.databases import get_database
    from ecgcap.ecg.rhythm_training import ensemble_rhythm_runs

    ens = ensemble_rhythm_runs([run, run], get_database("cinc2017"), small_cinc2017,
                               tmp_path / "ens")
    report = json.loads((run / "report.json").read_text())
    assert ens["member_seeds"] == [0, 0] and ens["best_fold"] == report["best_fold"]
    for k, fold in report["folds"].items():
        assert ens["folds"][k]["test_score"] == pytest.approx(fold["test_score"], abs=1e-6)
        assert ens["folds"][k]["val_score"] == pytest.approx(fold["val_score"], abs=1e-6)
    assert ens["test"]["confusion"] == report["test"]["confusion"]
    both = run_module("ecgcap.classify_ecg", records[0], "--model",
                      str(tmp_path / "ens" / "model.keras"), "--format", "json", "--device", "cpu")
    assert both.returncode == 0, both.stderr[-2000:]
    assert json.loads(both.stdout)[0]["probabilities"] == results[0]["probabilities"]
    with pytest.raises(EcgcapError, match="finished k-fold runs"):
        ensemble_rhythm_runs([run, run / "fold1"], get_database("cinc2017"), small_cinc2017,
                             tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_rhythm_options_are_checked(small_cinc2017, mitdb_dir, tmp_path):
    bad = run_module("ecgcap.train_ecg", "--db", "cinc2017", "--data-dir", str(small_cinc2017),
                     "--fold", "2", "--runs-dir", str(tmp_path))
    assert bad.returncode == 2 and "--fold needs --folds" in bad.stderr
    assert not any(tmp_path.iterdir())                      # nothing written
    (tmp_path / "empty").mkdir()
    resume = run_module("ecgcap.train_ecg", "--db", "cinc2017", "--data-dir",
                        str(small_cinc2017), "--runs-dir", str(tmp_path), "--name", "empty",
                        "--resume")
    assert resume.returncode == 2 and "has no checkpoint" in resume.stderr
    assert not any((tmp_path / "empty").iterdir())
    beats = run_module("ecgcap.train_ecg", "--db", "mitdb", "--folds", "5",
                       "--runs-dir", str(tmp_path))
    assert beats.returncode == 2 and "apply to cinc2017 only" in beats.stderr
    resume = run_module("ecgcap.train_ecg", "--db", "mitdb", "--data-dir", str(mitdb_dir),
                        "--runs-dir", str(tmp_path), "--name", "empty", "--resume")
    assert resume.returncode == 2 and "has no checkpoint" in resume.stderr
    assert not any((tmp_path / "empty").iterdir())
    fold = run_module("ecgcap.train_ecg", "--db", "cinc2017", "--data-dir", str(tmp_path / "x"),
                      "--folds", "2", "--fold", "3", "--runs-dir", str(tmp_path))
    assert fold.returncode == 2 and "--fold 3: fold must be between 1 and 2" in fold.stderr
    (tmp_path / "taken" / "x").mkdir(parents=True)
    for db in ("mitdb", "cinc2017"):  # the run folder is checked before the data is looked for
        taken = run_module("ecgcap.train_ecg", "--db", db, "--data-dir", str(tmp_path / "none"),
                           "--runs-dir", str(tmp_path), "--name", "taken")
        assert taken.returncode == 2, taken.stderr
        assert taken.stderr.strip().endswith("run folder exists; pass --overwrite to replace "
                                             "it or --resume to continue it"), taken.stderr


def test_shipped_rhythm_model_labels_held_out_real_records(cinc2017_dir):
    """The shipped model on records of its own test fold (never seen in training)."""
    from ecgcap.ecg.inference import SHIPPED

    report = json.loads(SHIPPED["rhythm"].with_suffix(".report.json").read_text())
    fold = report["best_fold"]
    labels = io.read_reference(cinc2017_dir / "REFERENCE.csv")
    held_out = report["fold_records"][str(fold)]["test"]
    chosen = [r for c in "NA" for r in [r for r in held_out if labels[r] == c][:6]]
    out = run_module("ecgcap.classify_ecg", *(str(cinc2017_dir / r) for r in chosen),
                     "--task", "rhythm", "--format", "json", "--device", "cpu")
    assert out.returncode == 0, out.stderr[-2000:]
    results = json.loads(out.stdout)
    assert [r["record"] for r in results] == chosen
    right = sum(r["label"] == labels[r["record"]] for r in results)
    assert right >= 9, [(r["record"], labels[r["record"]], r["label"]) for r in results]


@pytest.mark.slow
def test_rhythm_trains_mirrored_over_two_logical_devices_from_shards(small_cinc2017, tmp_path):
    runs = tmp_path / "runs"
    result = run_module("ecgcap.train_ecg", "--db", "cinc2017", "--data-dir", str(small_cinc2017),
                        "--folds", "2", "--fold", "2", "--epochs", "2", "--units", "8",
                        "--batch-size", "8", "--distribute", "mirrored", "--replicas", "2",
                        "--ema", "0.9", "--runs-dir", str(runs), "--name", "m", "--device", "cpu")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "global batch 8 = 2 x 4 per replica" in result.stderr
    fold = json.loads((runs / "m" / "fold2" / "report.json").read_text())
    assert fold["distribution"]["replicas"] == 2 and fold["epochs_run"] == 2
    assert fold["test"]["n"] == 20 and len(fold["history"]["val_score"]) == 2
    # the saved model is the weight average that was validated and chosen (--ema)
    assert fold["config"]["ema_momentum"] == 0.9
    chosen = fold["history"]["val_score"][fold["best_epoch"] - 1]
    assert fold["val"]["score"] == pytest.approx(chosen)
    assert not set(fold["records"]["test"]) & set(fold["records"]["train"])
    top = json.loads((runs / "m" / "report.json").read_text())
    assert set(top["folds"]) == {"2"} and (runs / "m" / "model.keras").is_file()
    assert not (runs / "m" / "fold2" / "backup").exists()


def test_learning_rate_halves_after_epochs_without_a_better_validation_score():
    import keras

    from ecgcap.ecg.rhythm_training import lr_schedule

    assert lr_schedule(RhythmTrainConfig(schedule="plateau", lr_patience=0)) == []
    (plateau,) = lr_schedule(RhythmTrainConfig(schedule="plateau", lr_patience=2,
                                               learning_rate=1e-3))
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    plateau.set_model(model)
    plateau.on_train_begin()
    rates = []
    for epoch, score in enumerate([0.5, 0.6, 0.6, 0.55, 0.7, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6]):
        plateau.on_epoch_end(epoch, {"val_score": score})
        rates.append(float(model.optimizer.learning_rate.numpy()))
    # halved after two epochs without a better score; never below 1/16 of the start
    assert rates[:7] == pytest.approx([1e-3, 1e-3, 1e-3, 5e-4, 5e-4, 5e-4, 2.5e-4])
    assert rates[-1] == pytest.approx(1e-3 / 16) and min(rates) >= 1e-3 / 16 - 1e-12


def test_cosine_schedule_falls_from_the_start_to_a_sixteenth_at_the_last_epoch():
    import keras

    from ecgcap.ecg.rhythm_training import cosine_learning_rate, lr_schedule

    config = RhythmTrainConfig(schedule="cosine", epochs=5, learning_rate=1e-3, lr_patience=2)
    (scheduler,) = lr_schedule(config)
    assert isinstance(scheduler, keras.callbacks.LearningRateScheduler)
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    scheduler.set_model(model)
    rates = []
    for epoch in range(6):              # whatever the validation score does
        scheduler.on_epoch_begin(epoch)
        rates.append(float(model.optimizer.learning_rate.numpy()))
    # by hand: 1/16 + 15/16 * (1 + cos(pi * e / 4)) / 2, times 1e-3
    half = 1 / 16 + 15 / 16 * 0.5
    assert rates == pytest.approx([1e-3, (1 / 16 + 15 / 16 * (1 + 0.5 ** 0.5) / 2) * 1e-3,
                                   half * 1e-3, (1 / 16 + 15 / 16 * (1 - 0.5 ** 0.5) / 2) * 1e-3,
                                   1e-3 / 16, 1e-3 / 16], rel=1e-6)
    assert cosine_learning_rate(0, 1, 2.0) == 2.0
    with pytest.raises(EcgcapError, match="--schedule step: unknown schedule"):
        lr_schedule(RhythmTrainConfig(schedule="step"))


def test_weight_average_is_what_the_epoch_end_callbacks_see_and_training_continues_raw():
    import keras

    from ecgcap.ecg.rhythm_training import ema_swap, make_optimizer

    assert ema_swap(RhythmTrainConfig(ema_momentum=0.0)) == []
    assert not make_optimizer(RhythmTrainConfig(ema_momentum=0.0)).use_ema
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(20, 3)).astype("float32"), rng.normal(size=(20, 1)).astype("float32")

    class Record(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.batch_end, self.epoch_begin, self.epoch_end = [], [], []

        def on_train_batch_end(self, batch, logs=None):
            self.batch_end.append(self.model.get_weights()[0].copy())

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch_begin.append(self.model.get_weights()[0].copy())

        def on_epoch_end(self, epoch, logs=None):
            self.epoch_end.append(self.model.get_weights()[0].copy())

    def fit(momentum: float) -> Record:
        keras.utils.set_random_seed(1)
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
        config = RhythmTrainConfig(ema_momentum=momentum, learning_rate=0.1)
        model.compile(optimizer=make_optimizer(config), loss="mse")
        record = Record()
        model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0,
                  callbacks=[*ema_swap(config), record])
        return record

    raw, averaged = fit(0.0), fit(0.9)
    # the raw weights follow the same path with or without the average (5 steps per epoch)
    np.testing.assert_allclose(averaged.batch_end, raw.batch_end, rtol=1e-5, atol=1e-6)
    ema = raw.batch_end[0]              # Keras starts the average at the first step's weights
    for w in raw.batch_end[1:5]:
        ema = 0.9 * ema + 0.1 * w
    np.testing.assert_allclose(averaged.epoch_end[0], ema, rtol=1e-5, atol=1e-6)
    assert not np.allclose(averaged.epoch_end[0], raw.epoch_end[0], atol=1e-3)
    np.testing.assert_allclose(averaged.epoch_begin[1], raw.batch_end[4], rtol=1e-5, atol=1e-6)
