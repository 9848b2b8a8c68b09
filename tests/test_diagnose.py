"""``python -m ecgcap.diagnose`` on real records: JSON and PNG of the gradient per time step."""

from __future__ import annotations

import json

import numpy as np

from conftest import run_module


def test_diagnose_on_real_cinc2017_recordings(cinc2017_dir, tmp_path):
    out = run_module("ecgcap.diagnose", "--data-dir", str(cinc2017_dir), "--batch", "3",
                     "--steps", "800", "--unidirectional", "--pooling", "last",
                     "--conv-filters", "32,32,64,64",  # 4 blocks: 800 samples, 50 steps
                     "--out", str(tmp_path / "d"), "--device", "cpu")
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads((tmp_path / "d" / "gradient_flow.json").read_text())
    assert report["batch"] == 3 and report["input_samples"] == 800
    assert set(report["labels"]) <= {"N", "A", "O", "~"}
    assert (tmp_path / "d" / "gradient_flow.png").stat().st_size > 10_000
    for label, r in report["models"].items():
        g = np.array(r["recurrent"])
        assert len(g) == 800 // 16 and np.all(np.isfinite(g)) and np.all(g >= 0)
        assert len(r["input"]) == 800
        # one direction and the last state only: the error reaching step 1 is smaller than at
        # the last step (it has crossed 49 recurrent Jacobians)
        assert g[0] < g[-1], label
    assert "lstm (uni, last, untrained)" in out.stdout


def test_diagnose_a_trained_beat_model_on_mitdb(mitdb_dir, tmp_path):
    out = run_module("ecgcap.diagnose", "--db", "mitdb", "--data-dir", str(mitdb_dir),
                     "--model", "models/mitdb_lstm_beats.keras", "--batch", "8",
                     "--out", str(tmp_path), "--device", "cpu")
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads((tmp_path / "gradient_flow.json").read_text())
    (label, r), = report["models"].items()
    assert label == "lstm (trained, models/mitdb_lstm_beats.keras, member 1 of 3)"
    assert len(r["recurrent"]) == 126 // 4
    assert r["layer"] == "bilstm1"


def test_diagnose_an_older_beat_model_beside_a_new_one(mitdb_dir, tmp_path):
    """A model saved before the irregularity feature (8 RR columns) gets its beats cut as it
    was trained, beside today's untrained builder (9 columns)."""
    from ecgcap.ecg.models import build_recurrent_classifier
    from ecgcap.runtime.modelfile import save_model

    old = build_recurrent_classifier("lstm", rr_features=8, conv_filters=(8,), units=8)
    save_model(old, tmp_path / "old.keras", {"kind": "ecg-beats", "db": "mitdb", "cell": "lstm",
                                             "classes": list("NSVFQ"), "beats": {"lead": "MLII"}})
    out = run_module("ecgcap.diagnose", "--db", "mitdb", "--data-dir", str(mitdb_dir),
                     "--model", str(tmp_path / "old.keras"), "lstm", "--batch", "4",
                     "--out", str(tmp_path / "d"), "--device", "cpu")
    assert out.returncode == 0, out.stderr[-2000:]
    assert len(json.loads((tmp_path / "d" / "gradient_flow.json").read_text())["models"]) == 2


def test_diagnose_refuses_a_model_for_another_database(cinc2017_dir, tmp_path):
    out = run_module("ecgcap.diagnose", "--data-dir", str(cinc2017_dir), "--model",
                     "models/mitdb_lstm_beats.keras", "--out", str(tmp_path), "--device", "cpu")
    assert out.returncode == 2 and "a model for mitdb, not cinc2017" in out.stderr
