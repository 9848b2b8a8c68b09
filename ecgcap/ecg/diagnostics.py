"""Gradient flow through time in the ECG models, on real records.

For a batch of real sequences (CinC 2017 recordings or MIT-BIH beats) and a model (the LSTM or
SimpleRNN builder untrained, or a trained ``.keras`` file), :func:`gradient_flow` measures the
norm of the loss gradient at each time step: with respect to the model input (each sample) and
to the input sequence of the first recurrent layer (each step of the recurrence), using
:func:`ecgcap.runtime.gradients.step_gradients`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import keras
import numpy as np

from ecgcap.ecg import io, plots
from ecgcap.ecg.databases import Database
from ecgcap.ecg.dataset import BEAT_CHANNELS, BeatConfig, load_beats
from ecgcap.ecg.inference import load_classifier
from ecgcap.ecg.models import BUILDERS
from ecgcap.ecg.recordings import RhythmConfig, load_recordings, pad_batch
from ecgcap.ecg.rhythm_training import RhythmTrainConfig
from ecgcap.ecg.rhythm_training import build_model as build_rhythm_model
from ecgcap.runtime.errors import EcgcapError
from ecgcap.runtime.gradients import step_gradients, step_norms
from ecgcap.runtime.modelfile import read_info


def recurrent_layer(model: keras.Model) -> str:
    """The name of the first recurrent (or bidirectional) layer of ``model``."""
    for layer in model.layers:
        if isinstance(layer, (keras.layers.RNN, keras.layers.Bidirectional)):
            return layer.name
    raise EcgcapError("the model has no recurrent layer", input=model.name)


def model_for(spec: str, db: Database, *, bidirectional: bool = True, pooling: str = "mean-max",
              conv_filters: tuple[int, ...] | None = None,
              recurrent_layers: int | None = None) -> tuple[keras.Model, str]:
    """``lstm`` / ``simplernn`` (the untrained builder, seeded) or a ``.keras`` path.

    ``bidirectional``, ``pooling``, ``conv_filters`` and ``recurrent_layers`` (the last two
    rhythm only; ``None``: the training default) change the untrained builders only: one
    direction and the last state leave the recurrence as the only path from the loss to early
    steps.
    """
    if spec in BUILDERS:
        shape = f"{'bi' if bidirectional else 'uni'}, {pooling}"
        if db.task == "rhythm":
            config = RhythmTrainConfig(model=spec, bidirectional=bidirectional, pooling=pooling)
            if conv_filters is not None:
                config.conv_filters = tuple(conv_filters)
            if recurrent_layers is not None:
                config.recurrent_layers = recurrent_layers
            return build_rhythm_model(config, len(db.classes)), f"{spec} ({shape}, untrained)"
        return BUILDERS[spec](input_length=BeatConfig().length, channels=BEAT_CHANNELS,
                              rr_features=BeatConfig().rr_features, classes=len(db.classes),
                              bidirectional=bidirectional, pooling=pooling), \
            f"{spec} ({shape}, untrained)"
    if Path(spec).suffix in (".tflite", ".onnx"):
        raise EcgcapError("an export has no gradients; pass its .keras model", input=spec)
    model, info = load_classifier(spec)
    if info.get("db") != db.name:
        raise EcgcapError(f"a model for {info.get('db')}, not {db.name}", input=spec)
    where = Path(spec)
    label = f"{info.get('cell', 'model')} (trained, {where.parent.name}/{where.name})"
    if info.get("ensemble"):  # a seed ensemble: the recurrence of its first member
        model = model.get_layer("member_0")
        label = label[:-1] + f", member 1 of {info['ensemble']})"
    return model, label


def real_batch(db: Database, db_dir: str | os.PathLike, n: int, steps: int | None, seed: int = 0,
               beats: BeatConfig | None = None
               ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """``(inputs, labels, mask)`` for ``n`` real sequences, drawn with a fixed seed.

    cinc2017: the first ``steps`` samples (default 30 s) of recordings at least that long, in
    turn from each label; mitdb: random beats of the first DS1 record, cut as ``beats`` says
    (default: today's :class:`BeatConfig`; a saved model's own settings for a saved model).
    """
    rng = np.random.default_rng(seed)
    if db.task == "rhythm":
        config = RhythmConfig()
        steps = steps or config.crop
        records = io.list_records(db_dir)
        labels = io.read_reference(Path(db_dir) / (db.reference or "REFERENCE.csv"))
        queues = {c: list(rng.permutation([r for r in records if labels.get(r) == c]))
                  for c in db.classes}
        signals, rrs, ys = [], [], []
        while len(ys) < n and any(queues.values()):
            for c in db.classes:
                if queues[c] and len(ys) < n:
                    one = load_recordings(db_dir, db, [str(queues[c].pop())], config, quiet=True)
                    if len(one["signal"][0]) >= steps:        # all real for all ``steps``
                        signals.append(one["signal"][0][:steps])
                        rrs.append(one["rr"][0])
                        ys.append(db.classes.index(c))
        if not ys:
            raise EcgcapError(f"no recording has {steps} samples", input=f"--steps {steps}")
        x, mask = pad_batch(signals)
        return {"signal": x, "mask": mask, "rr": np.stack(rrs)}, np.array(ys), mask
    data = load_beats(db_dir, db, [db.split["train"][0]], beats or BeatConfig(), quiet=True)
    idx = np.sort(rng.choice(len(data["label"]), size=min(n, len(data["label"])), replace=False))
    y = np.array([db.classes.index(c) for c in data["label"][idx]])
    beat = data["beat"][idx]
    return {"beat": beat, "rr": data["rr"][idx]}, y, np.ones(beat.shape[:2], dtype=np.float32)


def beats_for(spec: str, db: Database) -> BeatConfig | None:
    """How :func:`real_batch` cuts beats for the model ``spec``: a saved beat model as it was
    trained (older models have fewer RR features); ``None`` (today's settings) otherwise."""
    if db.task != "rhythm" and spec not in BUILDERS:
        return BeatConfig.from_info(read_info(spec).get("beats", {}))
    return None


def gradient_flow(model: keras.Model, inputs: dict[str, np.ndarray], y: np.ndarray,
                  mask: np.ndarray) -> dict[str, Any]:
    """Per-step gradient norms at the input and at the first recurrent layer's input."""
    name = "signal" if "signal" in inputs else "beat"
    at_input = step_norms(step_gradients(model, inputs, y, input_name=name), mask)
    layer = recurrent_layer(model)
    g = step_gradients(model, inputs, y, layer=layer)
    steps = g.shape[1]
    factor = mask.shape[1] / steps
    pooled = mask[:, (np.arange(steps) * factor).astype(int)] if factor != 1 else mask
    at_layer = step_norms(g, pooled)
    return {"layer": layer, "input": _clean(at_input), "recurrent": _clean(at_layer)}


def _clean(values: np.ndarray) -> list[float | None]:
    """JSON-ready: 4 significant digits, ``None`` for steps with no real sequence."""
    return [None if not np.isfinite(v) else float(f"{v:.4g}") for v in values]


def plot_gradient_flow(results: dict[str, dict[str, Any]], path: str | os.PathLike,
                       title: str = "") -> Path:
    """Log-scale gradient norm per recurrent step, one curve per model."""
    plt = plots._pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for label, r in results.items():
        for ax, key in zip(axes, ("recurrent", "input"), strict=True):
            v = np.array([np.nan if x is None else x for x in r[key]], dtype=float)
            ax.semilogy(np.arange(1, len(v) + 1), v, label=label, lw=1)
    axes[0].set(xlabel="recurrent step t", ylabel="|dL/dx_t| at the recurrent layer",
                title="error reaching step t through the recurrence")
    axes[1].set(xlabel="input sample", ylabel="|dL/dx_t| at the input",
                title="error reaching each input sample")
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    out = plots._save(fig, path, 120)
    plt.close(fig)
    return out

