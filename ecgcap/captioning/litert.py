"""Captioners as LiteRT (TensorFlow Lite) files: export, and captioning without TensorFlow.

A device runs beam search as three functions, and so does this module. ``export_captioner``
writes, into a folder (``NAME.litert/`` beside ``NAME.keras`` by convention):

- ``encode.tflite``: image ``(N, S, S, 3)`` uint8-range floats -> feature map, image vector;
- ``init.tflite``: image vector -> the decoder's initial states;
- ``step.tflite``: ``[token (N, 1) int32, vector, feature map, *states]`` -> ``[logits (N, V),
  *states]`` (and the attention weights ``alpha (N, regions)`` last, for attention models);
- ``contract.json``: what a runtime must know to feed them (image size and pixel range, the
  vocabulary, the start/end tokens, the maximum length, each function's inputs and outputs in
  order) and the sha256 of the ``.keras`` file they were made from.

:func:`load_captioner_litert` reads such a folder with the LiteRT interpreter
(``ai-edge-litert``), which loads in a fraction of a second where importing TensorFlow takes
several: the returned parts plug into :class:`ecgcap.captioning.decoding.CaptionDecoder`, so the
greedy and beam captions are the Keras model's (tested on real photos).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ecgcap.captioning.decoding import model_length_penalty
from ecgcap.runtime.errors import EcgcapError
from ecgcap.runtime.files import atomic_write_json, current_umask

CONTRACT = "contract.json"
FUNCTIONS = ("encode", "init", "step")
FORMAT_VERSION = 1


def litert_folder(keras_path: str | os.PathLike) -> Path:
    """The conventional LiteRT folder of a ``.keras`` file: ``NAME.litert`` beside it."""
    path = Path(keras_path)
    return path.with_name(path.stem + ".litert")


def output_names(parts: Any) -> dict[str, list[str]]:
    """Readable names of each function's outputs, in order: ``feature_map, vector``; the
    states (``h1, c1, ...``); ``logits``, the new states and ``alpha`` (attention models)."""
    states = [t.name for t in parts.step.inputs[3:]]
    return {"encode": ["feature_map", "vector"], "init": states,
            "step": ["logits", *states, *(["alpha"] if parts.returns_attention else [])]}


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def input_signature(model: Any) -> list[Any]:
    """``tf.TensorSpec``s of a Keras model's inputs, named ``in0, in1, ...``, batch size free."""
    import tensorflow as tf

    return [tf.TensorSpec((None, *t.shape[1:]), t.dtype, name=f"in{i}")
            for i, t in enumerate(model.inputs)]


def endpoint(model: Any) -> Any:
    """``model`` as a function of positional tensors returning ``{"out0": ..., ...}``: what
    every export (LiteRT, SavedModel, ONNX) traces."""

    def fn(*xs):
        out = model(list(xs) if len(xs) > 1 else xs[0], training=False)
        out = list(out) if isinstance(out, (list, tuple)) else [out]
        return {f"out{i}": o for i, o in enumerate(out)}

    return fn


def contract_header(fmt: str, keras_path: Path, parts: Any, info: dict[str, Any]
                    ) -> dict[str, Any]:
    """The fields every export's ``contract.json`` shares: the format, the source file and its
    sha256, the pixel contract, the vocabulary and tokens, and the decoding defaults."""
    return {
        "format": fmt, "version": FORMAT_VERSION,
        "source": keras_path.name, "source_sha256": sha256_file(keras_path),
        "image_size": int(parts.encoder.inputs[0].shape[1]),
        "pixels": "RGB, 0-255 as float32, (N, S, S, 3); the model scales them itself",
        "max_length": parts.max_length, "attention": parts.attention,
        "returns_attention": parts.returns_attention,
        "tokens": {"pad": 0, "unk": 1, "start": 2, "end": 3},
        "vocabulary": list(parts.vocabulary),
        "dataset": info.get("dataset"), "describes": info.get("describes"),
        "length_penalty": model_length_penalty(info)}


def make_temp_folder(folder: Path) -> Path:
    """An empty folder beside ``folder`` (readable as the umask allows), to build an export
    in before :func:`replace_folder` puts it in place."""
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent
                                if folder.parent.is_dir() else None))
    umask = current_umask()
    tmp.chmod(0o777 & ~umask)  # mkdtemp's 0700 would hide the export from other users
    return tmp


def replace_folder(built: Path, folder: Path) -> None:
    """Rename the finished export ``built`` to ``folder``; an earlier export there (checked by
    :func:`_check_out`) is moved aside first and then removed."""
    import shutil
    import tempfile

    old = None
    if folder.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old.", dir=folder.parent))
        folder.rename(old / folder.name)
    built.rename(folder)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def parts_from_contract(contract: dict[str, Any], functions: list[Any], source: Path
                        ) -> LiteRTParts:
    """``LiteRTParts`` of loaded ``encode, init, step`` functions, the rest from ``contract``
    (``EcgcapError`` naming ``source`` when a field is missing)."""
    try:
        return LiteRTParts(*functions, vocabulary=list(contract["vocabulary"]),
                           max_length=int(contract["max_length"]),
                           attention=bool(contract["attention"]),
                           returns_attention=bool(contract["returns_attention"]),
                           image_size=int(contract["image_size"]),
                           info={"dataset": contract.get("dataset"),
                                 "describes": contract.get("describes"),
                                 "length_penalty": model_length_penalty(contract)})
    except (KeyError, TypeError) as exc:
        raise EcgcapError(f"contract.json lacks {exc}", input=str(source)) from None


def _convert(model: Any) -> bytes:
    """A Keras functional model -> a float32 ``.tflite`` flatbuffer whose batch size varies."""
    import tensorflow as tf

    fn = tf.function(endpoint(model), input_signature=input_signature(model))

    holder = tf.Module()  # tracks the variables, so that the converter freezes them
    holder.variables_ = [getattr(v, "value", v) for v in model.weights]
    holder.fn = fn
    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()],
                                                                holder)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    try:
        return converter.convert()
    except Exception as exc:  # noqa: BLE001 - the converter raises many types
        reason = next((line.split("error:", 1)[1].strip() for line in str(exc).splitlines()
                       if "error:" in line), type(exc).__name__)
        raise EcgcapError(f"its {model.name} function does not convert to LiteRT builtin ops "
                          f"({reason[:160]})") from None


def export_captioner(keras_path: str | os.PathLike, out: str | os.PathLike | None = None
                     ) -> Path:
    """Export the captioner in ``keras_path`` to a LiteRT folder (default
    :func:`litert_folder`); returns the folder. The folder is written whole or not at all."""
    import shutil

    from ecgcap.captioning.inference import load_captioner
    from ecgcap.captioning.models import decoder_parts

    keras_path = Path(keras_path)
    folder = Path(out) if out is not None else litert_folder(keras_path)
    _check_out(folder, keras_path)
    model, info = load_captioner(keras_path)
    parts = decoder_parts(model)
    functions = {"encode": parts.encoder, "init": parts.init, "step": parts.step}
    tmp = make_temp_folder(folder)
    try:
        contract = {**contract_header("ecgcap captioner, LiteRT", keras_path, parts, info),
                    "functions": {}}
        for name, fn_model in functions.items():
            try:
                flatbuffer = _convert(fn_model)
            except EcgcapError as exc:
                raise EcgcapError(str(exc), input=str(keras_path)) from None
            (tmp / f"{name}.tflite").write_bytes(flatbuffer)
            contract["functions"][name] = {
                "file": f"{name}.tflite",
                "inputs": [[t.name, [None, *t.shape[1:]], str(t.dtype)]
                           for t in fn_model.inputs],
                "outputs": [[t.name, [None, *t.shape[1:]], str(t.dtype)]
                            for t in fn_model.outputs]}
        atomic_write_json(tmp / CONTRACT, contract)
        replace_folder(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def _check_out(folder: Path, keras_path: Path) -> None:
    """Refuse an output folder whose replacement would destroy anything but an earlier
    export: a file, a folder holding the model itself, a non-empty folder with no
    contract.json."""
    if folder.exists() and not folder.is_dir():
        raise EcgcapError("exists and is not a folder", input=str(folder))
    if not folder.is_dir():
        return
    source = keras_path.resolve()
    if folder.resolve() in source.parents:
        raise EcgcapError(f"holds {keras_path.name} itself; name a new folder for the export",
                          input=str(folder))
    if any(folder.iterdir()) and not (folder / CONTRACT).is_file():
        raise EcgcapError("a folder that is not an ecgcap captioner export (no "
                          "contract.json); not replaced: name a new or empty folder",
                          input=str(folder))


class _Function:
    """One exported function, called like a Keras model's ``predict_on_batch``."""

    def __init__(self, path: Path, threads: int):
        from ai_edge_litert.interpreter import Interpreter

        try:
            self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
            self.runner = self.interpreter.get_signature_runner()
        except (ValueError, RuntimeError) as exc:
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            raise EcgcapError(f"not a loadable LiteRT model ({first})", input=str(path)) from None
        self.path = path
        self._first = True

    def predict_on_batch(self, x: Any) -> list[np.ndarray]:
        xs = x if isinstance(x, (list, tuple)) else [x]
        feed = {f"in{i}": np.ascontiguousarray(v) for i, v in enumerate(xs)}
        if self._first:  # the interpreter announces its CPU delegate on the first call
            from ecgcap.runtime.quiet import framework_quiet

            with framework_quiet():
                out = self._run(feed)
            self._first = False
        else:
            out = self._run(feed)
        return [out[f"out{i}"] for i in range(len(out))]

    def _run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            return self.runner(**feed)
        except (ValueError, RuntimeError) as exc:
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            raise EcgcapError(f"LiteRT model failed ({first})", input=str(self.path)) from None


@dataclass
class LiteRTParts:
    """The decoding parts (as :class:`ecgcap.captioning.models.DecoderParts`) of an exported
    captioner."""

    encoder: _Function
    init: _Function
    step: _Function
    vocabulary: list[str]
    max_length: int
    attention: bool
    returns_attention: bool
    image_size: int
    info: dict[str, Any] = field(default_factory=dict)


def read_contract(folder: str | os.PathLike) -> dict[str, Any]:
    """The ``contract.json`` of a LiteRT captioner folder (``EcgcapError`` when unreadable)."""
    path = Path(folder) / CONTRACT
    try:
        contract = json.loads(path.read_text())
    except FileNotFoundError:
        raise EcgcapError("no contract.json: not an exported captioner folder",
                          input=str(folder)) from None
    except (OSError, ValueError) as exc:
        raise EcgcapError(f"unreadable contract ({exc})", input=str(path)) from None
    if not isinstance(contract, dict) or contract.get("version") != FORMAT_VERSION:
        raise EcgcapError(f"not a version-{FORMAT_VERSION} ecgcap captioner contract",
                          input=str(path))
    return contract


def is_current(folder: str | os.PathLike, keras_path: str | os.PathLike) -> bool:
    """True when ``folder`` holds an export of exactly the file ``keras_path``."""
    try:
        contract = read_contract(folder)
    except EcgcapError:
        return False
    return contract.get("source_sha256") == sha256_file(keras_path)


def load_captioner_litert(folder: str | os.PathLike, *, threads: int | None = None
                          ) -> LiteRTParts:
    """The decoding parts of an exported captioner folder, run by the LiteRT interpreter."""
    from ecgcap.runtime.device import cpu_threads

    folder = Path(folder)
    contract = read_contract(folder)
    n = threads or cpu_threads()
    try:
        functions = [_Function(folder / contract["functions"][name]["file"], n)
                     for name in FUNCTIONS]
    except (KeyError, TypeError) as exc:
        raise EcgcapError(f"contract.json lacks {exc}", input=str(folder / CONTRACT)) from None
    return parts_from_contract(contract, functions, folder / CONTRACT)
