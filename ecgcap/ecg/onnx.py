"""ECG classifiers exported as ONNX files, run by ONNX Runtime (no TensorFlow).

An ONNX export (:func:`ecgcap.ecg.export.export_classifier` with ``fmt="onnx"``) is two files
side by side: ``NAME.onnx`` (one float32 graph; the batch size is free, the beat window or the
rhythm crop fixed; the LSTMs are ONNX ``LSTM`` or ``Loop`` ops stepping over time) and
``NAME.onnx.contract.json``, the same contract as a LiteRT export's (``docs/export.md``) with
``onnx_sha256``. A corrupt or mismatched pair is refused in one line before anything runs.

``onnxruntime`` is an optional dependency (``pip install 'ecgcap[export]'``); without it
loading an ONNX export is refused in one line.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ecgcap.ecg.litert import contract_path, load_contract, sha256_file
from ecgcap.runtime.errors import EcgcapError

FORMAT = "ecgcap ECG classifier, ONNX"
FORMAT_VERSION = 1
BATCH = 1024  # rows per ONNX Runtime call
INSTALL = "pip install 'ecgcap[export]'"


def read_contract(path: str | os.PathLike) -> dict[str, Any]:
    """The contract of an ONNX export, checked against its ``.onnx`` file (sha256).

    Raises ``EcgcapError`` (one line naming the file) when the file is missing, has no
    readable contract, or does not match it.
    """
    path = Path(path)
    if not path.is_file():
        raise EcgcapError("no such model file" if not path.exists() else "is not a model file",
                          input=str(path))
    cpath = contract_path(path)
    contract = load_contract(path, FORMAT, FORMAT_VERSION,
                             writer="python -m ecgcap.export --format onnx",
                             kind="ONNX ECG classifier")
    if contract.get("onnx_sha256") != sha256_file(path):
        raise EcgcapError(f"corrupt or changed: its sha256 is not the one {cpath.name} "
                          "records", input=str(path))
    return contract


def session(model: str | os.PathLike | bytes, source: str, threads: int = 1) -> Any:
    """An ONNX Runtime CPU session for a file or serialised model; one line if it fails."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise EcgcapError(f"ONNX exports need onnxruntime ({INSTALL})", input=source) from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # its warnings about unused initializers are not ours
    try:
        return ort.InferenceSession(model if isinstance(model, bytes) else str(model), options,
                                    providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise EcgcapError(f"not a loadable ONNX model ({first})", input=source) from None


class OnnxClassifier:
    """An ONNX export, called as the Keras model is (``predict``, ``predict_on_batch``).

    A rhythm export takes a fixed crop (``contract["crop_samples"]``): shorter rows are
    right-padded with zeros and a zero mask, as the Keras model's batches are.
    """

    def __init__(self, path: str | os.PathLike, contract: dict[str, Any], threads: int = 1):
        self.path = Path(path)
        self.contract = contract
        self.session = session(self.path, str(self.path), threads)
        self.inputs = {spec["name"]: spec for spec in contract["inputs"]}
        self.input = dict.fromkeys(self.inputs)  # what ecgcap.ecg.recordings.uses_rr reads

    def _feed(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = {}
        for name, spec in self.inputs.items():
            if name not in inputs:
                raise EcgcapError(f"the model needs an input {name!r}", input=str(self.path))
            x = np.asarray(inputs[name], dtype=np.float32)
            shape = tuple(spec["shape"][1:])
            if x.ndim >= 2 and name in ("signal", "mask") and x.shape[1] < shape[0]:
                pad = [(0, 0), (0, shape[0] - x.shape[1])] + [(0, 0)] * (x.ndim - 2)
                x = np.pad(x, pad)  # a shorter rhythm crop: zeros, masked out
            if x.shape[1:] != shape:
                raise EcgcapError(f"input {name!r} has shape {x.shape[1:]}, the export takes "
                                  f"{shape}", input=str(self.path))
            feed[name] = np.ascontiguousarray(x)
        return feed

    def predict_on_batch(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """Probabilities ``(batch, classes)`` for a dict of input arrays."""
        n = len(next(iter(inputs.values())))
        if n == 0:
            return np.zeros((0, len(self.contract["classes"])), dtype=np.float32)
        out = []
        for start in range(0, n, BATCH):
            feed = self._feed({k: v[start:start + BATCH] for k, v in inputs.items()})
            try:
                out.append(self.session.run(["probabilities"], feed)[0])
            except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types
                first = (str(exc).strip().splitlines() or [""])[0][:200]
                raise EcgcapError(f"ONNX model failed ({first})", input=str(self.path)) from None
        return np.concatenate(out, axis=0)

    def predict(self, inputs: dict[str, np.ndarray], batch_size: int | None = None,
                verbose: int = 0) -> np.ndarray:  # noqa: ARG002 - Keras' signature
        """As :meth:`predict_on_batch`."""
        return self.predict_on_batch(inputs)


def load_onnx_classifier(path: str | os.PathLike, threads: int = 1
                         ) -> tuple[OnnxClassifier, dict[str, Any]]:
    """An ONNX export and its description (the ``.keras`` file's ``ecgcap.json``, plus
    ``"runtime": "onnx"``), as :func:`ecgcap.ecg.inference.load_classifier` returns a Keras
    model."""
    contract = read_contract(path)
    try:
        info = {**contract["info"], "runtime": "onnx"}
        model = OnnxClassifier(path, contract, threads)
    except (KeyError, TypeError) as exc:
        raise EcgcapError(f"the contract lacks {exc}",
                          input=str(contract_path(path))) from None
    return model, info
