"""Captioners as three ONNX graphs: export (tf2onnx) and captioning with ONNX Runtime.

:func:`export_captioner_onnx` writes ``NAME.onnx/`` beside ``NAME.keras`` (or ``--out DIR``):
``encode.onnx``, ``init.onnx`` and ``step.onnx``, the three functions of the LiteRT export
(:mod:`ecgcap.captioning.litert`) with a free batch size, inputs ``in0, in1, ...`` and outputs
``out0, out1, ...`` in the order ``contract.json`` lists them, and ``contract.json`` (the
LiteRT contract with ``format`` ``"ecgcap captioner, ONNX"`` and each file's sha256). Each
graph is converted by tf2onnx (with Keras' numpy-2 patch), run once by ONNX Runtime on a
pseudo-random image (encode, init, two steps) and compared with Keras before anything is
renamed into place: refused at a max abs difference of ``TOLERANCE`` or more.
:func:`load_captioner_onnx` gives parts for :class:`ecgcap.captioning.decoding.CaptionDecoder`.
Needs ``tf2onnx``, ``onnx`` and ``onnxruntime`` (``pip install 'ecgcap[export]'``).
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ecgcap.captioning.litert import (
    CONTRACT,
    FUNCTIONS,
    LiteRTParts,
    _check_out,
    contract_header,
    endpoint,
    input_signature,
    make_temp_folder,
    output_names,
    parts_from_contract,
    read_contract,
    replace_folder,
    sha256_file,
)
from ecgcap.runtime.errors import EcgcapError
from ecgcap.runtime.files import atomic_write_json, current_umask

FORMAT = "ecgcap captioner, ONNX"
TOLERANCE = 1e-4  # max abs difference from Keras accepted at export (float32)
INSTALL = "pip install 'ecgcap[export]'"


def onnx_folder(keras_path: str | os.PathLike) -> Path:
    """The conventional ONNX folder of a ``.keras`` file: ``NAME.onnx`` beside it."""
    path = Path(keras_path)
    return path.with_name(path.stem + ".onnx")


def _convert(model: Any, source: str) -> bytes:
    """A Keras functional model -> an ONNX graph (free batch size, ``in{i}`` -> ``out{i}``)."""
    try:
        import tensorflow as tf
        import tf2onnx
        from keras.src.export.tf2onnx_lib import patch_tf2onnx
    except ImportError:
        raise EcgcapError(f"ONNX exports need tf2onnx and onnx ({INSTALL})",
                          input="--format onnx") from None
    signature = input_signature(model)
    with warnings.catch_warnings():  # the patch's own FutureWarning about np.object
        warnings.simplefilter("ignore", FutureWarning)
        patch_tf2onnx()  # tf2onnx 1.17 still uses numpy names that numpy 2 removed
    try:
        proto, _ = tf2onnx.convert.from_function(
            tf.function(endpoint(model), input_signature=signature), input_signature=signature)
    except Exception as exc:  # noqa: BLE001 - tf2onnx raises many types
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise EcgcapError(f"its {model.name} function does not convert to ONNX ({first})",
                          input=source) from None
    extra = [i.name for i in proto.graph.input if not i.name.startswith("in")]
    if extra:
        raise EcgcapError(f"its {model.name} ONNX graph wants inputs it was not given "
                          f"({extra[0]})", input=source)
    return proto.SerializeToString()


class _Function:
    """One ONNX graph, called like a Keras model's ``predict_on_batch``."""

    def __init__(self, data: bytes | Path, source: str):
        try:
            import onnxruntime as ort
        except ImportError:
            raise EcgcapError(f"ONNX exports need onnxruntime ({INSTALL})",
                              input=source) from None
        options = ort.SessionOptions()
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(
                data if isinstance(data, bytes) else str(data), options,
                providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            raise EcgcapError(f"not a loadable ONNX model ({first})", input=source) from None
        types = {"tensor(float)": np.float32, "tensor(int32)": np.int32,
                 "tensor(int64)": np.int64}
        self.dtypes = {i.name: types.get(i.type, np.float32) for i in self.session.get_inputs()}
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.outputs.sort(key=lambda name: int(name[3:]))

    def predict_on_batch(self, x: Any) -> list[np.ndarray]:
        xs = x if isinstance(x, (list, tuple)) else [x]
        return self.session.run(self.outputs, {
            f"in{i}": np.ascontiguousarray(v, dtype=self.dtypes[f"in{i}"])
            for i, v in enumerate(xs)})


def _check(graphs: dict[str, _Function], functions: dict[str, Any], source: str) -> float:
    """encode, init and two greedy steps of a pseudo-random image through ONNX Runtime and
    Keras; refuse unless every output is within ``TOLERANCE``. Returns the largest
    difference."""
    size = int(functions["encode"].inputs[0].shape[1])
    image = np.random.default_rng(0).integers(0, 256, (1, size, size, 3)).astype(np.float32)
    diffs: list[float] = []

    def run(name: str, x: Any) -> list[np.ndarray]:
        got = graphs[name].predict_on_batch(x)
        ref = functions[name].predict_on_batch(x)
        ref = ref if isinstance(ref, (list, tuple)) else [ref]
        diffs.extend(float(np.max(np.abs(a - np.asarray(b)))) for a, b in zip(got, ref,
                                                                                 strict=True))
        return got

    fmap, vec = run("encode", image)
    states = run("init", vec)
    token = np.full((1, 1), 2, np.int32)
    for _ in range(2):
        out = run("step", [token, vec, fmap, *states])
        states = out[1:1 + len(states)]
        token = out[0].argmax(-1).astype(np.int32)[:, None]
    diff = max(diffs)
    if not diff < TOLERANCE:
        raise EcgcapError(f"the ONNX export answers unlike the Keras model (max abs "
                          f"difference {diff:.2g} >= {TOLERANCE:g})", input=source)
    return diff


def export_captioner_onnx(keras_path: str | os.PathLike, out: str | os.PathLike | None = None
                          ) -> Path:
    """Export the captioner in ``keras_path`` as three ONNX graphs in a folder (default
    :func:`onnx_folder`); returns the folder, written whole or not at all."""
    from ecgcap.captioning.inference import load_captioner
    from ecgcap.captioning.models import decoder_parts
    from ecgcap.runtime.quiet import framework_quiet

    keras_path = Path(keras_path)
    source = str(keras_path)
    folder = Path(out) if out is not None else onnx_folder(keras_path)
    _check_out(folder, keras_path)
    with framework_quiet():
        model, info = load_captioner(keras_path)
        parts = decoder_parts(model)
        functions = {"encode": parts.encoder, "init": parts.init, "step": parts.step}
        data = {name: _convert(fn_model, source) for name, fn_model in functions.items()}
        diff = _check({name: _Function(d, source) for name, d in data.items()}, functions,
                      source)
    tmp = make_temp_folder(folder)
    umask = current_umask()
    try:
        names = output_names(parts)
        contract: dict[str, Any] = {
            **contract_header(FORMAT, keras_path, parts, info),
            "checked_max_abs_difference": diff,
            "functions": {}}
        for name, fn_model in functions.items():
            (tmp / f"{name}.onnx").write_bytes(data[name])
            contract["functions"][name] = {
                "file": f"{name}.onnx", "sha256": sha256_file(tmp / f"{name}.onnx"),
                "inputs": [[f"in{i}", t.name, [None, *t.shape[1:]], str(t.dtype)]
                           for i, t in enumerate(fn_model.inputs)],
                "outputs": [[f"out{i}", names[name][i], [None, *t.shape[1:]], str(t.dtype)]
                            for i, t in enumerate(fn_model.outputs)]}
            (tmp / f"{name}.onnx").chmod(0o666 & ~umask)
        atomic_write_json(tmp / CONTRACT, contract)
        replace_folder(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def load_captioner_onnx(folder: str | os.PathLike) -> LiteRTParts:
    """The decoding parts of an exported ONNX captioner folder, run by ONNX Runtime (no
    TensorFlow); a file whose sha256 is not its contract's is refused."""
    folder = Path(folder)
    contract = read_contract(folder)
    if contract.get("format") != FORMAT:
        raise EcgcapError(f"not an {FORMAT} export", input=str(folder / CONTRACT))
    try:
        entries = [contract["functions"][name] for name in FUNCTIONS]
        paths = [folder / entry["file"] for entry in entries]
    except (KeyError, TypeError) as exc:
        raise EcgcapError(f"contract.json lacks {exc}", input=str(folder / CONTRACT)) from None
    for path, entry in zip(paths, entries, strict=True):
        if not path.is_file() or sha256_file(path) != entry.get("sha256"):
            raise EcgcapError("missing, corrupt or changed: its sha256 is not the one "
                              "contract.json records", input=str(path))
    return parts_from_contract(contract, [_Function(path, str(path)) for path in paths],
                               folder / CONTRACT)
