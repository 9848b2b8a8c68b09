"""Export an ECG classifier (beat or rhythm ``.keras``) as a LiteRT file and contract.

:func:`export_classifier` writes ``NAME.tflite`` and ``NAME.contract.json`` side by side
(``docs/export.md`` says what each contract entry means). The function is traced with batch
size 1, the device case, because the converter can lower Keras' recurrent loop (a
``TensorList`` inside ``WHILE``) to LiteRT builtin ops only when the loop's state has a static
shape; the loop stays a loop over time, never unrolled. A rhythm model also takes a fixed
crop (``crop_seconds`` of its configuration, 30 s = 4,500 samples at 150 Hz) with its 0/1
mask: recordings are cut into such crops anyway, and a shorter one is right-padded and masked.

``quantize`` makes smaller files: ``float16`` (weights stored as float16) or ``int8``
(dynamic-range: weights int8, one scale per tensor, activations float32, inputs and outputs
float32). An ``int8`` export needs calibration records: real beats (or rhythm crops) of the
records the user names, prepared as inference prepares them (:func:`calibration_inputs`); the
export is checked on them. TensorFlow's full-integer calibration (a ``representative_dataset``)
crashes on the recurrent ``WHILE`` loops, so it is not used (``docs/export.md``).

Before anything is written the export is run on examples and compared with the Keras model
(a float32 export on one example, refused unless within ``TOLERANCE``; a quantised one on the
calibration inputs, its difference and label agreement recorded in the contract); both files
are written under temporary names and then renamed, so a failed export leaves nothing behind,
and the contract records the ``.tflite`` file's sha256, so a pair that does not belong
together is refused when loaded.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ecgcap.ecg.litert import FORMAT, FORMAT_VERSION, contract_path, sha256_file
from ecgcap.runtime.errors import EcgcapError
from ecgcap.runtime.files import current_umask
from ecgcap.runtime.modelfile import read_info

KINDS = {"ecg-beats": "beats", "ecg-rhythm": "rhythm"}
TOLERANCE = 1e-4  # max abs probability difference from Keras accepted at export
QUANTIZE = ("none", "float16", "int8")
FORMATS = {"litert": ".tflite", "onnx": ".onnx", "saved_model": ".saved_model"}
SAVED_MODEL_FORMAT = "ecgcap ECG classifier, TensorFlow SavedModel"
CALIBRATION_EXAMPLES = 1000  # beats (or rhythm crops) drawn from the calibration records
QUANTIZATION = {
    "none": "none: float32 weights and activations",
    "float16": "float16 weights (dequantised to float32 when loaded), float32 activations",
    "int8": "dynamic-range int8: weights int8 with one scale per tensor, activations float32 "
            "(the fully connected and convolution kernels quantise them to int8 on the fly); "
            "inputs and outputs float32"}


def default_target(keras_path: str | os.PathLike, quantize: str = "none") -> Path:
    """Where an export goes by default: ``NAME.tflite`` beside ``NAME.keras``
    (``NAME.int8.tflite``, ``NAME.float16.tflite`` when quantised)."""
    suffix = ".tflite" if quantize == "none" else f".{quantize}.tflite"
    return Path(keras_path).with_suffix(suffix)


def _input_shapes(model: Any, info: dict[str, Any], source: str) -> dict[str, tuple[int, ...]]:
    """The shape (batch 1) of each input of the exported function."""
    shapes = {}
    rhythm = info["kind"] == "ecg-rhythm"
    if rhythm:
        from ecgcap.ecg.recordings import RhythmConfig

        crop = RhythmConfig(**info["rhythm"]).crop
    for t in model.inputs:
        shape = [1, *t.shape[1:]]
        if rhythm and t.name in ("signal", "mask"):
            shape[1] = crop
        if None in shape:
            raise EcgcapError(f"its input {t.name!r} has no fixed size {tuple(t.shape[1:])}; "
                              "LiteRT needs one", input=source)
        shapes[t.name] = tuple(int(d) for d in shape)
    return shapes


def _convert(model: Any, shapes: dict[str, tuple[int, ...]], source: str,
             quantize: str = "none") -> bytes:
    """The model as a LiteRT flatbuffer of builtin ops, signature ``serving_default``: named
    float32 inputs -> ``probabilities``; weights quantised as ``quantize`` says."""
    import tensorflow as tf

    specs = {name: tf.TensorSpec(shape, tf.float32, name=name) for name, shape in shapes.items()}

    @tf.function(input_signature=[specs])
    def serving_default(inputs):
        return {"probabilities": model(inputs, training=False)}

    holder = tf.Module()  # tracks the variables, so that the converter freezes them
    holder.variables_ = [getattr(v, "value", v) for v in model.weights]
    holder.fn = serving_default
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [serving_default.get_concrete_function()], holder)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize != "none":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantize == "int8":  # one scale per tensor: per channel, the scales and int64 zero
        converter._experimental_disable_per_channel = True  # points cost 40 KB (a sixth)
    try:
        return converter.convert()
    except Exception as exc:  # noqa: BLE001 - the converter raises many types
        reason = next((line.split("error:", 1)[1].strip() for line in str(exc).splitlines()
                       if "error:" in line), type(exc).__name__)
        raise EcgcapError(f"does not convert to LiteRT builtin ops ({reason[:160]})",
                          input=source) from None


def _example(shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """A fixed pseudo-random input; a rhythm crop is half real, half masked padding."""
    rng = np.random.default_rng(0)
    x = {name: rng.normal(size=shape).astype(np.float32) for name, shape in shapes.items()}
    if "mask" in x:
        half = x["mask"].shape[1] // 2
        x["mask"][:] = 1.0
        x["mask"][:, half:] = 0.0
        x["signal"][:, half:] = 0.0
    return x


def _check(flatbuffer: bytes, model: Any, x: dict[str, np.ndarray], source: str,
           quantize: str = "none") -> tuple[float, float, int]:
    """Run the flatbuffer on the examples ``x`` (one call per row) and compare with Keras.

    Refuses it unless its recurrent layers are loops and, for a float32 export, it answers as
    Keras does (max abs difference under ``TOLERANCE``). Returns the max abs probability
    difference, the share of examples given Keras' label and the number of ``WHILE`` ops.
    """
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flatbuffer, num_threads=1)
    loops = sum(op["op_name"] == "WHILE" for op in interpreter._get_ops_details())
    if not loops:
        raise EcgcapError("the LiteRT export has no WHILE loop: its recurrent layers were "
                          "not kept as loops over time", input=source)
    runner = interpreter.get_signature_runner()
    n = len(next(iter(x.values())))
    lite = np.concatenate([runner(**{k: v[i:i + 1] for k, v in x.items()})["probabilities"]
                           for i in range(n)])
    ref = np.asarray(model.predict(x, batch_size=256, verbose=0))
    diff = float(np.max(np.abs(lite - ref)))
    agree = float(np.mean(lite.argmax(-1) == ref.argmax(-1)))
    if quantize == "none" and not diff < TOLERANCE:
        raise EcgcapError(f"the LiteRT export answers unlike the Keras model (max abs "
                          f"probability difference {diff:.2g} >= {TOLERANCE:g})", input=source)
    return diff, agree, loops


def calibration_inputs(info: dict[str, Any], records: Sequence[str | os.PathLike],
                       examples: int = CALIBRATION_EXAMPLES, seed: int = 0
                       ) -> dict[str, np.ndarray]:
    """Up to ``examples`` real model inputs drawn (seeded, without replacement) from
    ``records``, prepared exactly as ``classify_ecg`` prepares them: beats at the record's
    annotated (else XQRS) R peaks, or rhythm crops (right-padded, masked) with the record's HRV
    features. Raises ``EcgcapError`` naming a record that cannot be read."""
    if not records:
        raise EcgcapError("no calibration records", input="--calibration")
    if info["kind"] == "ecg-beats":
        from ecgcap.ecg.inference import beat_inputs

        parts = [beat_inputs(info, str(r))[3] for r in records]
        pool = {k: np.concatenate([p[k] for p in parts]) for k in ("beat", "rr")}
    else:
        from ecgcap.ecg.recordings import RhythmConfig, crop_starts, pad_batch, read_recording

        config = RhythmConfig(**info["rhythm"])
        pieces, rr = [], []
        for r in records:
            prepared = read_recording(str(r), config)
            for start in crop_starts(len(prepared["signal"]), config.crop, config.stride):
                pieces.append(prepared["signal"][start:start + config.crop])
                rr.append(prepared["rr"])
        signal, mask = pad_batch(pieces)
        if signal.shape[1] < config.crop:  # every recording shorter than a crop
            pad = config.crop - signal.shape[1]
            signal = np.pad(signal, [(0, 0), (0, pad), (0, 0)])
            mask = np.pad(mask, [(0, 0), (0, pad)])
        pool = {"signal": signal, "mask": mask, "rr": np.stack(rr).astype(np.float32)}
    n = len(next(iter(pool.values())))
    pick = np.sort(np.random.default_rng(seed).choice(n, min(n, examples), replace=False))
    return {k: np.ascontiguousarray(v[pick], dtype=np.float32) for k, v in pool.items()}


def _convert_onnx(model: Any, shapes: dict[str, tuple[int, ...]], source: str) -> bytes:
    """The model as an ONNX graph (tf2onnx, through Keras' numpy-2 patch): named float32
    inputs with a free batch size -> ``probabilities``. Constants the layers hold as tensors
    (the RR normalisation's mean and variance), which tf2onnx leaves as extra graph inputs,
    become initializers."""
    from ecgcap.ecg.onnx import INSTALL

    try:
        import onnx
        import tensorflow as tf
        import tf2onnx
        from keras.src.export.tf2onnx_lib import patch_tf2onnx
    except ImportError:
        raise EcgcapError(f"ONNX exports need tf2onnx and onnx ({INSTALL})",
                          input="--format onnx") from None
    names = list(shapes)
    signature = [tf.TensorSpec((None, *shapes[n][1:]), tf.float32, name=n) for n in names]

    def serving_default(*args):
        return {"probabilities": model(dict(zip(names, args, strict=True)), training=False)}

    function = tf.function(serving_default, input_signature=signature)
    with warnings.catch_warnings():  # the patch's own FutureWarning about np.object
        warnings.simplefilter("ignore", FutureWarning)
        patch_tf2onnx()  # tf2onnx 1.17 still uses numpy names that numpy 2 removed
    try:
        proto, _ = tf2onnx.convert.from_function(function, input_signature=signature)
    except Exception as exc:  # noqa: BLE001 - tf2onnx raises many types
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise EcgcapError(f"does not convert to ONNX ({first})", input=source) from None
    captured = {inner.name: outer for outer, inner in
                function.get_concrete_function().graph.captures}
    for graph_input in list(proto.graph.input):
        value = captured.get(graph_input.name)
        if value is not None:
            proto.graph.initializer.append(onnx.numpy_helper.from_array(
                np.asarray(value), graph_input.name))
            proto.graph.input.remove(graph_input)
    extra = [i.name for i in proto.graph.input if i.name not in names]
    if extra:
        raise EcgcapError(f"its ONNX graph wants inputs it was not given ({extra[0]})",
                          input=source)
    return proto.SerializeToString()


def _recurrent_ops(data: bytes) -> dict[str, int]:
    """How many ``LSTM``, ``GRU``, ``RNN`` and ``Loop`` ops an ONNX graph holds (subgraphs
    included)."""
    import onnx

    counts: dict[str, int] = {}

    def visit(graph: Any) -> None:
        for node in graph.node:
            if node.op_type in ("LSTM", "GRU", "RNN", "Loop", "Scan"):
                counts[node.op_type] = counts.get(node.op_type, 0) + 1
            for attribute in node.attribute:
                if attribute.HasField("g"):
                    visit(attribute.g)

    visit(onnx.load_from_string(data).graph)
    return counts


def _check_onnx(data: bytes, model: Any, x: dict[str, np.ndarray], source: str
                ) -> tuple[float, float, dict[str, int]]:
    """Run the ONNX graph on ``x`` (one batch) and refuse it unless its recurrent layers are
    recurrent ops and it answers as Keras does (max abs difference under ``TOLERANCE``)."""
    from ecgcap.ecg.onnx import session

    ops = _recurrent_ops(data)
    if not ops:
        raise EcgcapError("the ONNX export has no LSTM or Loop op: its recurrent layers were "
                          "not kept as loops over time", input=source)
    got = session(data, source).run(["probabilities"], x)[0]
    ref = np.asarray(model.predict(x, batch_size=256, verbose=0))
    diff = float(np.max(np.abs(got - ref)))
    agree = float(np.mean(got.argmax(-1) == ref.argmax(-1)))
    if not diff < TOLERANCE:
        raise EcgcapError(f"the ONNX export answers unlike the Keras model (max abs "
                          f"probability difference {diff:.2g} >= {TOLERANCE:g})", input=source)
    return diff, agree, ops


def _write_saved_model(model: Any, shapes: dict[str, tuple[int, ...]], folder: Path) -> None:
    """The model as a TensorFlow SavedModel in ``folder`` (Keras' ``ExportArchive``, what
    ``model.export(format="tf_saved_model")`` uses), one signature ``serving_default``: named
    float32 inputs with a free batch size -> ``probabilities``."""
    import keras
    import tensorflow as tf

    names = list(shapes)
    signature = [tf.TensorSpec((None, *shapes[n][1:]), tf.float32, name=n) for n in names]

    def serving_default(*args):
        return {"probabilities": model(dict(zip(names, args, strict=True)), training=False)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", serving_default, input_signature=signature)
    archive.write_out(str(folder), verbose=False)


def _check_saved_model(folder: Path, model: Any, x: dict[str, np.ndarray], source: str
                       ) -> tuple[float, float]:
    """Load the SavedModel with ``tf.saved_model.load``, run its signature on ``x`` and refuse
    it unless it answers as Keras does (max abs difference under ``TOLERANCE``)."""
    import tensorflow as tf

    fn = tf.saved_model.load(str(folder)).signatures["serving_default"]
    got = np.concatenate([fn(**{k: tf.constant(v[i:i + 256]) for k, v in x.items()})
                          ["probabilities"].numpy()
                          for i in range(0, len(next(iter(x.values()))), 256)])
    ref = np.asarray(model.predict(x, batch_size=256, verbose=0))
    diff = float(np.max(np.abs(got - ref)))
    agree = float(np.mean(got.argmax(-1) == ref.argmax(-1)))
    if not diff < TOLERANCE:
        raise EcgcapError(f"the SavedModel export answers unlike the Keras model (max abs "
                          f"probability difference {diff:.2g} >= {TOLERANCE:g})", input=source)
    return diff, agree


def folder_sha256(folder: str | os.PathLike) -> dict[str, str]:
    """The sha256 of every file under ``folder``, by relative path (a SavedModel's
    ``saved_model.pb`` and ``variables/*``)."""
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): sha256_file(p)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _preprocessing(info: dict[str, Any]) -> dict[str, Any]:
    """What a runtime must do to a recording before calling the function (plain words and
    numbers; the reference implementation is ecgcap.ecg.dataset / ecgcap.ecg.recordings)."""
    from ecgcap.ecg import processing

    if info["kind"] == "ecg-beats":
        from ecgcap.ecg.dataset import BeatConfig

        c = BeatConfig.from_info(info["beats"])
        before, after = c.window
        rr = ["prev_rr_s", "next_rr_s", "local_rr_s", "average_rr_s"]
        if not c.rr_seconds:
            rr = [f"0 (was {name})" for name in rr]
        rr += ["prev/average", "next/average", "local/average", "prev/local"]
        if c.rr_irregularity:
            rr.append("irregularity")
        return {
            "lead": c.lead, "sampling_rate": c.fs,
            "filter": f"zero-phase Butterworth band-pass {c.highpass:g}-{c.lowpass:g} Hz "
                      "(order 2, forward-backward) at the recording's own rate",
            "resample": f"polyphase to {c.fs:g} Hz; R-peak positions rounded to that rate",
            "normalise": "the whole lead: (x - median) / (1.4826 * median |x - median|)",
            "window": {"before": before, "after": after, "samples": c.length,
                       "around": "each R peak: samples [peak - before, peak + after)"},
            "beat_channels": ["normalised window",
                              "normalised window minus the record's median window"],
            "rr_features": rr,
            "local_beats": c.local_beats,
            "one_call": "one beat: beat (1, samples, 2) and rr (1, features)"}
    from ecgcap.ecg.recordings import RhythmConfig

    c = RhythmConfig(**info["rhythm"])
    channels = ["normalised waveform"]
    if c.rr_channels:
        channels += ["RR interval (s) the sample lies in", "log(RR / previous RR)"]
    return {
        "lead": c.lead or "the first signal", "sampling_rate": c.fs,
        "filter": f"zero-phase Butterworth band-pass {c.highpass:g}-{c.lowpass:g} Hz "
                  "(order 2, forward-backward) at the recording's own rate",
        "resample": f"polyphase to {c.fs:g} Hz",
        "normalise": "the whole recording: (x - median) / (1.4826 * median |x - median|)",
        "signal_channels": channels,
        "r_peaks": "wfdb's XQRS detector on the unfiltered lead at the recording's rate",
        "rr_features": list(processing.HRV_FEATURES),
        "min_seconds": c.min_seconds,
        "crop": {"samples": c.crop, "seconds": c.crop_seconds, "stride_samples": c.stride,
                 "policy": "crops every stride samples, the last ending at the recording's "
                           "end; a recording shorter than a crop is one crop, right-padded "
                           "with zeros and mask 0; the recording's probabilities are the "
                           "mean over its crops"},
        "one_call": "one crop: signal (1, crop, channels), mask (1, crop) 1 = real sample, "
                    "rr (1, features) of the whole recording"}


def _contract(info: dict[str, Any], shapes: dict[str, tuple[int, ...]], keras_path: Path,
              quantize: str, calibration: Sequence[str | os.PathLike] | None,
              calibration_examples: int, x: dict[str, np.ndarray], diff: float, agree: float
              ) -> dict[str, Any]:
    """The LiteRT contract (``docs/export.md``); the other formats change a few entries."""
    checked = len(next(iter(x.values())))
    unit = "beats" if info["kind"] == "ecg-beats" else "crops"
    contract: dict[str, Any] = {
        "format": FORMAT, "version": FORMAT_VERSION,
        "task": KINDS[info["kind"]], "classes": list(info["classes"]),
        "sampling_rate": float((info.get("beats") or info.get("rhythm"))["fs"]),
        "inputs": [{"name": name, "shape": list(shape), "dtype": "float32"}
                   for name, shape in shapes.items()],
        "outputs": [{"name": "probabilities", "shape": [1, len(info["classes"])],
                     "dtype": "float32", "means": "softmax over classes, in their order"}],
        "signature": "serving_default",
        "preprocessing": _preprocessing(info),
        "recurrence": f"each {info.get('cell', 'recurrent').upper()} layer (and direction) "
                      "runs as a WHILE loop over time steps, not unrolled",
        "while_loops": None,
        "source": keras_path.name, "source_sha256": sha256_file(keras_path),
        "tflite_sha256": "",
        "quantization": quantize, "quantization_method": QUANTIZATION[quantize],
        "calibration": ({"records": [str(r) for r in calibration], unit: checked,
                         "drawn": f"up to {calibration_examples} {unit}, seeded, prepared as "
                                  "classify_ecg prepares them"} if calibration else None),
        "checked_on": (f"{checked} {unit} of the calibration records" if calibration
                       else "one pseudo-random example"),
        "checked_max_abs_difference": diff, "checked_label_agreement": agree,
        "info": info}
    if "crop" in contract["preprocessing"]:
        contract["crop_samples"] = contract["preprocessing"]["crop"]["samples"]
    return contract


def _export_saved_model(model: Any, info: dict[str, Any], shapes: dict[str, tuple[int, ...]],
                        x: dict[str, np.ndarray], keras_path: Path, target: Path,
                        calibration: Sequence[str | os.PathLike] | None,
                        calibration_examples: int) -> Path:
    """Write ``target`` (a SavedModel folder) and its contract beside it: both made whole in
    a temporary folder and checked against Keras first, then renamed into place (an earlier
    export there is moved aside and removed only after)."""
    import shutil

    target.parent.mkdir(parents=True, exist_ok=True)
    umask = current_umask()
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    old = None
    try:
        _write_saved_model(model, shapes, tmp / "model")
        diff, agree = _check_saved_model(tmp / "model", model, x, str(keras_path))
        contract = _contract(info, shapes, keras_path, "none", calibration,
                             calibration_examples, x, diff, agree)
        contract.update({"format": SAVED_MODEL_FORMAT, "version": FORMAT_VERSION,
                         "recurrence": "each recurrent layer runs as a TensorFlow while loop "
                                       "over time steps (Keras' own), not unrolled",
                         "call": "tf.saved_model.load(FOLDER).signatures['serving_default']"
                                 "(**inputs)['probabilities'], inputs float32 by name"})
        for entry in contract["inputs"] + contract["outputs"]:
            entry["shape"][0] = None  # free batch size
        del contract["tflite_sha256"]
        contract["files_sha256"] = folder_sha256(tmp / "model")
        for path in (tmp, *tmp.rglob("*")):
            path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)
        (tmp / "contract.json").write_text(json.dumps(contract, indent=2) + "\n",
                                           encoding="utf-8")
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
            target.rename(old / target.name)
        (tmp / "model").rename(target)
        os.replace(tmp / "contract.json", contract_path(target))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return target


def export_classifier(keras_path: str | os.PathLike, out: str | os.PathLike | None = None,
                      quantize: str = "none",
                      calibration: Sequence[str | os.PathLike] | None = None,
                      calibration_examples: int = CALIBRATION_EXAMPLES,
                      fmt: str = "litert") -> Path:
    """Export the ECG classifier in ``keras_path`` to ``out`` (default
    :func:`default_target`) and its contract beside it; returns the ``.tflite`` path.

    ``fmt`` is ``litert`` (``NAME.tflite``), ``onnx`` (``NAME.onnx``, float32 only, free
    batch size: :mod:`ecgcap.ecg.onnx`) or ``saved_model`` (``NAME.saved_model/``, a
    TensorFlow SavedModel folder, float32, free batch size, signature ``serving_default``).
    ``quantize`` is ``none``, ``float16`` or ``int8``;
    ``int8`` needs ``calibration`` records (paths of WFDB records, never the test set), on
    whose inputs (:func:`calibration_inputs`) the export is checked. Raises ``EcgcapError``
    (one line naming the model and the reason) when the model is not an ECG classifier, does
    not convert, or a float32 export answers unlike Keras; nothing is written then.
    """
    if quantize not in QUANTIZE:
        raise EcgcapError(f"choose one of {', '.join(QUANTIZE)}", input=f"--quantize {quantize}")
    if fmt not in FORMATS:
        raise EcgcapError(f"choose one of {', '.join(FORMATS)}", input=f"--format {fmt}")
    if fmt in ("onnx", "saved_model") and quantize != "none":
        raise EcgcapError(f"{fmt} exports are float32 only (quantise the LiteRT export)",
                          input=f"--quantize {quantize}")
    if quantize == "int8" and not calibration:
        raise EcgcapError("needs --calibration RECORD... (real records the model was not "
                          "tested on: the quantised export is checked on their beats)",
                          input="--quantize int8")
    from ecgcap.ecg.inference import load_classifier
    from ecgcap.runtime.quiet import framework_quiet

    keras_path = Path(keras_path)
    source = str(keras_path)
    info = read_info(keras_path)
    if info.get("kind") not in KINDS:
        raise EcgcapError(f"a {info.get('kind')!r} model, not an ECG classifier", input=source)
    if "sequence" in info:
        raise EcgcapError("a beat-sequence model (lstm-seq): export writes per-beat and rhythm "
                          "models only; run it with classify_ecg --model", input=source)
    suffix = FORMATS[fmt]
    target = Path(out) if out is not None else default_target(keras_path, quantize).with_suffix(
        suffix)
    if target.suffix != suffix:
        raise EcgcapError(f"an ECG {fmt} export is named NAME{suffix} (its contract goes "
                          "beside it)",
                          input=f"--out {target}")
    if fmt == "saved_model":
        if target.exists() and not (target / "saved_model.pb").is_file():
            raise EcgcapError("exists and is not a SavedModel export; not replaced: name a "
                              "new path", input=f"--out {target}")
        if contract_path(target).is_dir():
            raise EcgcapError("is a folder", input=str(contract_path(target)))
    else:
        for path in (target, contract_path(target)):
            if path.is_dir():
                raise EcgcapError(f"is a folder; name a {suffix} file", input=str(path))
    with framework_quiet():  # TensorFlow's start-up and GPU-probe lines; errors still show
        model, info = load_classifier(keras_path)
        shapes = _input_shapes(model, info, source)
        x = (calibration_inputs(info, calibration, calibration_examples) if calibration
             else _example(shapes))
        if fmt == "saved_model":
            return _export_saved_model(model, info, shapes, x, keras_path, target,
                                       calibration, calibration_examples)
        if fmt == "onnx":
            flatbuffer = _convert_onnx(model, shapes, source)
            diff, agree, ops = _check_onnx(flatbuffer, model, x, source)
        else:
            flatbuffer = _convert(model, shapes, source, quantize)
            diff, agree, loops = _check(flatbuffer, model, x, source, quantize)
    contract = _contract(info, shapes, keras_path, quantize, calibration, calibration_examples,
                         x, diff, agree)
    contract["while_loops"] = loops if fmt == "litert" else None
    if fmt == "onnx":
        from ecgcap.ecg import onnx as onnx_runtime

        contract.update({"format": onnx_runtime.FORMAT, "version": onnx_runtime.FORMAT_VERSION,
                         "signature": None, "while_loops": None, "recurrent_ops": ops,
                         "recurrence": f"each {info.get('cell', 'recurrent').upper()} layer "
                                       "runs as an ONNX LSTM op or a Loop over time steps, "
                                       "not unrolled"})
        for entry in contract["inputs"] + contract["outputs"]:
            entry["shape"][0] = None  # free batch size
        del contract["tflite_sha256"]
        contract["onnx_sha256"] = ""
    digest_key = "onnx_sha256" if fmt == "onnx" else "tflite_sha256"
    target.parent.mkdir(parents=True, exist_ok=True)
    umask = current_umask()
    temps = []
    try:  # both files whole under temporary names first, then renamed into place
        for suffix in (FORMATS[fmt], ".json"):
            fd, name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=f".tmp{suffix}",
                                        dir=target.parent)
            os.close(fd)
            os.chmod(name, 0o666 & ~umask)  # mkstemp makes 0600
            temps.append(Path(name))
        temps[0].write_bytes(flatbuffer)
        contract[digest_key] = sha256_file(temps[0])
        temps[1].write_text(json.dumps(contract, indent=2) + "\n", encoding="utf-8")
        os.replace(temps[0], target)
        os.replace(temps[1], contract_path(target))
    finally:
        for tmp in temps:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    return target


class SavedModelClassifier:
    """A SavedModel export (``NAME.saved_model``) called like a Keras classifier:
    ``predict_on_batch(inputs)`` and ``predict(inputs, batch_size)`` on a dict of float32
    arrays, returning probabilities ``(N, classes)``."""

    def __init__(self, folder: str | os.PathLike):
        import tensorflow as tf

        self.folder = Path(folder)
        try:
            self._loaded = tf.saved_model.load(str(self.folder))
            self._fn = self._loaded.signatures["serving_default"]
        except (OSError, ValueError, KeyError) as exc:
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            raise EcgcapError(f"not a loadable ECG SavedModel ({first})",
                              input=str(folder)) from None
        self._names = list(self._fn.structured_input_signature[1])
        self.input = dict.fromkeys(self._names)  # what ecgcap.ecg.recordings.uses_rr reads

    def predict_on_batch(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        import tensorflow as tf

        feed = {}
        for name in self._names:
            x = np.asarray(inputs[name], np.float32)
            length = self._fn.structured_input_signature[1][name].shape[1]
            if name in ("signal", "mask") and x.shape[1] < length:  # a shorter rhythm crop:
                pad = [(0, 0), (0, length - x.shape[1])] + [(0, 0)] * (x.ndim - 2)  # zeros,
                x = np.pad(x, pad)  # masked out
            if length is not None and x.shape[1] != length:
                raise EcgcapError(f"input {name!r} has shape {x.shape[1:]}, the export takes "
                                  f"{length} samples", input=str(self.folder))
            feed[name] = tf.constant(x)
        return self._fn(**feed)["probabilities"].numpy()

    def predict(self, inputs: dict[str, np.ndarray], batch_size: int | None = 1024,
                verbose: int = 0) -> np.ndarray:
        n = len(inputs[self._names[0]])
        step = batch_size or n or 1
        return np.concatenate([self.predict_on_batch({k: inputs[k][i:i + step]
                                                      for k in self._names})
                               for i in range(0, max(n, 1), step)])
