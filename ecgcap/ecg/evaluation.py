"""Scores for ECG classifiers: AAMI EC57 beat reports and the PhysioNet/CinC 2017 score.

Reports are plain JSON-ready dicts (undefined ratios are ``None``, never NaN) so they can be
written with :func:`ecgcap.runtime.files.atomic_write_json` and compared across runs.

Both report kinds share these keys:

``kind``
    ``"aami"`` or ``"challenge"``.
``classes``
    The class names, in matrix order.
``n``
    The number of labels scored.
``per_class``
    ``{class: {"support", "predicted", "sensitivity", "ppv", "f1", "specificity"}}``.
``accuracy``
    Overall fraction correct (``None`` when nothing was scored).
``confusion``
    The confusion matrix as a list of lists, rows = reference, columns = predicted.

An AAMI report adds ``macro_f1`` and ``macro_classes``; a challenge report adds ``score``,
``score_classes`` and ``f1_noise``.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix

from ecgcap.runtime.errors import EcgcapError

AAMI_CLASSES = ("N", "S", "V", "F", "Q")
RHYTHM_CLASSES = ("N", "A", "O", "~")

# The field averages F1 over the four beat classes; Q (unclassifiable) is too rare to score.
AAMI_MACRO_CLASSES = ("N", "S", "V", "F")
# The 2017 challenge score: mean F1 of normal, AF and other rhythm; noise is reported apart.
CHALLENGE_SCORE_CLASSES = ("N", "A", "O")
CHALLENGE_NOISE_CLASS = "~"


def _ratio(num: float, den: float) -> float | None:
    """``num / den`` as a float, or ``None`` when ``den`` is 0."""
    return float(num) / float(den) if den else None


def _to_indices(labels: Any, classes: Sequence[str], what: str) -> np.ndarray:
    """Map class names or integer indices into ``classes`` to an int array of indices."""
    arr = np.asarray(labels)
    if arr.ndim != 1:
        arr = arr.reshape(-1)
    k = len(classes)
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.dtype.kind in "iu":
        idx = arr.astype(np.int64)
    elif arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise EcgcapError("labels must be class names or integer indices", input=what)
        idx = arr.astype(np.int64)
    elif arr.dtype.kind in "USO":
        lookup = {str(c): i for i, c in enumerate(classes)}
        out = np.empty(arr.size, dtype=np.int64)
        for j, value in enumerate(arr.tolist()):
            if isinstance(value, bytes):
                value = value.decode()
            if isinstance(value, str):
                if value not in lookup:
                    raise EcgcapError(f"unknown class {value!r}; expected one of "
                                      f"{list(classes)}", input=what)
                out[j] = lookup[value]
            elif isinstance(value, numbers.Integral) and not isinstance(value, bool):
                out[j] = int(value)
            else:
                raise EcgcapError(f"label {value!r} is neither a class name nor an index",
                                  input=what)
        idx = out
    else:
        raise EcgcapError(f"cannot read labels of dtype {arr.dtype}", input=what)
    bad = (idx < 0) | (idx >= k)
    if bad.any():
        raise EcgcapError(f"class index {int(idx[bad][0])} out of range for {k} classes",
                          input=what)
    return idx


def confusion(y_true: Any, y_pred: Any, classes: Sequence[str]) -> np.ndarray:
    """Confusion matrix of reference against predicted labels.

    Parameters
    ----------
    y_true, y_pred : array-like
        Labels as class names (``"N"``) or integer indices into ``classes``; the two may differ
        in form.
    classes : sequence of str
        The class names; they fix the row and column order.

    Returns
    -------
    numpy.ndarray
        ``(len(classes), len(classes))`` int64 counts, rows = reference, columns = predicted.

    Examples
    --------
    >>> confusion(["N", "V", "V"], [0, 2, 0], ("N", "S", "V")).tolist()
    [[1, 0, 0], [0, 0, 0], [1, 0, 1]]
    """
    classes = tuple(classes)
    t = _to_indices(y_true, classes, "y_true")
    p = _to_indices(y_pred, classes, "y_pred")
    if t.shape != p.shape:
        raise EcgcapError(f"{t.size} reference labels but {p.size} predictions")
    k = len(classes)
    if t.size == 0:
        return np.zeros((k, k), dtype=np.int64)
    return confusion_matrix(t, p, labels=np.arange(k)).astype(np.int64)


def _per_class(cm: np.ndarray, classes: Sequence[str]) -> dict[str, dict[str, Any]]:
    """One-vs-rest counts and ratios for every class of a confusion matrix."""
    total = int(cm.sum())
    rows = cm.sum(axis=1)
    cols = cm.sum(axis=0)
    out: dict[str, dict[str, Any]] = {}
    for i, name in enumerate(classes):
        tp = int(cm[i, i])
        fn = int(rows[i]) - tp
        fp = int(cols[i]) - tp
        tn = total - tp - fn - fp
        out[str(name)] = {
            "support": int(rows[i]),
            "predicted": int(cols[i]),
            "sensitivity": _ratio(tp, tp + fn),
            "ppv": _ratio(tp, tp + fp),
            # 2TP / (2TP + FP + FN) = 2 C_cc / (row c + column c): the challenge's own form; it
            # is 0 (not undefined) whenever the class was referenced or predicted at all.
            "f1": _ratio(2 * tp, 2 * tp + fp + fn),
            "specificity": _ratio(tn, tn + fp),
        }
    return out


def _mean_f1(per_class: Mapping[str, Mapping[str, Any]], names: Sequence[str]) -> float | None:
    """Mean F1 over ``names``, skipping classes with neither support nor predictions."""
    values = [per_class[c]["f1"] for c in names if c in per_class]
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def _base_report(kind: str, y_true: Any, y_pred: Any,
                 classes: Sequence[str]) -> dict[str, Any]:
    classes = tuple(str(c) for c in classes)
    cm = confusion(y_true, y_pred, classes)
    total = int(cm.sum())
    return {
        "kind": kind,
        "classes": list(classes),
        "n": total,
        "per_class": _per_class(cm, classes),
        "accuracy": _ratio(int(np.trace(cm)), total),
        "confusion": cm.tolist(),
    }


def aami_report(y_true: Any, y_pred: Any, classes: Sequence[str] = AAMI_CLASSES,
                macro_classes: Sequence[str] = AAMI_MACRO_CLASSES) -> dict[str, Any]:
    """Heartbeat classification report following AAMI EC57 and de Chazal et al. (2004).

    Per class (one vs rest): ``sensitivity`` Se = TP/(TP+FN), ``ppv`` (positive
    predictivity, +P) = TP/(TP+FP), ``f1`` = 2TP/(2TP+FP+FN), ``specificity`` Sp = TN/(TN+FP),
    ``support`` (reference count) and ``predicted`` (prediction count).

    A ratio whose denominator is 0 is ``None``. F1 is therefore ``None`` only for a class that
    is neither in the reference nor predicted; such a class is left out of ``macro_f1``. A class
    that was referenced or predicted but never hit has F1 = 0 and counts as 0 in the mean.

    Parameters
    ----------
    y_true, y_pred : array-like
        Class names or integer indices into ``classes``.
    classes : sequence of str
        The classes, in matrix order (default the five AAMI classes).
    macro_classes : sequence of str
        Classes averaged into ``macro_f1``: N, S, V and F (Q excluded, as the field does).

    Returns
    -------
    dict
        The shared keys (see the module docstring) plus ``macro_f1`` (``None`` if no macro
        class is defined) and ``macro_classes``.
    """
    report = _base_report("aami", y_true, y_pred, classes)
    used = [c for c in macro_classes if c in report["classes"]]
    report["macro_classes"] = used
    report["macro_f1"] = _mean_f1(report["per_class"], used)
    return report


def challenge_report(y_true: Any, y_pred: Any,
                     classes: Sequence[str] = RHYTHM_CLASSES) -> dict[str, Any]:
    """Rhythm classification report scored as in the PhysioNet/CinC Challenge 2017.

    F1 of class c is ``2 C_cc / (sum of row c + sum of column c)`` (e.g. F1n = 2Nn / (ΣN + Σn)),
    the same number as 2TP/(2TP+FP+FN). ``score`` is the mean of F1 over N, A and O;
    ``f1_noise`` is the F1 of the noise class ``~`` (``None`` when it is not a class or never
    occurs). A score class with neither reference nor predictions is left out of the mean, as
    in :func:`aami_report`.

    Parameters
    ----------
    y_true, y_pred : array-like
        Class names or integer indices into ``classes``.
    classes : sequence of str
        The rhythm classes, in matrix order (default N, A, O, ~).

    Returns
    -------
    dict
        The shared keys (see the module docstring) plus ``score``, ``score_classes`` and
        ``f1_noise``.
    """
    report = _base_report("challenge", y_true, y_pred, classes)
    used = [c for c in CHALLENGE_SCORE_CLASSES if c in report["classes"]]
    report["score_classes"] = used
    report["score"] = _mean_f1(report["per_class"], used)
    noise = report["per_class"].get(CHALLENGE_NOISE_CLASS)
    report["f1_noise"] = noise["f1"] if noise else None
    return report


# ----------------------------------------------------------------------------- formatting


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100.0 * value:.2f}"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _overall_lines(report: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(label, value) pairs for the overall figures of either report kind."""
    lines = [("accuracy %", _pct(report.get("accuracy")))]
    if "macro_f1" in report:
        names = ", ".join(report.get("macro_classes", AAMI_MACRO_CLASSES))
        lines.append((f"macro-F1 ({names})", _num(report["macro_f1"])))
    if "score" in report:
        names = ", ".join(report.get("score_classes", CHALLENGE_SCORE_CLASSES))
        lines.append((f"challenge score ({names})", _num(report["score"])))
    if "f1_noise" in report:
        lines.append((f"F1 noise ({CHALLENGE_NOISE_CLASS})", _num(report["f1_noise"])))
    return lines


def format_table(report: Mapping[str, Any]) -> str:
    """Plain-text table of a report: one row per class, then the overall figures.

    Columns are support, Se %, +P %, F1 and Sp %; undefined values print as ``-``. Works for
    both :func:`aami_report` and :func:`challenge_report` results.
    """
    header = ("class", "support", "Se %", "+P %", "F1", "Sp %")
    rows = [header]
    for name in report["classes"]:
        m = report["per_class"][name]
        rows.append((name, str(m["support"]), _pct(m["sensitivity"]), _pct(m["ppv"]),
                     _num(m["f1"]), _pct(m["specificity"])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                       for i, (c, w) in enumerate(zip(r, widths, strict=True)))
             for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    overall = _overall_lines(report)
    label_w = max(len(label) for label, _ in overall)
    lines.append("-" * len(lines[0]))
    lines.append(f"{'n'.ljust(label_w)}  {report.get('n', sum(map(sum, report['confusion'])))}")
    lines.extend(f"{label.ljust(label_w)}  {value}" for label, value in overall)
    return "\n".join(lines)


def format_confusion(report: Mapping[str, Any]) -> str:
    """The confusion matrix as text: reference classes down, predicted classes across."""
    classes = [str(c) for c in report["classes"]]
    cm = np.asarray(report["confusion"], dtype=np.int64).reshape(len(classes), len(classes))
    corner = "ref \\ pred"
    header = [corner, *classes, "total"]
    body = [[c, *(str(v) for v in row), str(int(row.sum()))] for c, row in zip(
        classes, cm, strict=True)]
    body.append(["total", *(str(int(v)) for v in cm.sum(axis=0)), str(int(cm.sum()))])
    table = [header, *body]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(r, widths, strict=True)))
                     for r in table)


def side_by_side(reports: Mapping[str, Mapping[str, Any]]) -> str:
    """Compare several named reports in one table (e.g. ``{"lstm": r1, "simplernn": r2}``).

    One row per class and figure (F1, Se %, +P %), then the overall figures; one column per
    report. Classes missing from a report, and figures a report kind lacks, print as ``-``.
    """
    if not reports:
        return ""
    names = [str(n) for n in reports]
    classes: list[str] = []
    for rep in reports.values():
        classes.extend(c for c in rep["classes"] if c not in classes)

    rows: list[list[str]] = [["", *names]]
    for c in classes:
        for label, key, fmt in (("F1", "f1", _num), ("Se %", "sensitivity", _pct),
                                ("+P %", "ppv", _pct)):
            cells = []
            for rep in reports.values():
                m = rep["per_class"].get(c)
                cells.append(fmt(m[key]) if m else "-")
            rows.append([f"{c} {label}", *cells])
    overall_labels: list[str] = []
    per_report: list[dict[str, str]] = []
    for rep in reports.values():
        pairs = dict(_overall_lines(rep))
        per_report.append(pairs)
        overall_labels.extend(k for k in pairs if k not in overall_labels)
    rule_at = len(rows)
    for label in overall_labels:
        rows.append([label, *(p.get(label, "-") for p in per_report)])

    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                       for i, (c, w) in enumerate(zip(r, widths, strict=True)))
             for r in rows]
    rule = "-" * len(lines[0])
    lines.insert(rule_at, rule)
    lines.insert(1, rule)
    return "\n".join(lines)
