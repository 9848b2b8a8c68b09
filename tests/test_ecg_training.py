"""Splits, class weights, and train_ecg -> classify_ecg -> score_ecg end to end on real mitdb."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import run_module
from ecgcap.ecg.databases import MITDB_DS1, MITDB_DS2, MITDB_PACED, get_database
from ecgcap.ecg.training import (
    MITDB_VALIDATION,
    TrainConfig,
    class_weights,
    random_beat_split,
    split_records,
)
from ecgcap.runtime.errors import EcgcapError


def test_de_chazal_split_lists():
    assert len(MITDB_DS1) == 22 and len(MITDB_DS2) == 22
    assert not set(MITDB_DS1) & set(MITDB_DS2)
    assert not set(MITDB_PACED) & (set(MITDB_DS1) | set(MITDB_DS2))
    assert len(set(MITDB_DS1) | set(MITDB_DS2) | set(MITDB_PACED)) == 48


def test_validation_is_a_patient_wise_hold_out_inside_ds1():
    parts = split_records(get_database("mitdb"), TrainConfig())
    assert parts["val"] == list(MITDB_VALIDATION)
    assert set(parts["val"]) <= set(MITDB_DS1) and not set(parts["val"]) & set(parts["train"])
    assert set(parts["train"]) | set(parts["val"]) == set(MITDB_DS1)
    assert parts["test"] == list(MITDB_DS2)
    with pytest.raises(EcgcapError, match="not in them: 100"):
        split_records(get_database("mitdb"), TrainConfig(val_records=("100",)))


def test_random_beat_split_uses_every_beat_once():
    idx = random_beat_split(1000, seed=3)
    allidx = np.concatenate(list(idx.values()))
    assert sorted(allidx.tolist()) == list(range(1000))
    assert len(idx["val"]) == 150 and len(idx["test"]) == 150


def test_class_weights():
    y = np.array([0] * 90 + [1] * 10)
    balanced = class_weights(y, 3, power=1.0)
    assert balanced[1] / balanced[0] == pytest.approx(9.0)
    assert balanced[2] == 0.0  # absent class
    assert sum(balanced[c] * (y == c).sum() for c in range(3)) == pytest.approx(100)
    assert class_weights(y, 3, power=0.5)[1] / class_weights(y, 3, power=0.5)[0] == \
        pytest.approx(3.0)
    assert class_weights(y, 2, power=0.0) == {0: 1.0, 1: 1.0}


def test_help_of_random_split_says_it_leaks_patients():
    result = run_module("ecgcap.train_ecg", "--help")
    assert "LEAKS PATIENTS" in " ".join(result.stdout.split())


def _as_saved_before_rr_seconds(path):
    """Rewrite a model file's settings as ecgcap wrote them before ``rr_seconds`` existed."""
    import zipfile

    from ecgcap.runtime.modelfile import INFO_NAME

    with zipfile.ZipFile(path) as zf:
        entries = {n: zf.read(n) for n in zf.namelist()}
    info = json.loads(entries[INFO_NAME])
    del info["beats"]["rr_seconds"]
    entries[INFO_NAME] = json.dumps(info).encode()
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)


@pytest.mark.slow
def test_train_resume_classify_and_score_end_to_end(mitdb_dir, tmp_path):
    common = ["--data-dir", str(mitdb_dir), "--runs-dir", str(tmp_path / "runs"), "--name", "r",
              "--units", "8", "--batch-size", "512", "--device", "cpu", "-q"]
    first = run_module("ecgcap.train_ecg", *common, "--epochs", "1")
    assert first.returncode == 0, first.stderr[-2000:]
    run = tmp_path / "runs" / "r"
    for name in ("model.keras", "best.keras", "checkpoint.keras", "report.json",
                 "confusion.png", "learning_curves.png"):
        assert (run / name).is_file(), name
    assert not [p for p in run.iterdir() if ".tmp" in p.name]
    report = json.loads((run / "report.json").read_text())
    assert report["epochs_run"] == 1 and report["records"]["test"] == sorted(MITDB_DS2)
    assert report["test"]["per_class"]["N"]["support"] == 44240  # DS2 N beats
    assert "macro-F1 (N, S, V, F)" in first.stdout

    again = run_module("ecgcap.train_ecg", *common, "--epochs", "1")
    assert again.returncode == 2 and "--overwrite" in again.stderr

    other = run_module("ecgcap.train_ecg", *common, "--epochs", "2", "--resume",
                       "--learning-rate", "0.01")        # refused before any beat is prepared
    assert other.returncode == 2 and other.stderr.strip().splitlines()[-1].endswith(
        "the run began with other options (learning_rate 0.001 -> 0.01); resume with the "
        "options it began with"), other.stderr[-2000:]

    _as_saved_before_rr_seconds(run / "checkpoint.keras")
    resumed = run_module("ecgcap.train_ecg", *common, "--epochs", "2", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    report = json.loads((run / "report.json").read_text())
    assert report["epochs_run"] == 2 and len(report["history"]["loss"]) == 2
    # a run begun before the ratio-only default keeps feeding the RR seconds it began with
    assert report["config"]["beats"]["rr_seconds"] is True

    model = str(run / "model.keras")
    out = run_module("ecgcap.classify_ecg", str(mitdb_dir / "100"), "--model", model,
                     "--format", "json", "-q")
    assert out.returncode == 0, out.stderr[-2000:]
    [result] = json.loads(out.stdout)
    assert result["record"] == "100" and result["positions"] == "atr"
    assert len(result["beats"]) > 2200
    assert set(result["beats"][0]) == {"sample", "label", "probabilities"}

    wf = run_module("ecgcap.classify_ecg", str(mitdb_dir / "100"), str(mitdb_dir / "103"),
                    "--model", model, "--format", "wfdb", "--annotator", "test",
                    "--out-dir", str(tmp_path / "ann"), "-q")
    assert wf.returncode == 0, wf.stderr[-2000:]
    assert (tmp_path / "ann" / "100.test").is_file()
    score = run_module("ecgcap.score_ecg", str(mitdb_dir / "100"), str(mitdb_dir / "103"),
                       "--annotator", "test", "--ann-dir", str(tmp_path / "ann"))
    assert score.returncode == 0, score.stderr[-2000:]
    assert "macro-F1" in score.stdout

    # an ensemble of a run with itself is that run: same DS2 figures, one loadable file
    from ecgcap.ecg.training import ensemble_runs

    ens = ensemble_runs([run, run], get_database("mitdb"), mitdb_dir, tmp_path / "ens")
    assert ens["test"]["confusion"] == report["test"]["confusion"]
    assert ens["member_seeds"] == [0, 0] and (tmp_path / "ens" / "model.keras").is_file()
    both = run_module("ecgcap.classify_ecg", str(mitdb_dir / "100"), "--model",
                      str(tmp_path / "ens" / "model.keras"), "--format", "json", "-q")
    assert both.returncode == 0, both.stderr[-2000:]
    assert [b["label"] for b in json.loads(both.stdout)[0]["beats"]] == \
        [b["label"] for b in result["beats"]]
    # only beats too close to a record's ends for a full window go unlabelled
    missed = int(score.stdout.split("reference beats missed ")[1].split(",")[0])
    assert missed <= 4


def test_classify_with_a_wrong_or_missing_model_is_one_line(mitdb_dir, tmp_path):
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"not a zip")
    for model, message in ((bad, "corrupt or truncated model file"),
                           (tmp_path / "none.keras", "no such model file")):
        out = run_module("ecgcap.classify_ecg", str(mitdb_dir / "100"), "--model", str(model))
        assert out.returncode == 2
        assert message in out.stderr and "Traceback" not in out.stderr


@pytest.mark.slow
@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
def test_interrupt_checkpoints_and_resume_finishes_the_run(signame, mitdb_dir, tmp_path):
    """SIGTERM (a scheduler) or SIGINT (Ctrl-C) after epoch 1: exit 130 with the last whole
    epoch checkpointed, nothing half-written; --resume finishes the run."""
    import signal
    import subprocess
    import sys
    import time

    runs = tmp_path / "runs"
    command = [sys.executable, "-m", "ecgcap.train_ecg", "--data-dir", str(mitdb_dir),
               "--runs-dir", str(runs), "--name", "s", "--train-records", "101,106",
               "--val-records", "118", "--units", "8", "--batch-size", "64", "--epochs", "3",
               "--device", "cpu", "-q"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    state = runs / "s" / "state.json"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        try:
            if json.loads(state.read_text())["epoch"] >= 1:
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    assert proc.poll() is None, "training ended before it could be interrupted"
    proc.send_signal(getattr(signal, signame))
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-2000:]
    assert "whole epochs are checkpointed" in err and "--resume" in err
    run = runs / "s"
    done = json.loads(state.read_text())["epoch"]
    assert 1 <= done < 3
    assert (run / "checkpoint.keras").is_file() and (run / "best.keras").is_file()
    assert not (run / "report.json").exists()
    assert not [p for p in run.iterdir() if ".tmp" in p.name]

    resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    report = json.loads((run / "report.json").read_text())
    assert report["epochs_run"] == 3 and len(report["history"]["loss"]) == 3
    assert report["records"]["train"] == ["101", "106"]
    if signame == "SIGTERM":  # the resumed run is the uninterrupted one, epoch for epoch
        straight = subprocess.run([*command[:command.index("--name") + 1], "straight",
                                   *command[command.index("--name") + 2:]],
                                  capture_output=True, text=True, timeout=600)
        assert straight.returncode == 0, straight.stderr[-2000:]
        a = json.loads((runs / "straight" / "report.json").read_text())
        assert a["history"].keys() == report["history"].keys()
        for key, values in a["history"].items():
            assert report["history"][key] == pytest.approx(values, rel=1e-5), key
        assert report["test"]["macro_f1"] == pytest.approx(a["test"]["macro_f1"], rel=1e-5)


def test_training_without_a_validation_part_keeps_the_last_epoch(mitdb_dir, tmp_path):
    """``--val-records none``: all training records are trained on for every epoch (no early
    stopping, even with patience 1), and the model is the last epoch's."""
    from dataclasses import replace

    from ecgcap.ecg.api import config_from_args, format_report
    from ecgcap.ecg.training import train_beats
    from ecgcap.runtime.modelfile import load_model
    from ecgcap.runtime.seed import set_seed
    from ecgcap.train_ecg import build_parser

    args = build_parser().parse_args(["--val-records", "none", "--epochs", "3"])
    assert config_from_args(args).val_records == ()
    mitdb = get_database("mitdb")
    db = replace(mitdb, split={**mitdb.split, "train": ("101", "106"), "test": ("118",)})
    config = replace(config_from_args(args), units=8, batch_size=128, conv_filters=(8,),
                     patience=1)
    set_seed(0)
    run = tmp_path / "run"
    run.mkdir()
    report = train_beats(config, db, mitdb_dir, run, quiet=True)
    assert report["val"] is None and report["test"]["n"] > 2000
    assert report["records"] == {"train": ["101", "106"], "test": ["118"]}
    assert set(report["beats"]) == {"train", "test"} and report["beats"]["train"] > 3000
    assert report["epochs_run"] == report["best_epoch"] == 3
    assert not [k for k in report["history"] if k.startswith("val_")]
    assert "no validation part: the last epoch" in format_report(report)
    last, _ = load_model(run / "checkpoint.keras", ("ecg-beats",))
    best, _ = load_model(run / "model.keras", ("ecg-beats",))
    x = {"beat": np.random.default_rng(0).normal(size=(4, 126, 2)).astype("float32"),
         "rr": np.ones((4, 9), "float32")}
    np.testing.assert_allclose(best.predict(x, verbose=0), last.predict(x, verbose=0))
    with pytest.raises(EcgcapError, match="begun without validation records"):
        train_beats(replace(config, val_records=("106",)), db, mitdb_dir, run, resume=True)
    for other in (["--split", "random-beats"], ["--pipeline", "shards"]):
        with pytest.raises(EcgcapError, match="inter-patient split, in memory"):
            config_from_args(build_parser().parse_args(["--val-records", "none", *other]))


def test_conv_filters_option_sets_the_front_end_of_either_task(tmp_path):
    from ecgcap.ecg.api import config_from_args, rhythm_config_from_args
    from ecgcap.ecg.recordings import RhythmConfig
    from ecgcap.ecg.rhythm_training import RhythmTrainConfig
    from ecgcap.ecg.training import TrainConfig
    from ecgcap.train_ecg import build_parser

    parse = build_parser().parse_args
    assert config_from_args(parse(["--conv-filters", "16, 8"])).conv_filters == (16, 8)
    assert rhythm_config_from_args(
        parse(["--db", "cinc2017", "--conv-filters", "4,4,8"])).conv_filters == (4, 4, 8)
    # left out: each task keeps its own default
    assert config_from_args(parse([])).conv_filters == TrainConfig().conv_filters
    assert (rhythm_config_from_args(parse(["--db", "cinc2017"])).conv_filters
            == RhythmTrainConfig().conv_filters)
    # recurrent layers: one for beats, two for rhythm unless --layers says otherwise
    assert config_from_args(parse([])).recurrent_layers == 1
    assert rhythm_config_from_args(parse(["--db", "cinc2017"])).recurrent_layers == 2
    assert rhythm_config_from_args(parse(["--db", "cinc2017", "--layers", "1"])
                                   ).recurrent_layers == 1
    # schedule: 30 epochs / patience 6 for beats, 45 / 45 (cosine to the end) for rhythm
    beats = config_from_args(parse([]))
    rhythm = rhythm_config_from_args(parse(["--db", "cinc2017"]))
    assert (beats.epochs, beats.patience) == (30, 6)
    assert (rhythm.epochs, rhythm.patience, rhythm.schedule) == (45, 45, "cosine")
    chosen = rhythm_config_from_args(
        parse(["--db", "cinc2017", "--epochs", "5", "--patience", "2"]))
    assert (chosen.epochs, chosen.patience) == (5, 2)
    for bad, phrase in [("32,,64", "not a comma-separated list"), ("32,0", "must be 1 or more"),
                        ("a", "not an integer")]:
        result = run_module("ecgcap.train_ecg", "--conv-filters", bad, "--runs-dir",
                            str(tmp_path / "r"), "--device", "cpu")
        assert result.returncode == 2 and phrase in result.stderr, result.stderr
        assert not (tmp_path / "r").exists()
    for args, phrase in [(["--db", "cinc2017", "--lr-patience", "-1"],
                          "--lr-patience -1: must be 0"),
                         (["--lr-patience", "2"],
                          "--crop-seconds and --ema apply to cinc2017 only"),
                         (["--db", "cinc2017", "--ema", "1"], "--ema 1.0: must be in"),
                         (["--db", "cinc2017", "--crop-seconds", "4"],
                          "--crop-seconds 4: must be at least 5 s"),
                         (["--db", "cinc2017", "--lr-patience", "2"],
                          "--lr-patience 2: applies to --schedule plateau only")]:
        with pytest.raises(EcgcapError, match=phrase):
            parsed = parse(args)
            (rhythm_config_from_args if parsed.db == "cinc2017" else config_from_args)(parsed)
    constant = rhythm_config_from_args(parse(["--db", "cinc2017", "--schedule", "plateau",
                                              "--lr-patience", "0"]))
    assert (constant.schedule, constant.lr_patience) == ("plateau", 0)
    # the cosine schedule runs to its end whatever --epochs says, unless --patience is given
    longer = rhythm_config_from_args(parse(["--db", "cinc2017", "--epochs", "60"]))
    assert (longer.epochs, longer.patience) == (60, 60)
    for bad in ("inf", "nan", "0"):
        with pytest.raises(SystemExit):
            parse(["--db", "cinc2017", "--crop-seconds", bad])
    short = rhythm_config_from_args(parse(["--db", "cinc2017", "--crop-seconds", "20"]))
    assert (short.rhythm.crop, short.rhythm.stride, short.rhythm.fs) == (3000, 1500, 150.0)
    assert short.rhythm.key() == RhythmConfig().key()     # the prepared-recording cache is shared
