"""Tests for ecgcap.ecg.evaluation (AAMI and challenge reports) and ecgcap.ecg.plots."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ecgcap.ecg.evaluation import (
    AAMI_CLASSES,
    RHYTHM_CLASSES,
    aami_report,
    challenge_report,
    confusion,
    format_confusion,
    format_table,
    side_by_side,
)
from ecgcap.ecg.plots import plot_confusion, plot_learning_curves
from ecgcap.runtime.errors import EcgcapError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# Hand-made AAMI matrix over N, S, V, F (rows = reference, columns = predicted); no Q at all.
#             N   S   V  F     row
AAMI_CM = [[50, 3, 2, 0],   # 55
           [4, 10, 1, 0],   # 15
           [2, 0, 20, 3],   # 25
           [1, 0, 1, 3]]    # 5
# column sums: N 57, S 13, V 24, F 6; n = 100; diagonal 50 + 10 + 20 + 3 = 83.


def labels_from_matrix(cm, classes, *, as_index=False, seed=0):
    """Expand a confusion matrix into (shuffled) reference and predicted label lists."""
    t, p = [], []
    for i, row in enumerate(cm):
        for j, count in enumerate(row):
            t += [i] * count
            p += [j] * count
    order = np.random.default_rng(seed).permutation(len(t))
    t, p = np.asarray(t)[order], np.asarray(p)[order]
    if as_index:
        return t.tolist(), p.tolist()
    return [classes[i] for i in t], [classes[i] for i in p]


@pytest.fixture
def aami():
    y_true, y_pred = labels_from_matrix(AAMI_CM, AAMI_CLASSES)
    return aami_report(y_true, y_pred)


def test_aami_report_hand_computed(aami):
    pc = aami["per_class"]
    # N: TP 50, FN 55-50 = 5, FP 57-50 = 7, TN 100-50-5-7 = 38
    assert pc["N"]["sensitivity"] == pytest.approx(50 / 55)      # 0.9091
    assert pc["N"]["ppv"] == pytest.approx(50 / 57)              # 0.8772
    assert pc["N"]["f1"] == pytest.approx(100 / 112)             # 2TP/(2TP+FP+FN) = 0.8929
    assert pc["N"]["specificity"] == pytest.approx(38 / 45)      # 0.8444
    # S: TP 10, FN 5, FP 3, TN 82
    assert pc["S"]["sensitivity"] == pytest.approx(10 / 15)
    assert pc["S"]["ppv"] == pytest.approx(10 / 13)
    assert pc["S"]["f1"] == pytest.approx(20 / 28)
    assert pc["S"]["specificity"] == pytest.approx(82 / 85)
    # V: TP 20, FN 5, FP 4, TN 71
    assert pc["V"]["sensitivity"] == pytest.approx(20 / 25)
    assert pc["V"]["ppv"] == pytest.approx(20 / 24)
    assert pc["V"]["f1"] == pytest.approx(40 / 49)
    assert pc["V"]["specificity"] == pytest.approx(71 / 75)
    # F: TP 3, FN 2, FP 3, TN 92
    assert pc["F"]["sensitivity"] == pytest.approx(3 / 5)
    assert pc["F"]["ppv"] == pytest.approx(3 / 6)
    assert pc["F"]["f1"] == pytest.approx(6 / 11)
    assert pc["F"]["specificity"] == pytest.approx(92 / 95)
    assert [pc[c]["support"] for c in "NSVF"] == [55, 15, 25, 5]
    assert aami["accuracy"] == pytest.approx(83 / 100)
    # macro-F1 over N, S, V, F = (0.8929 + 0.7143 + 0.8163 + 0.5455) / 4 = 0.7422
    assert aami["macro_f1"] == pytest.approx((100 / 112 + 20 / 28 + 40 / 49 + 6 / 11) / 4)
    assert aami["macro_f1"] == pytest.approx(0.742231, abs=1e-6)
    assert aami["classes"] == list(AAMI_CLASSES)
    assert aami["n"] == 100
    assert aami["confusion"] == [row + [0] for row in AAMI_CM] + [[0, 0, 0, 0, 0]]


def test_class_without_support_or_predictions_is_none_not_nan(aami):
    q = aami["per_class"]["Q"]
    # Q is neither in the reference nor predicted: every ratio with a 0 denominator is None.
    assert q["support"] == 0 and q["predicted"] == 0
    assert q["sensitivity"] is None and q["ppv"] is None and q["f1"] is None
    assert q["specificity"] == pytest.approx(1.0)               # TN 100 / (TN 100 + FP 0)
    json.dumps(aami, allow_nan=False)                            # JSON-ready, no NaN anywhere


def test_macro_f1_counts_predicted_only_class_as_zero_and_skips_absent_class():
    # F is predicted twice but never in the reference: Se None, +P 0/2 = 0, F1 0 -> counts 0.
    y_true = ["N", "N", "N", "S", "V", "V"]
    y_pred = ["N", "F", "N", "S", "V", "F"]
    rep = aami_report(y_true, y_pred)
    f = rep["per_class"]["F"]
    assert f["support"] == 0 and f["sensitivity"] is None
    assert f["ppv"] == 0.0 and f["f1"] == 0.0
    # N: TP 2 FN 1 FP 0 -> F1 4/5; S: 2/2 = 1; V: TP 1 FN 1 FP 0 -> 2/3; F: 0
    assert rep["macro_f1"] == pytest.approx((4 / 5 + 1 + 2 / 3 + 0) / 4)
    # With F absent from both the reference and the predictions it leaves the mean.
    rep2 = aami_report(["N", "N", "S", "V"], ["N", "S", "S", "V"])
    assert rep2["per_class"]["F"]["f1"] is None
    # N: 2/3, S: 2/3, V: 1
    assert rep2["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)


def test_macro_f1_none_when_nothing_scored():
    rep = aami_report([], [])
    assert rep["accuracy"] is None and rep["macro_f1"] is None and rep["n"] == 0
    json.dumps(rep, allow_nan=False)


def test_integer_and_string_labels_give_the_same_report():
    s_true, s_pred = labels_from_matrix(AAMI_CM, AAMI_CLASSES)
    i_true, i_pred = labels_from_matrix(AAMI_CM, AAMI_CLASSES, as_index=True)
    by_name = aami_report(s_true, s_pred)
    assert aami_report(i_true, i_pred) == by_name
    assert aami_report(np.asarray(i_true), s_pred) == by_name     # mixed forms
    assert aami_report(np.asarray(s_true), np.asarray(i_pred, dtype=np.int32)) == by_name


def test_confusion_orientation_and_bad_labels():
    cm = confusion(["N", "V", "V"], [0, 2, 0], ("N", "S", "V"))
    assert cm.tolist() == [[1, 0, 0], [0, 0, 0], [1, 0, 1]]      # rows reference, cols pred
    with pytest.raises(EcgcapError, match="unknown class"):
        confusion(["N", "X"], ["N", "N"], AAMI_CLASSES)
    with pytest.raises(EcgcapError, match="out of range"):
        confusion([0, 5], [0, 0], AAMI_CLASSES)
    with pytest.raises(EcgcapError):
        confusion([0, 1], [0], AAMI_CLASSES)


# Hand-made challenge matrix over N, A, O, ~ (rows = reference, columns = predicted).
#                N  A   O  ~     row
CHALLENGE_CM = [[40, 1, 5, 1],   # 47
                [1, 8, 2, 0],    # 11
                [6, 1, 20, 1],   # 28
                [1, 0, 1, 2]]    # 4
# column sums: N 48, A 10, O 28, ~ 4; n = 90; diagonal 40 + 8 + 20 + 2 = 70.


def test_challenge_report_hand_computed():
    y_true, y_pred = labels_from_matrix(CHALLENGE_CM, RHYTHM_CLASSES, seed=3)
    rep = challenge_report(y_true, y_pred)
    pc = rep["per_class"]
    # F1n = 2 Nn / (sum N row + sum N column) = 80 / (47 + 48)
    assert pc["N"]["f1"] == pytest.approx(80 / 95)              # 0.8421
    assert pc["A"]["f1"] == pytest.approx(16 / (11 + 10))       # 0.7619
    assert pc["O"]["f1"] == pytest.approx(40 / (28 + 28))       # 0.7143
    assert pc["~"]["f1"] == pytest.approx(4 / (4 + 4))          # 0.5
    assert rep["f1_noise"] == pytest.approx(0.5)
    # score = (F1n + F1a + F1o) / 3 = 0.7728; noise excluded
    assert rep["score"] == pytest.approx((80 / 95 + 16 / 21 + 40 / 56) / 3)
    assert rep["score"] == pytest.approx(0.772765, abs=1e-6)
    assert rep["accuracy"] == pytest.approx(70 / 90)
    assert rep["confusion"] == CHALLENGE_CM
    assert rep["classes"] == list(RHYTHM_CLASSES)
    json.dumps(rep, allow_nan=False)


def test_format_table_and_confusion_for_both_kinds(aami):
    text = format_table(aami)
    for name in AAMI_CLASSES:
        assert name in text
    for piece in ("Se %", "+P %", "Sp %", "90.91", "87.72", "0.8929", "84.44", "83.00",
                  "macro-F1", "0.7422"):
        assert piece in text
    q_line = next(line for line in text.splitlines() if line.startswith("Q "))
    assert "-" in q_line and "nan" not in text.lower()

    y_true, y_pred = labels_from_matrix(CHALLENGE_CM, RHYTHM_CLASSES)
    ch = challenge_report(y_true, y_pred)
    text = format_table(ch)
    for piece in ("~", "challenge score", "0.7728", "F1 noise", "0.5000", "77.78"):
        assert piece in text

    cm_text = format_confusion(ch)
    lines = cm_text.splitlines()
    assert all(c in lines[0] for c in RHYTHM_CLASSES)
    assert lines[1].split() == ["N", "40", "1", "5", "1", "47"]
    assert lines[-1].split() == ["total", "48", "10", "28", "4", "90"]
    assert "50" in format_confusion(aami)


def test_side_by_side(aami):
    other = aami_report(*labels_from_matrix([[55, 0, 0, 0], [5, 10, 0, 0], [5, 0, 20, 0],
                                             [5, 0, 0, 0]], AAMI_CLASSES))
    text = side_by_side({"lstm": aami, "simplernn": other})
    header = text.splitlines()[0]
    assert "lstm" in header and "simplernn" in header
    for piece in ("N F1", "S Se %", "V +P %", "F F1", "macro-F1", "0.8929", "90.91", "83.00",
                  "85.00"):
        assert piece in text
    assert "nan" not in text.lower()
    # a challenge report next to an AAMI one: missing figures print as "-"
    ch = challenge_report(*labels_from_matrix(CHALLENGE_CM, RHYTHM_CLASSES))
    mixed = side_by_side({"beats": aami, "rhythm": ch})
    score_line = next(line for line in mixed.splitlines() if line.startswith("challenge score"))
    assert score_line.split()[-2:] == ["-", "0.7728"]


def test_plot_confusion_writes_png(tmp_path, aami):
    out = plot_confusion(aami, tmp_path / "figs" / "confusion.png")
    assert out == tmp_path / "figs" / "confusion.png"
    data = out.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 1000
    assert [p.name for p in out.parent.iterdir()] == ["confusion.png"]   # no temp files left


def test_plot_learning_curves_writes_png(tmp_path):
    history = {"loss": [1.0, 0.7, 0.5], "val_loss": [1.1, 0.8, 0.7],
               "accuracy": [0.5, 0.7, 0.8], "val_accuracy": [0.4, 0.6, 0.7],
               "val_macro_f1": [0.3, 0.4, 0.5]}
    out = plot_learning_curves(history, tmp_path / "curves.png")
    data = out.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 1000
    assert [p.name for p in tmp_path.iterdir()] == ["curves.png"]
    with pytest.raises(EcgcapError):
        plot_learning_curves({}, tmp_path / "empty.png")
    assert not (tmp_path / "empty.png").exists()


labels = st.integers(min_value=0, max_value=len(AAMI_CLASSES) - 1)


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=1, max_value=80).flatmap(
    lambda n: st.tuples(st.lists(labels, min_size=n, max_size=n),
                        st.lists(labels, min_size=n, max_size=n))))
def test_report_properties(pair):
    y_true, y_pred = pair
    rep = aami_report(y_true, y_pred)
    cm = np.asarray(rep["confusion"])
    assert cm.sum() == len(y_true) == rep["n"]
    assert rep["accuracy"] == pytest.approx(np.mean(np.asarray(y_true) == np.asarray(y_pred)))
    for m in rep["per_class"].values():
        for key in ("sensitivity", "ppv", "f1", "specificity"):
            assert m[key] is None or 0.0 <= m[key] <= 1.0
    assert rep["macro_f1"] is None or 0.0 <= rep["macro_f1"] <= 1.0
    named = aami_report([AAMI_CLASSES[i] for i in y_true], [AAMI_CLASSES[i] for i in y_pred])
    assert named == rep
