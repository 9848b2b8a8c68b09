"""Captioners as one TensorFlow SavedModel with three signatures: export and load.

:func:`export_captioner_saved_model` writes ``NAME.saved_model/`` beside ``NAME.keras`` (or
``--out DIR``): a SavedModel (Keras' ``ExportArchive``, what ``model.export(format=
"tf_saved_model")`` uses) whose signatures are the three functions of the LiteRT export
(:mod:`ecgcap.captioning.litert`), each with a free batch size:

- ``encode``: ``in0`` image ``(N, S, S, 3)`` float32 0-255 -> ``out0`` feature map, ``out1``
  image vector (also the alias ``serving_default``, which TF Serving wants);
- ``init``: ``in0`` image vector -> ``out0..`` the decoder's initial states;
- ``step``: ``in0`` token ``(N, 1)`` int32, ``in1`` vector, ``in2`` feature map, ``in3..``
  states -> ``out0`` next-word logits ``(N, V)``, ``out1..`` new states (and the attention
  weights last, for attention models);

and ``contract.json`` inside the folder (TensorFlow ignores it): the LiteRT contract with
``format`` ``"ecgcap captioner, TensorFlow SavedModel"``, each function's ``signature`` and the
sha256 of every file. The export is made whole in a temporary folder, loaded back with
``tf.saved_model.load`` and checked against Keras (one image through encode, init and two
steps; refused at a max abs difference of ``TOLERANCE`` or more) before it is renamed into place.
"""

from __future__ import annotations

import os
import shutil
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

FORMAT = "ecgcap captioner, TensorFlow SavedModel"
TOLERANCE = 1e-4  # max abs difference from Keras accepted at export (float32)


def saved_model_folder(keras_path: str | os.PathLike) -> Path:
    """The conventional SavedModel folder of a ``.keras`` file: ``NAME.saved_model`` beside
    it."""
    path = Path(keras_path)
    return path.with_name(path.stem + ".saved_model")


def _check(folder: Path, functions: dict[str, Any], source: str) -> float:
    """Run one pseudo-random image through the loaded SavedModel's encode, init and two
    steps and through Keras; refuse the export unless every output is within ``TOLERANCE``.
    Returns the largest difference."""
    parts = _load_parts(folder)
    size = int(functions["encode"].inputs[0].shape[1])
    image = np.random.default_rng(0).integers(0, 256, (1, size, size, 3)).astype(np.float32)
    diffs = []

    def compare(got: list[np.ndarray], ref: Any) -> None:
        ref = ref if isinstance(ref, (list, tuple)) else [ref]
        diffs.extend(float(np.max(np.abs(a - np.asarray(b)))) for a, b in zip(got, ref,
                                                                                 strict=True))

    fmap, vec = parts["encode"](image)
    compare([fmap, vec], functions["encode"].predict_on_batch(image))
    states = parts["init"](vec)
    compare(states, functions["init"].predict_on_batch(vec))
    token = np.full((1, 1), 2, np.int32)
    for _ in range(2):
        out = parts["step"]([token, vec, fmap, *states])
        n_states = len(states)
        compare(out, functions["step"].predict_on_batch([token, vec, fmap, *states]))
        states = out[1:1 + n_states]
        token = out[0].argmax(-1).astype(np.int32)[:, None]
    diff = max(diffs)
    if not diff < TOLERANCE:
        raise EcgcapError(f"the SavedModel export answers unlike the Keras model (max abs "
                          f"difference {diff:.2g} >= {TOLERANCE:g})", input=source)
    return diff


def export_captioner_saved_model(keras_path: str | os.PathLike,
                                 out: str | os.PathLike | None = None) -> Path:
    """Export the captioner in ``keras_path`` as a SavedModel folder (default
    :func:`saved_model_folder`); returns the folder, written whole or not at all."""
    import keras

    from ecgcap.captioning.inference import load_captioner
    from ecgcap.captioning.models import decoder_parts
    from ecgcap.runtime.quiet import framework_quiet

    keras_path = Path(keras_path)
    folder = Path(out) if out is not None else saved_model_folder(keras_path)
    _check_out(folder, keras_path)
    with framework_quiet():
        model, info = load_captioner(keras_path)
        parts = decoder_parts(model)
    functions = {"encode": parts.encoder, "init": parts.init, "step": parts.step}
    tmp = make_temp_folder(folder)
    umask = current_umask()
    try:
        archive = keras.export.ExportArchive()
        for fn_model in functions.values():
            archive.track(fn_model)
        for name, fn_model in functions.items():  # the first, encode, is serving_default too
            archive.add_endpoint(name, endpoint(fn_model),
                                  input_signature=input_signature(fn_model))
        with framework_quiet():
            archive.write_out(str(tmp / "model"), verbose=False)
            diff = _check(tmp / "model", functions, str(keras_path))
        names = output_names(parts)
        contract: dict[str, Any] = {
            **contract_header(FORMAT, keras_path, parts, info),
            "call": "tf.saved_model.load(FOLDER).signatures[NAME](in0=..., in1=...) -> "
                    "{'out0': ..., ...}; NAME is encode, init or step",
            "checked_max_abs_difference": diff,
            "functions": {name: {
                "signature": name,
                "inputs": [[f"in{i}", t.name, [None, *t.shape[1:]], str(t.dtype)]
                           for i, t in enumerate(fn_model.inputs)],
                "outputs": [[f"out{i}", names[name][i], [None, *t.shape[1:]], str(t.dtype)]
                            for i, t in enumerate(fn_model.outputs)]}
                for name, fn_model in functions.items()},
            "files_sha256": {p.relative_to(tmp / "model").as_posix(): sha256_file(p)
                             for p in sorted((tmp / "model").rglob("*")) if p.is_file()}}
        atomic_write_json(tmp / "model" / CONTRACT, contract)
        for path in (tmp, *tmp.rglob("*")):  # mkdtemp and mkstemp make 0700 / 0600
            path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)
        replace_folder(tmp / "model", folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _load_parts(folder: Path) -> dict[str, Any]:
    """The three signatures of a loaded SavedModel as functions of numpy arrays returning
    lists of numpy arrays in ``out0, out1, ...`` order."""
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(folder))
    except (OSError, ValueError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise EcgcapError(f"not a loadable SavedModel ({first})", input=str(folder)) from None

    def wrap(signature: Any) -> Any:
        dtypes = {name: spec.dtype.as_numpy_dtype
                  for name, spec in signature.structured_input_signature[1].items()}

        def call(x: Any) -> list[np.ndarray]:
            xs = x if isinstance(x, (list, tuple)) else [x]
            out = signature(**{f"in{i}": tf.constant(np.asarray(v, dtype=dtypes[f"in{i}"]))
                               for i, v in enumerate(xs)})
            return [out[f"out{i}"].numpy() for i in range(len(out))]
        return call

    parts = {name: wrap(loaded.signatures[name]) for name in FUNCTIONS}
    parts["_loaded"] = loaded  # keeps the variables alive
    return parts


class _Function:
    """One signature, called like a Keras model's ``predict_on_batch``."""

    def __init__(self, call: Any, loaded: Any):
        self._call = call
        self._loaded = loaded  # the loaded SavedModel owns the variables the call reads

    def predict_on_batch(self, x: Any) -> list[np.ndarray]:
        return self._call(x)


def load_captioner_saved_model(folder: str | os.PathLike) -> LiteRTParts:
    """The decoding parts of an exported SavedModel captioner folder, run by TensorFlow (plug
    into :class:`ecgcap.captioning.decoding.CaptionDecoder`)."""
    folder = Path(folder)
    contract = read_contract(folder)
    if contract.get("format") != FORMAT:
        raise EcgcapError(f"not an {FORMAT} export", input=str(folder / CONTRACT))
    parts = _load_parts(folder)
    return parts_from_contract(
        contract, [_Function(parts[name], parts["_loaded"]) for name in FUNCTIONS],
        folder / CONTRACT)
