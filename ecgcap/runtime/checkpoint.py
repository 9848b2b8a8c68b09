"""Training callbacks both wings use: checkpoints with resume state, and gradient logging."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np

from ecgcap.runtime.files import atomic_write_json
from ecgcap.runtime.gradients import GradientLog
from ecgcap.runtime.modelfile import save_model


class Checkpoint(keras.callbacks.Callback):
    """Every epoch: ``checkpoint.keras`` (with optimizer) and ``state.json``; the best model
    by ``monitor`` as ``best.keras``; stop after ``patience`` epochs without improvement.
    All files are written atomically, so an interrupted run resumes from a whole checkpoint.
    """

    def __init__(self, run_dir: Path, info: dict[str, Any], monitor: str = "val_macro_f1",
                 patience: int = 6, state: dict[str, Any] | None = None):
        super().__init__()
        self.run_dir, self.info = Path(run_dir), info
        self.monitor, self.patience = monitor, patience
        self.state = state or {"epoch": 0, "best": -np.inf, "best_epoch": 0, "wait": 0,
                               "history": {}}

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        for k, v in logs.items():
            self.state["history"].setdefault(k, []).append(float(v))
        score = float(logs.get(self.monitor, -np.inf))
        if score > self.state["best"]:
            self.state.update(best=score, best_epoch=epoch + 1, wait=0)
            save_model(self.model, self.run_dir / "best.keras", self.info)
        else:
            self.state["wait"] += 1
        self.state["epoch"] = epoch + 1
        save_model(self.model, self.run_dir / "checkpoint.keras", self.info)
        atomic_write_json(self.run_dir / "state.json", self.state)
        if self.state["wait"] >= self.patience:
            self.model.stop_training = True


def gradient_log(on: bool, inputs: Any, targets: np.ndarray,
                 loss: Any = None) -> list[keras.callbacks.Callback]:
    """``--log-gradients``: the callback list (empty when off), measured on a fixed batch."""
    return [GradientLog(inputs, targets, loss)] if on else []
