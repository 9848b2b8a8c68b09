"""ECG classifiers exported as LiteRT files, run by the LiteRT interpreter (no TensorFlow).

An export (:func:`ecgcap.ecg.export.export_classifier`) is two files side by side:
``NAME.tflite`` (one float32 function, batch size 1, recurrent layers as real ``WHILE`` loops)
and ``NAME.contract.json`` (what a runtime must feed it; see ``docs/export.md``). The contract
holds the sha256 of both the ``.tflite`` file and the ``.keras`` file it was made from, so a
corrupt, truncated or mismatched pair is refused in one line before anything runs.

:func:`load_litert_classifier` returns an object with the two methods the Keras code paths
call (``predict`` and ``predict_on_batch``), so :func:`ecgcap.ecg.inference.classify_record`
runs an export exactly as it runs a ``.keras`` model: same beat windows, same rhythm crops.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ecgcap.runtime.errors import EcgcapError

FORMAT = "ecgcap ECG classifier, LiteRT"
FORMAT_VERSION = 1
TFLITE_ID = b"TFL3"  # the flatbuffer file identifier of every .tflite file (bytes 4-8)


def contract_path(tflite: str | os.PathLike) -> Path:
    """The contract of ``NAME.tflite``: ``NAME.contract.json`` beside it (of an ONNX export
    ``NAME.onnx``: ``NAME.onnx.contract.json``, so both exports of a model can sit side by
    side; of a SavedModel folder ``NAME.saved_model``: ``NAME.saved_model.contract.json``)."""
    path = Path(tflite)
    if path.suffix in (".onnx", ".saved_model"):
        return path.with_name(path.name + ".contract.json")
    return path.with_name(path.stem + ".contract.json")


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_contract(model: Path, fmt: str, version: int, *, writer: str, kind: str
                  ) -> dict[str, Any]:
    """The JSON contract beside an exported ``model`` file, of format ``fmt`` and ``version``
    (one-line ``EcgcapError`` when absent, unreadable or of another format)."""
    cpath = contract_path(model)
    try:
        contract = json.loads(cpath.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EcgcapError(f"no {cpath.name} beside it: not an ecgcap ECG export ({writer} "
                          "writes both)", input=str(model)) from None
    except (OSError, ValueError) as exc:
        raise EcgcapError(f"unreadable contract ({exc})", input=str(cpath)) from None
    if (not isinstance(contract, dict) or contract.get("format") != fmt
            or contract.get("version") != version):
        raise EcgcapError(f"not a version-{version} ecgcap {kind} contract", input=str(cpath))
    return contract


def read_contract(tflite: str | os.PathLike) -> dict[str, Any]:
    """The contract of an exported ECG classifier, checked against its ``.tflite`` file.

    Raises ``EcgcapError`` (one line naming the file) when the ``.tflite`` file is missing,
    is not a LiteRT flatbuffer, has no readable contract, or does not match it (sha256).
    """
    path = Path(tflite)
    if not path.is_file():
        raise EcgcapError("no such model file" if not path.exists() else "is not a model file",
                          input=str(path))
    with open(path, "rb") as f:
        head = f.read(8)
    if len(head) < 8 or head[4:8] != TFLITE_ID:
        raise EcgcapError("not a LiteRT model (no TFL3 flatbuffer header)", input=str(path))
    cpath = contract_path(path)
    contract = load_contract(path, FORMAT, FORMAT_VERSION, writer="python -m ecgcap.export",
                             kind="ECG classifier")
    if contract.get("tflite_sha256") != sha256_file(path):
        raise EcgcapError(f"corrupt or changed: its sha256 is not the one {cpath.name} "
                          "records", input=str(path))
    return contract


class LiteRTClassifier:
    """An exported ECG classifier, called as the Keras model is (``predict``,
    ``predict_on_batch``); it runs the one-example function once per row.

    A rhythm export takes a fixed crop (``contract["crop_samples"]``): shorter rows are
    right-padded with zeros and a zero mask, as the Keras model's batches are.
    """

    def __init__(self, path: str | os.PathLike, contract: dict[str, Any], threads: int = 1):
        from ai_edge_litert.interpreter import Interpreter

        self.path = Path(path)
        self.contract = contract
        try:
            self.interpreter = Interpreter(model_path=str(self.path), num_threads=threads)
            self.runner = self.interpreter.get_signature_runner()
        except (ValueError, RuntimeError) as exc:
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            raise EcgcapError(f"not a loadable LiteRT model ({first})",
                              input=str(self.path)) from None
        self.inputs = {spec["name"]: spec for spec in contract["inputs"]}
        self.input = dict.fromkeys(self.inputs)  # what ecgcap.ecg.recordings.uses_rr reads
        self._first = True

    def _run(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        try:
            if self._first:  # the interpreter announces its CPU delegate on the first call
                from ecgcap.runtime.quiet import framework_quiet

                with framework_quiet():
                    out = self.runner(**feed)
                self._first = False
            else:
                out = self.runner(**feed)
        except (ValueError, RuntimeError) as exc:
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            raise EcgcapError(f"LiteRT model failed ({first})", input=str(self.path)) from None
        return out["probabilities"]

    def _row(self, inputs: dict[str, np.ndarray], i: int) -> dict[str, np.ndarray]:
        """Row ``i`` of a batch, shaped (and for a crop, padded) as the function expects."""
        feed = {}
        for name, spec in self.inputs.items():
            if name not in inputs:
                raise EcgcapError(f"the model needs an input {name!r}", input=str(self.path))
            x = np.asarray(inputs[name][i:i + 1], dtype=np.float32)
            shape = tuple(spec["shape"])
            if x.ndim >= 2 and x.shape[1] < shape[1] and len(shape) >= 2 and name in (
                    "signal", "mask"):  # a shorter rhythm crop: zeros, masked out
                pad = [(0, 0), (0, shape[1] - x.shape[1])] + [(0, 0)] * (x.ndim - 2)
                x = np.pad(x, pad)
            if x.shape != shape:
                raise EcgcapError(f"input {name!r} has shape {x.shape[1:]}, the export takes "
                                  f"{shape[1:]}", input=str(self.path))
            feed[name] = np.ascontiguousarray(x)
        return feed

    def predict_on_batch(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """Probabilities ``(batch, classes)`` for a dict of input arrays."""
        n = len(next(iter(inputs.values())))
        if n == 0:
            return np.zeros((0, len(self.contract["classes"])), dtype=np.float32)
        return np.concatenate([self._run(self._row(inputs, i)) for i in range(n)], axis=0)

    def predict(self, inputs: dict[str, np.ndarray], batch_size: int | None = None,
                verbose: int = 0) -> np.ndarray:  # noqa: ARG002 - Keras' signature
        """As :meth:`predict_on_batch` (the function takes one example at a time anyway)."""
        return self.predict_on_batch(inputs)


def load_litert_classifier(path: str | os.PathLike, threads: int = 1
                           ) -> tuple[LiteRTClassifier, dict[str, Any]]:
    """An exported ECG classifier and its description (the ``.keras`` file's ``ecgcap.json``,
    plus ``"runtime": "litert"``), as :func:`ecgcap.ecg.inference.load_classifier` returns
    a Keras model. One thread: at batch size 1 more threads only add overhead."""
    contract = read_contract(path)
    try:
        info = {**contract["info"], "runtime": "litert"}
        model = LiteRTClassifier(path, contract, threads)
    except (KeyError, TypeError) as exc:
        raise EcgcapError(f"the contract lacks {exc}",
                          input=str(contract_path(path))) from None
    return model, info
