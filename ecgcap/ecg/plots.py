"""PNG figures for ECG runs: confusion heat maps and learning curves.

matplotlib is imported inside the functions (headless ``Agg`` backend), figures are closed
after saving, and files are written through :func:`ecgcap.runtime.files.atomic_path` so a PNG
is never left half written.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ecgcap.runtime.errors import EcgcapError
from ecgcap.runtime.files import atomic_path


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | os.PathLike, dpi: int) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    return Path(path)


def plot_confusion(report: Mapping[str, Any], path: str | os.PathLike, *,
                   title: str | None = None, dpi: int = 120) -> Path:
    """Draw a report's confusion matrix as a heat map with the counts written in the cells.

    Colours show each row normalised by its reference count (so rare classes stay visible);
    rows are the reference classes, columns the predicted ones.

    Parameters
    ----------
    report : dict
        An :func:`~ecgcap.ecg.evaluation.aami_report` or
        :func:`~ecgcap.ecg.evaluation.challenge_report` result.
    path : path-like
        Where to write the PNG.
    title : str, optional
        Figure title; by default the report kind and its headline figure.
    dpi : int
        Resolution of the PNG.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    classes = [str(c) for c in report["classes"]]
    k = len(classes)
    cm = np.asarray(report["confusion"], dtype=np.int64).reshape(k, k)
    rows = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=float), where=rows > 0)
    if title is None:
        title = _default_title(report)

    plt = _pyplot()
    size = max(3.5, 0.7 * k + 2.0)
    fig, ax = plt.subplots(figsize=(size + 1.0, size))
    try:
        image = ax.imshow(frac, cmap="Blues", vmin=0.0, vmax=1.0)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of reference")
        ax.set_xticks(range(k), labels=classes)
        ax.set_yticks(range(k), labels=classes)
        ax.set_xlabel("predicted")
        ax.set_ylabel("reference")
        ax.set_title(title)
        for i in range(k):
            for j in range(k):
                ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=9,
                        color="white" if frac[i, j] > 0.5 else "black")
        return _save(fig, path, dpi)
    finally:
        plt.close(fig)


def _default_title(report: Mapping[str, Any]) -> str:
    acc = report.get("accuracy")
    parts = [f"accuracy {100 * acc:.1f}%"] if acc is not None else []
    if report.get("macro_f1") is not None:
        parts.append(f"macro-F1 {report['macro_f1']:.3f}")
    if report.get("score") is not None:
        parts.append(f"score {report['score']:.3f}")
    return ", ".join(parts) or "confusion matrix"


GRAD_PREFIX = "grad_norm/"


def _panels(names: Sequence[str]) -> list[tuple[str, list[str]]]:
    """Group metric names into panels: ``x`` with ``val_x``; a lone ``val_x`` gets its own."""
    panels: dict[str, list[str]] = {}
    for name in names:
        base = name[4:] if name.startswith("val_") else name
        if name.startswith("val_") and base not in names:
            base = name
        if name.startswith(GRAD_PREFIX):  # --log-gradients: all layers on one log panel
            base = GRAD_PREFIX
        panels.setdefault(base, []).append(name)
    for series in panels.values():
        series.sort(key=lambda s: s.startswith("val_"))
    return list(panels.items())


def plot_learning_curves(history: Mapping[str, Sequence[float]], path: str | os.PathLike, *,
                         title: str | None = None, dpi: int = 120) -> Path:
    """Plot training curves, one panel per metric, ``x`` and ``val_x`` on the same panel.

    Parameters
    ----------
    history : dict of str to list of float
        Per-epoch values, e.g. Keras ``History.history`` (a ``History`` object also works).
    path : path-like
        Where to write the PNG.
    title : str, optional
        Figure title.
    dpi : int
        Resolution of the PNG.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    history = getattr(history, "history", history)
    series = {str(k): [float(v) for v in vals] for k, vals in history.items() if len(vals)}
    if not series:
        raise EcgcapError("the training history is empty: nothing to plot")
    panels = _panels(list(series))

    plt = _pyplot()
    ncols = min(len(panels), 3)
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows), squeeze=False)
    try:
        for ax, (base, names) in zip(axes.flat, panels, strict=False):
            for name in names:
                values = series[name]
                epochs = np.arange(1, len(values) + 1)
                label = "validation" if name.startswith("val_") and name != base else "training"
                if base == GRAD_PREFIX:
                    label = name[len(GRAD_PREFIX):]
                ax.plot(epochs, values, marker="o" if len(values) <= 30 else None,
                        markersize=3, label=label)
            if base == GRAD_PREFIX:
                ax.set_yscale("log")
            ax.set_title("gradient norm per layer" if base == GRAD_PREFIX else base)
            ax.set_xlabel("epoch")
            ax.grid(True, alpha=0.3)
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.legend(fontsize=8)
        for ax in list(axes.flat)[len(panels):]:
            ax.set_visible(False)
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        return _save(fig, path, dpi)
    finally:
        plt.close(fig)
