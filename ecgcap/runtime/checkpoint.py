"""Training callbacks both wings use: checkpoints with resume state, and gradient logging."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np

from ecgcap.runtime.files import atomic_write_json
from ecgcap.runtime.gradients import GradientLog
from ecgcap.runtime.modelfile import save_model


def rng_states(model: keras.Model) -> dict[str, list[int]]:
    """The state of every random generator in ``model``'s layers (dropout masks), by layer."""
    return {key: np.asarray(gen.state.value).tolist() for key, gen in _generators(model)}


def _generators(model: keras.Model) -> list[tuple[str, keras.random.SeedGenerator]]:
    """Every seed generator in ``model``, keyed by layer position and name (cells inside
    recurrent layers share names, e.g. ``lstm_cell``)."""
    out = []
    for i, layer in enumerate(model._flatten_layers(include_self=False)):
        for name, value in vars(layer).items():
            if isinstance(value, keras.random.SeedGenerator):
                out.append((f"{i}:{layer.name}/{name}", value))
    return out


def restore_rng_states(model: keras.Model, states: dict[str, list[int]]) -> None:
    """Put back what :func:`rng_states` saved, so that a resumed run draws the same dropout
    masks as an uninterrupted one."""
    for key, gen in _generators(model):
        if key in states:
            gen.state.assign(np.asarray(states[key], dtype=gen.state.dtype))


# options a resumed run may change: how long it trains and what it logs, not what it trains
RESUMABLE_OPTIONS = frozenset({"epochs", "patience", "fold", "log_gradients"})


def _flat(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``config`` as JSON would give it back, nested dicts as dotted keys."""
    out: dict[str, Any] = {}
    for key, value in json.loads(json.dumps(config)).items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def check_same_config(saved: dict[str, Any] | None, current: dict[str, Any], where: Path, *,
                      may_change: frozenset[str] = RESUMABLE_OPTIONS,
                      legacy: dict[str, Any] | None = None) -> None:
    """Refuse (exit 2) to resume a run under options other than those it began with
    (``saved``, from its ``state.json``), apart from ``may_change``. Nothing to compare
    (``saved`` is ``None``: a run begun before configs were saved) passes. An option the saved
    config lacks (added to the toolkit since the run began) is compared with its ``legacy``
    value, what runs did before it existed; without one it is not compared."""
    from ecgcap.runtime.errors import EXIT_USAGE, EcgcapError

    if saved is None:
        return
    before, now = {**_flat(legacy or {}), **_flat(saved)}, _flat(current)
    changed = [f"{k} {before[k]!r} -> {now[k]!r}" for k in sorted(before.keys() & now.keys())
               if k not in may_change and before[k] != now[k]]
    if changed:
        raise EcgcapError("the run began with other options (" + "; ".join(changed) +
                          "); resume with the options it began with", input=str(where),
                          exit_code=EXIT_USAGE)


def check_resume_config(state_files: Path | list[Path], config: dict[str, Any], *,
                        may_change: frozenset[str] = RESUMABLE_OPTIONS,
                        legacy: dict[str, Any] | None = None) -> None:
    """Before any work: refuse (exit 2) to go on with the runs whose ``state.json`` files are
    given under other options than ``config`` (:func:`check_same_config`); files that are not
    there (nothing trained yet) are skipped. A ``state.json`` from before runs kept their config
    is checked against the ``report.json`` beside it, when the run got as far as writing one."""
    for path in [Path(p) for p in ([state_files] if isinstance(state_files, Path)
                                   else state_files)]:
        if path.is_file():
            saved = json.loads(path.read_text()).get("config")
            report = path.parent / "report.json"
            if saved is None and report.is_file():
                saved = json.loads(report.read_text()).get("config")
            check_same_config(saved, config, path.parent, may_change=may_change, legacy=legacy)


class Checkpoint(keras.callbacks.Callback):
    """Every epoch: ``checkpoint.keras`` (with optimizer) and ``state.json``; the best model
    by ``monitor`` as ``best.keras``; stop after ``patience`` epochs without improvement.
    With ``monitor=None`` (no validation data) every epoch is the best so far: ``best.keras``
    is the latest epoch and training runs all its epochs.
    All files are written atomically, so an interrupted run resumes from a whole checkpoint;
    ``state.json`` also holds the dropout generators' states (:func:`restore_rng_states`)
    and the run's ``config`` (:func:`check_resume_config`).

    Distributed runs keep the decisions (history, best epoch, early stopping) on every worker
    but ``save_models`` only on the chief, and leave the weights of the last epoch to
    ``keras.callbacks.BackupAndRestore`` (``save_last=False``), with ``state.json`` beside it
    (``state_path``).
    """

    def __init__(self, run_dir: Path, info: dict[str, Any], monitor: str | None = "val_macro_f1",
                 patience: int = 6, state: dict[str, Any] | None = None, *,
                 save_models: bool = True, save_last: bool = True,
                 state_path: Path | None = None, config: dict[str, Any] | None = None):
        super().__init__()
        self.run_dir, self.info = Path(run_dir), info
        self.monitor, self.patience = monitor, patience
        self.save_models, self.save_last = save_models, save_last
        self.state_path = Path(state_path) if state_path else self.run_dir / "state.json"
        self.state = state or {"epoch": 0, "best": -np.inf, "best_epoch": 0, "wait": 0,
                               "history": {}}
        if config is not None:  # what check_resume_config compares a resumed run with
            self.state["config"] = json.loads(json.dumps(config))
        # the dropout generators' states a resumed run starts from (streamed_checkpoint
        # replaces them with those of the backup's epoch)
        self.restore_rng: dict[str, list[int]] | None = (state or {}).get("rng")

    def on_train_begin(self, logs: dict | None = None) -> None:
        if self.restore_rng:  # a resumed run draws the dropout masks an unstopped one draws
            restore_rng_states(self.model, self.restore_rng)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch_start = time.perf_counter()

    @property
    def trained_seconds(self) -> float | None:
        """Seconds spent in the epochs run so far, over every session of a resumed run
        (``None`` when an older ``state.json`` did not record them)."""
        seconds = self.state.get("epoch_seconds", [])
        return float(sum(seconds)) if len(seconds) == self.state["epoch"] else None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        start = getattr(self, "_epoch_start", None)
        if start is not None:
            self.state.setdefault("epoch_seconds", []).append(
                round(time.perf_counter() - start, 2))
        for k, v in logs.items():
            self.state["history"].setdefault(k, []).append(float(v))
        score = float(logs.get(self.monitor, -np.inf)) if self.monitor else None
        if score is None or score > self.state["best"]:  # no monitor: the latest epoch
            if score is not None:
                self.state["best"] = score
            self.state.update(best_epoch=epoch + 1, wait=0)
            if self.save_models:
                save_model(self.model, self.run_dir / "best.keras", self.info)
        else:
            self.state["wait"] += 1
        self.state["epoch"] = epoch + 1
        self.state["rng"] = rng_states(self.model)
        if not self.save_last:  # the backup may stand an epoch behind: keep each epoch's
            self.state.setdefault("rng_by_epoch", {})[str(epoch + 1)] = self.state["rng"]
        if self.save_models and self.save_last:
            save_model(self.model, self.run_dir / "checkpoint.keras", self.info)
        atomic_write_json(self.state_path, self.state)
        if self.state["wait"] >= self.patience:
            self.model.stop_training = True


def gradient_log(on: bool, inputs: Any, targets: np.ndarray,
                 loss: Any = None) -> list[keras.callbacks.Callback]:
    """``--log-gradients``: the callback list (empty when off), measured on a fixed batch."""
    return [GradientLog(inputs, targets, loss)] if on else []


class StopOnSignal(keras.callbacks.Callback):
    """Ctrl-C (SIGINT) and SIGTERM during ``fit`` stop training cleanly at the next batch.

    The signal only sets a flag; the next ``on_train_batch_end`` raises ``KeyboardInterrupt``,
    so an epoch-end checkpoint (model and ``state.json``) is never cut in the middle, and the
    last whole epoch's checkpoint is what ``--resume`` continues from. Training functions turn
    the interrupt into :func:`interrupted`. The previous handlers are restored after ``fit``.
    """

    def __init__(self):
        super().__init__()
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:  # noqa: ARG002 - signal handler signature
        self.signal = signum

    def on_train_begin(self, logs: dict | None = None) -> None:
        import signal
        import threading

        if threading.current_thread() is not threading.main_thread():
            return  # handlers can only be installed from the main thread
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self.signal is not None:
            raise KeyboardInterrupt

    def on_train_end(self, logs: dict | None = None) -> None:
        import signal

        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


def interrupted(run_dir: Path, state: dict[str, Any]) -> Exception:
    """The error a training command ends with after Ctrl-C or SIGTERM (exit code 130)."""
    from ecgcap.runtime.errors import EcgcapError

    done = state.get("epoch", 0)
    return EcgcapError(f"interrupted; {done} whole epochs are checkpointed in {run_dir}: "
                       "continue with --resume", input="training", exit_code=130)


def checkpoint_files(run_dir: Path, *, resume: bool) -> tuple[Path, Path]:
    """``checkpoint.keras`` and ``state.json`` of ``run_dir``; with ``resume``, refused (exit 2)
    unless both are there, so that a run with nothing to continue stops before any work."""
    from ecgcap.runtime.errors import EXIT_USAGE, EcgcapError

    ckpt, state_file = Path(run_dir) / "checkpoint.keras", Path(run_dir) / "state.json"
    if resume and not (ckpt.is_file() and state_file.is_file()):
        raise EcgcapError("--resume given but the run folder has no checkpoint",
                          input=str(run_dir), exit_code=EXIT_USAGE)
    return ckpt, state_file


def check_same_model(resumed: keras.Model, configured: keras.Model, ckpt: Path) -> None:
    """Refuse (exit 2) to resume ``ckpt`` when its weights do not fit the model the options
    describe, e.g. a run begun with ``--layers 1`` resumed under a default of 2."""
    from ecgcap.runtime.errors import EXIT_USAGE, EcgcapError

    def shapes(model: keras.Model) -> list[tuple[int, ...]]:
        return [tuple(w.shape) for w in model.weights]

    if shapes(resumed) != shapes(configured):
        raise EcgcapError("the checkpoint's model differs from the one these options build; "
                          "resume with the options the run began with (--layers, --units, "
                          "--conv-filters, ...)", input=str(ckpt), exit_code=EXIT_USAGE)


def backup_epoch(backup_dir: Path) -> int:
    """Epochs finished according to ``keras.callbacks.BackupAndRestore``'s files (0: none)."""
    meta = Path(backup_dir) / "training_metadata.json"
    return int(json.loads(meta.read_text())["epoch"]) if meta.is_file() else 0


def restored_state(backup_dir: Path, epoch: int, monitor: str) -> dict[str, Any] | None:
    """``state.json`` beside the backup, cut back to the backup's epoch: the history, and the
    best epoch, best score and epochs without a gain recomputed from it (``state.json`` is
    written just before the backup, so it may be an epoch ahead)."""
    path = Path(backup_dir) / "state.json"
    if not epoch or not path.is_file():
        return None
    state = json.loads(path.read_text())
    state["history"] = {k: v[:epoch] for k, v in state["history"].items()}
    if "epoch_seconds" in state:
        state["epoch_seconds"] = state["epoch_seconds"][:epoch]
    scores = state["history"].get(monitor, [])
    if len(scores) != epoch:
        return None  # not this backup's state: start the selection afresh
    best = int(np.argmax(scores))  # the first of equal scores, as the callback keeps it
    state.update(epoch=epoch, best=float(scores[best]), best_epoch=best + 1,
                 wait=epoch - (best + 1))
    return state


def streamed_checkpoint(run_dir: Path, info: dict[str, Any], monitor: str, patience: int,
                        distribution: Any, backup: Path, first_epoch: int, *,
                        config: dict[str, Any] | None = None) -> Checkpoint:
    """The :class:`Checkpoint` of a streamed run: decisions on every worker, models from the
    chief only, the weights left to ``BackupAndRestore`` in ``backup``, the state beside them
    (with the dropout generators' states of every epoch, put back for ``first_epoch``)."""
    state = restored_state(backup, first_epoch, monitor)
    checkpoint = Checkpoint(run_dir, info, monitor=monitor, patience=patience, state=state,
                            save_models=distribution.is_chief, save_last=False,
                            state_path=Path(backup) / "state.json", config=config)
    checkpoint.restore_rng = (state or {}).get("rng_by_epoch", {}).get(str(first_epoch))
    return checkpoint


def fit_resumable(model: keras.Model, data: Any, checkpoint: Checkpoint, run_dir: Path, *,
                  epochs: int, initial_epoch: int, **fit: Any) -> float:
    """``model.fit`` unless the run is over (``epochs`` reached or patience spent); Ctrl-C and
    SIGTERM end it with :func:`interrupted`. Returns the seconds the run has trained, over all
    its sessions when it was resumed (:attr:`Checkpoint.trained_seconds`), else this call's."""
    start = time.perf_counter()
    if initial_epoch < epochs and checkpoint.state["wait"] < checkpoint.patience:
        try:
            model.fit(data, epochs=epochs, initial_epoch=initial_epoch, **fit)
        except KeyboardInterrupt:
            raise interrupted(run_dir, checkpoint.state) from None
    total = checkpoint.trained_seconds
    return total if total is not None else time.perf_counter() - start
