"""End to end on real RSICD images: train_caption (with resume), caption, evaluate_caption."""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import run_module

TINY = ["--image-size", "32", "--encoder-filters", "8,16", "--units", "16", "--embed-dim", "8",
        "--batch-size", "8", "--min-count", "1", "--max-length", "12", "-q"]


@pytest.fixture(scope="module")
def karpathy(rsicd_dir, tmp_path_factory):
    """A Karpathy-style dataset_*.json over 48 real RSICD images of three scenes."""
    from ecgcap.captioning.datasets import read_rsicd

    folder = tmp_path_factory.mktemp("karpathy")
    train = read_rsicd(rsicd_dir, "train")
    entries = []
    for scene in ("airport", "beach", "forest"):
        picked = [i for i, f in enumerate(train.images) if f.startswith(f"{scene}_")][:16]
        for j, i in enumerate(picked):
            split = "train" if j < 10 else "val" if j < 13 else "test"
            entries.append({"filename": train.images[i], "split": split,
                            "sentences": [{"raw": c} for c in train.captions[i]]})
    (folder / "images").mkdir()
    for e in entries:
        shutil.copy(rsicd_dir / "images" / e["filename"], folder / "images" / e["filename"])
    (folder / "dataset_tiny.json").write_text(json.dumps({"images": entries}))
    return folder


@pytest.mark.slow
def test_train_resume_caption_evaluate(karpathy, tmp_path):
    data = str(karpathy / "dataset_tiny.json")
    runs = tmp_path / "runs"
    r = run_module("ecgcap.train_caption", "--dataset", data, "--runs-dir", str(runs),
                   "--name", "tiny", "--epochs", "2", "--log-gradients", *TINY)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "best epoch" in r.stdout
    run_dir = runs / "tiny"
    report = json.loads((run_dir / "report.json").read_text())
    # val = the 9 val-split images + 5% (2) of the 30 training images held out
    assert report["images"] == {"train": 28, "val": 11}
    assert report["scenes"] == ["airport", "beach", "forest"]
    assert report["epochs_run"] == 2 and len(report["history"]["val_cider"]) == 2
    assert any(k.startswith("grad_norm/decoder_lstm1") for k in report["history"])

    again = run_module("ecgcap.train_caption", "--dataset", data, "--runs-dir", str(runs),
                       "--name", "tiny", "--epochs", "3", "--resume", *TINY)
    assert again.returncode == 0, again.stderr[-2000:]
    resumed = json.loads((run_dir / "report.json").read_text())
    assert resumed["epochs_run"] == 3
    assert resumed["history"]["loss"][:2] == report["history"]["loss"]
    other = run_module("ecgcap.train_caption", "--dataset", data, "--runs-dir", str(runs),
                       "--name", "tiny", "--epochs", "4", "--resume", "--learning-rate", "0.01",
                       *TINY[:-1])
    assert other.returncode == 2 and other.stderr.strip().endswith(
        "the run began with other options (learning_rate 0.001 -> 0.01); resume with the "
        "options it began with"), other.stderr[-2000:]
    assert "decoding" not in other.stdout + other.stderr      # refused before the images
    assert json.loads((run_dir / "report.json").read_text())["epochs_run"] == 3

    refused = run_module("ecgcap.train_caption", "--dataset", data, "--runs-dir", str(runs),
                         "--name", "tiny", *TINY)
    assert refused.returncode == 2 and "--overwrite" in refused.stderr
    (runs / "empty").mkdir()
    for name, problem in (("none", "no run folder to resume"), ("empty", "has no checkpoint")):
        refused = run_module("ecgcap.train_caption", "--dataset", data, "--runs-dir", str(runs),
                             "--name", name, "--resume", *TINY[:-1])  # not quiet
        assert refused.returncode == 2 and refused.stderr.strip().endswith(problem)
        assert "decoding" not in refused.stdout + refused.stderr  # refused before the images

    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(karpathy / "images" / "beach_1.jpg", images / "beach_1.jpg")
    shutil.copy(karpathy / "images" / "airport_1.jpg", images / "airport_1.jpg")
    (images / "broken.jpg").write_text("not an image")
    model = str(run_dir / "model.keras")
    out = run_module("ecgcap.caption", str(images), "--model", model, "--json", "--beam", "2")
    assert out.returncode == 2  # one bad image: reported, the others still captioned
    assert out.stderr.strip().splitlines()[-1].endswith("broken.jpg: not an image Pillow can read")
    listed = json.loads(out.stdout)
    assert [e["image"] for e in listed] == [str(images / "airport_1.jpg"),
                                            str(images / "beach_1.jpg")]
    assert all(isinstance(e["caption"], str) for e in listed)

    scored = run_module("ecgcap.evaluate_caption", "--model", model, "--dataset", data,
                        "--split", "test", "--no-meteor", "--teacher-forcing",
                        "--out", str(tmp_path / "eval"), "-q")
    assert scored.returncode == 0, scored.stderr[-2000:]
    for row in ("greedy", "beam 3", "fixed caption", "nearest neighbour"):
        assert row in scored.stdout
    scores = json.loads((tmp_path / "eval" / "scores.json").read_text())
    assert scores["images"] == 9 and 0 <= scores["scores"]["greedy"]["CIDEr"] < 10
    assert scores["length_penalty"] == 1.0 and scores["no_repeat_ngram"] == 3  # the defaults
    assert (tmp_path / "eval" / "sheet.html").read_text().count("<img") == 9
    gap = json.loads((tmp_path / "eval" / "teacher_forcing.json").read_text())
    assert gap["images"] == 9 and "free-running" in scored.stdout


def test_train_caption_with_a_keras_applications_backbone_and_its_weights(karpathy, tmp_path):
    """--backbone swaps the conv blocks for a keras.applications network; --backbone-weights
    loads weights the user has (here: a file written from an untrained MobileNetV2)."""
    import keras

    from ecgcap.captioning.config import BACKBONE_NAMES
    from ecgcap.captioning.models import BACKBONES

    assert tuple(BACKBONES) == BACKBONE_NAMES
    net = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(32, 32, 3))
    net.save_weights(tmp_path / "mine.weights.h5")
    runs = tmp_path / "runs"
    r = run_module("ecgcap.train_caption", "--dataset", str(karpathy / "dataset_tiny.json"),
                   "--runs-dir", str(runs), "--name", "mn", "--epochs", "1",
                   "--backbone", "mobilenet_v2", "--backbone-weights",
                   str(tmp_path / "mine.weights.h5"), *TINY)
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads((runs / "mn" / "report.json").read_text())
    assert report["config"]["backbone"] == "mobilenet_v2"
    out = run_module("ecgcap.caption", str(karpathy / "images" / "beach_1.jpg"), "--model",
                     str(runs / "mn" / "model.keras"), "--json")  # safe mode loads it
    assert out.returncode == 0, out.stderr[-2000:]
    assert isinstance(json.loads(out.stdout)[0]["caption"], str)


@pytest.mark.slow
def test_sigterm_checkpoints_and_resume_matches_an_uninterrupted_run(karpathy, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    data = str(karpathy / "dataset_tiny.json")
    args = ["--dataset", data, "--runs-dir", str(tmp_path), "--epochs", "3",
            *TINY[:TINY.index("--batch-size")], "--batch-size", "1",
            *TINY[TINY.index("--batch-size") + 2:]]
    straight = run_module("ecgcap.train_caption", *args, "--name", "straight")
    assert straight.returncode == 0, straight.stderr[-2000:]

    state = tmp_path / "cut" / "state.json"
    proc = subprocess.Popen([sys.executable, "-m", "ecgcap.train_caption", *args, "--name", "cut"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=os.environ.copy())
    deadline = time.monotonic() + 300
    while not (state.is_file() and json.loads(state.read_text())["epoch"] >= 1):
        assert proc.poll() is None and time.monotonic() < deadline, "no first epoch"
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-2000:]
    line = [x for x in err.splitlines() if x.startswith("python -m ecgcap.train_caption")]
    assert len(line) == 1 and line[0].endswith("continue with --resume")
    done = json.loads(state.read_text())["epoch"]
    assert 1 <= done < 3 and not (tmp_path / "cut" / "report.json").exists()
    assert not [p for p in (tmp_path / "cut").iterdir() if ".tmp" in p.name]

    resumed = run_module("ecgcap.train_caption", *args, "--name", "cut", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a = json.loads((tmp_path / "straight" / "report.json").read_text())["history"]
    b = json.loads((tmp_path / "cut" / "report.json").read_text())["history"]
    assert a.keys() == b.keys()
    for key in a:
        assert b[key] == pytest.approx(a[key], rel=1e-5), key


@pytest.mark.slow
def test_train_caption_mirrored_over_two_logical_devices_streams_from_shards(karpathy, tmp_path):
    data = str(karpathy / "dataset_tiny.json")
    runs = tmp_path / "runs"
    r = run_module("ecgcap.train_caption", "--dataset", data, "--runs-dir", str(runs),
                   "--name", "m", "--epochs", "2", "--distribute", "mirrored", "--replicas", "2",
                   "--device", "cpu", *TINY)
    assert r.returncode == 0, r.stderr[-2000:]
    run_dir = runs / "m"
    assert sorted(p.name for p in run_dir.iterdir()) == ["best.keras", "model.keras",
                                                         "report.json"]
    report = json.loads((run_dir / "report.json").read_text())
    assert report["distribution"]["replicas"] == 2 and report["epochs_run"] == 2
    assert report["distribution"]["per_replica_batch"] == 4
    assert report["config"]["pipeline"] == "shards"
    assert len(report["history"]["val_cider"]) == 2
    shown = run_module("ecgcap.caption", "--model", str(run_dir / "model.keras"),
                       str(karpathy / "images"), "-q")
    assert shown.returncode == 0 and shown.stdout.strip(), shown.stderr[-2000:]
