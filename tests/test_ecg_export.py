"""ECG classifiers exported to LiteRT: the shipped beat and rhythm models answer as their Keras
originals on real records, ``classify_ecg --model FILE.tflite`` runs them without TensorFlow,
and bad exports or impossible requests are refused in one line (exit 2), leaving no file."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import run_module, run_watching_imports

MODELS = Path(__file__).resolve().parents[1] / "models"
TOLERANCE = 1e-4


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def beat_export(tmp_path_factory) -> Path:
    """The shipped beat model exported through the command line."""
    target = tmp_path_factory.mktemp("beats") / "beats.tflite"
    result = run_module("ecgcap.export", "beats", "--format", "litert", "--out", str(target))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{target}\t") and "beats.contract.json" in result.stdout
    return target


@pytest.fixture(scope="module")
def rhythm_export(tmp_path_factory) -> Path:
    """The shipped rhythm model exported in this process."""
    from ecgcap.ecg.export import export_classifier

    target = tmp_path_factory.mktemp("rhythm") / "rhythm.tflite"
    assert export_classifier(MODELS / "cinc2017_lstm_rhythm.keras", target) == target
    return target


def test_beat_export_matches_keras_on_every_beat_of_record_233(beat_export, mitdb_dir):
    from ecgcap.ecg import io, processing
    from ecgcap.ecg.dataset import BeatConfig, beats_from_signal
    from ecgcap.ecg.inference import load_classifier
    from ecgcap.ecg.litert import contract_path, load_litert_classifier

    contract = json.loads(contract_path(beat_export).read_text())
    source = MODELS / "mitdb_lstm_beats.keras"
    assert contract["task"] == "beats" and contract["classes"] == ["N", "S", "V", "F", "Q"]
    assert contract["source_sha256"] == _sha256(source)
    assert contract["tflite_sha256"] == _sha256(beat_export)
    assert contract["sampling_rate"] == 180.0
    assert {i["name"]: i["shape"] for i in contract["inputs"]} == {"beat": [1, 126, 2],
                                                                   "rr": [1, 9]}
    assert contract["preprocessing"]["window"]["samples"] == 126
    assert contract["while_loops"] == 6  # 3 ensemble members x 2 directions, not unrolled

    keras_model, info = load_classifier(source)
    lite, lite_info = load_litert_classifier(beat_export)
    assert lite_info["kind"] == "ecg-beats" and lite_info["beats"] == info["beats"]
    record = io.read_record(mitdb_dir / "233")
    x = processing.select_lead(io.signal_of(record), record.sig_name, "MLII")
    ann = io.read_annotation(mitdb_dir / "233", "atr")
    peaks = np.asarray(ann.sample)[processing.aami_classes(ann.symbol) != ""]
    inputs = beats_from_signal(x, record.fs, peaks, BeatConfig.from_info(info["beats"]))
    inputs = {"beat": inputs["beat"], "rr": inputs["rr"]}
    expected = keras_model.predict(inputs, batch_size=1024, verbose=0)
    got = lite.predict(inputs)
    assert got.shape == expected.shape and len(got) > 3000
    assert np.array_equal(got.argmax(-1), expected.argmax(-1))
    assert float(np.abs(got - expected).max()) < TOLERANCE


def test_classify_ecg_runs_a_beat_export_without_tensorflow(beat_export, mitdb_dir):
    """Same CLI path and output format; labels as the Keras model gives them."""
    from ecgcap.ecg.inference import classify_record, load_classifier

    result = run_watching_imports("ecgcap.classify_ecg", str(mitdb_dir / "233"), "--model",
                                  str(beat_export), "--format", "json")
    assert result.returncode == 0, result.stderr
    body, flag = result.stdout.rstrip().rsplit("\n", 1)
    assert flag == "no tensorflow"
    (lite,) = json.loads(body)
    keras = classify_record(*load_classifier(MODELS / "mitdb_lstm_beats.keras"),
                            str(mitdb_dir / "233"))
    assert lite["positions"] == keras["positions"] == "atr"
    assert [b["sample"] for b in lite["beats"]] == [b["sample"] for b in keras["beats"]]
    assert [b["label"] for b in lite["beats"]] == [b["label"] for b in keras["beats"]]
    worst = max(abs(a["probabilities"][c] - b["probabilities"][c])
                for a, b in zip(lite["beats"], keras["beats"], strict=True)
                for c in a["probabilities"])
    assert worst <= 1.5e-4  # both rounded to 4 decimals


def test_rhythm_export_matches_keras_on_cinc2017_recordings(rhythm_export, cinc2017_dir):
    """A00014 (18.6 s: one crop, padded) and A00103 (60 s: three crops)."""
    from ecgcap.ecg.inference import load_classifier
    from ecgcap.ecg.litert import contract_path, load_litert_classifier
    from ecgcap.ecg.recordings import RhythmConfig, predict_recordings, read_recording

    contract = json.loads(contract_path(rhythm_export).read_text())
    assert contract["task"] == "rhythm" and contract["classes"] == ["N", "A", "O", "~"]
    assert contract["crop_samples"] == 4500 and contract["sampling_rate"] == 150.0
    assert contract["source_sha256"] == _sha256(MODELS / "cinc2017_lstm_rhythm.keras")
    shapes = {i["name"]: i["shape"] for i in contract["inputs"]}
    assert shapes == {"signal": [1, 4500, 3], "mask": [1, 4500], "rr": [1, 12]}
    assert contract["while_loops"] == 4  # two bidirectional LSTM layers

    keras_model, info = load_classifier(task="rhythm")
    lite, _ = load_litert_classifier(rhythm_export)
    config = RhythmConfig(**info["rhythm"])
    prepared = [read_recording(cinc2017_dir / name, config) for name in ("A00014", "A00103")]
    assert len(prepared[0]["signal"]) < config.crop < len(prepared[1]["signal"])
    signals = [p["signal"] for p in prepared]
    rr = np.stack([p["rr"] for p in prepared])
    expected = predict_recordings(keras_model, signals, rr, config)
    got = predict_recordings(lite, signals, rr, config)
    assert np.array_equal(got.argmax(-1), expected.argmax(-1))
    assert float(np.abs(got - expected).max()) < TOLERANCE


def test_classify_ecg_runs_a_rhythm_export(rhythm_export, cinc2017_dir):
    result = run_watching_imports("ecgcap.classify_ecg", str(cinc2017_dir / "A00103"),
                                  "--model", str(rhythm_export), "--format", "csv")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "record,label,p_N,p_A,p_O,p_~" and lines[-1] == "no tensorflow"
    assert lines[1].startswith("A00103,O,")  # the Keras model's label (an "other rhythm")


@pytest.mark.parametrize("damage", ["flipped", "truncated", "not_litert", "no_contract"])
def test_a_corrupt_export_is_refused_in_one_line_before_tensorflow(beat_export, mitdb_dir,
                                                                   tmp_path, damage):
    from ecgcap.ecg.litert import contract_path

    bad = tmp_path / "bad.tflite"
    data = beat_export.read_bytes()
    if damage == "flipped":
        data = data[:len(data) // 2] + bytes([data[len(data) // 2] ^ 0xFF]) + \
            data[len(data) // 2 + 1:]
    elif damage == "truncated":
        data = data[:len(data) // 3]
    elif damage == "not_litert":
        data = b"PK\x03\x04 this is a zip, not a flatbuffer"
    bad.write_bytes(data)
    if damage != "no_contract":
        contract_path(bad).write_text(contract_path(beat_export).read_text())
    result = run_watching_imports("ecgcap.classify_ecg", str(mitdb_dir / "100"), "--model",
                                  str(bad))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"python -m ecgcap.classify_ecg: error: {bad}")
    reason = {"flipped": "corrupt or changed", "truncated": "corrupt or changed",
              "not_litert": "not a LiteRT model", "no_contract": "bad.contract.json beside it"}
    assert reason[damage] in lines[0]
    assert result.stdout.strip() == "no tensorflow"


def test_an_unsupported_format_is_refused_in_one_line(tmp_path):
    result = run_module("ecgcap.export", "beats", "--format", "coreml", "--out",
                        str(tmp_path / "b.tflite"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "python -m ecgcap.export: error: --format coreml: choose one of litert, onnx, "
        "saved_model"]
    assert not list(tmp_path.iterdir())


def test_beat_saved_model_answers_as_keras_on_every_beat_of_record_233(mitdb_dir, tmp_path):
    """Exported by the command, loaded with tf.saved_model.load, its serving_default
    signature (free batch size) on all 3,077 beats of record 233 against Keras."""
    import tensorflow as tf

    from ecgcap.ecg.export import folder_sha256
    from ecgcap.ecg.inference import beat_inputs, load_classifier
    from ecgcap.ecg.litert import contract_path

    target = tmp_path / "beats.saved_model"
    result = run_module("ecgcap.export", "beats", "--format", "saved_model", "--out",
                        str(target))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{target}\t") and "beats.saved_model.contract.json" in \
        result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["beats.saved_model",
                                                          "beats.saved_model.contract.json"]
    contract = json.loads(contract_path(target).read_text())
    assert contract["format"] == "ecgcap ECG classifier, TensorFlow SavedModel"
    assert contract["files_sha256"] == folder_sha256(target)
    assert {i["name"]: i["shape"] for i in contract["inputs"]} == {"beat": [None, 126, 2],
                                                                   "rr": [None, 9]}
    assert contract["checked_max_abs_difference"] < TOLERANCE
    keras_model, info = load_classifier(MODELS / "mitdb_lstm_beats.keras")
    inputs = beat_inputs(info, str(mitdb_dir / "233"))[3]
    inputs = {"beat": inputs["beat"], "rr": inputs["rr"]}
    fn = tf.saved_model.load(str(target)).signatures["serving_default"]
    got = fn(**{k: tf.constant(v) for k, v in inputs.items()})["probabilities"].numpy()
    expected = keras_model.predict(inputs, batch_size=1024, verbose=0)
    assert got.shape == expected.shape and len(got) > 3000
    assert np.array_equal(got.argmax(-1), expected.argmax(-1))
    assert float(np.abs(got - expected).max()) < TOLERANCE
    # classify_ecg refuses a SavedModel in one line, before TensorFlow
    result = run_watching_imports("ecgcap.classify_ecg", str(mitdb_dir / "100"), "--model",
                                  str(target))
    assert result.returncode == 2 and result.stdout.strip() == "no tensorflow"
    assert result.stderr.strip().splitlines() == [
        f"python -m ecgcap.classify_ecg: error: {target}: a TensorFlow SavedModel: classify_ecg "
        "runs .keras, .tflite and .onnx models; call its serving_default signature from "
        "TensorFlow (docs/export.md#savedmodel)"]
    # quantised SavedModels are refused, and nothing is written
    result = run_module("ecgcap.export", "beats", "--format", "saved_model", "--quantize",
                        "float16", "--out", str(tmp_path / "q.saved_model"))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "float32 only" in result.stderr and not (tmp_path / "q.saved_model").exists()


def test_rhythm_saved_model_answers_as_keras_on_a_padded_cinc2017_crop(cinc2017_dir, tmp_path):
    """A00014 (18.6 s: one crop, right-padded and masked) through the SavedModel's
    signature, against Keras."""
    import tensorflow as tf

    from ecgcap.ecg.export import export_classifier
    from ecgcap.ecg.inference import load_classifier
    from ecgcap.ecg.recordings import RhythmConfig, read_recording

    target = export_classifier(MODELS / "cinc2017_lstm_rhythm.keras",
                               tmp_path / "r.saved_model", fmt="saved_model")
    keras_model, info = load_classifier(task="rhythm")
    config = RhythmConfig(**info["rhythm"])
    prepared = read_recording(cinc2017_dir / "A00014", config)
    n = len(prepared["signal"])
    assert n < config.crop
    signal = np.zeros((1, config.crop, prepared["signal"].shape[1]), np.float32)
    signal[0, :n] = prepared["signal"]
    mask = np.zeros((1, config.crop), np.float32)
    mask[0, :n] = 1.0
    x = {"signal": signal, "mask": mask, "rr": prepared["rr"][None].astype(np.float32)}
    fn = tf.saved_model.load(str(target)).signatures["serving_default"]
    got = fn(**{k: tf.constant(v) for k, v in x.items()})["probabilities"].numpy()
    expected = keras_model.predict(x, verbose=0)
    assert float(np.abs(got - expected).max()) < TOLERANCE
    # SavedModelClassifier pads a shorter crop itself, as the LiteRT and ONNX runners do
    from ecgcap.ecg.export import SavedModelClassifier

    short = {"signal": signal[:, :n], "mask": mask[:, :n], "rr": x["rr"]}
    np.testing.assert_allclose(SavedModelClassifier(target).predict(short), got, atol=1e-6)


def test_a_model_that_cannot_export_is_refused_in_one_line_leaving_nothing(tmp_path):
    """A beat model whose window length is free has no fixed-size LiteRT function."""
    from ecgcap.ecg.models import build_lstm_classifier
    from ecgcap.runtime.modelfile import save_model

    model = build_lstm_classifier(input_length=None, rr_features=9, units=4, dense_units=4,
                                  conv_filters=(4,))
    path = tmp_path / "free.keras"
    save_model(model, path, {"kind": "ecg-beats", "classes": ["N", "S", "V", "F", "Q"],
                             "beats": {"rr_seconds": False, "rr_irregularity": True}})
    result = run_module("ecgcap.export", str(path), "--out", str(tmp_path / "free.tflite"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"python -m ecgcap.export: error: {path}: its input 'beat' has no fixed size "
        "(None, 2); LiteRT needs one"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["free.keras"]


def test_a_beat_sequence_model_is_refused_in_one_line_leaving_nothing(tmp_path):
    from ecgcap.ecg.models import build_beat_sequence_classifier
    from ecgcap.runtime.modelfile import save_model

    model = build_beat_sequence_classifier(context=4, units=4, embedding=4, conv_filters=(4,))
    path = tmp_path / "seq.keras"
    save_model(model, path, {"kind": "ecg-beats", "classes": ["N", "S", "V", "F", "Q"],
                             "beats": {}, "sequence": {"context": 4, "leads": "mlii"}})
    result = run_module("ecgcap.export", str(path), "--out", str(tmp_path / "seq.tflite"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"python -m ecgcap.export: error: {path}: a beat-sequence model (lstm-seq): export "
        "writes per-beat and rhythm models only; run it with classify_ecg --model"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seq.keras"]


@pytest.fixture(scope="module")
def int8_export(tmp_path_factory, mitdb_dir) -> Path:
    """The shipped beat model as int8, calibrated on two DS1 (training) records."""
    target = tmp_path_factory.mktemp("int8") / "beats.int8.tflite"
    result = run_module("ecgcap.export", "beats", "--quantize", "int8", "--out", str(target),
                        "--calibration", str(mitdb_dir / "101"), str(mitdb_dir / "106"))
    assert result.returncode == 0, result.stderr
    assert "labels agree" in result.stdout
    return target


def test_int8_export_agrees_with_keras_on_a_ds2_record_at_a_third_of_the_size(
        int8_export, beat_export, mitdb_dir):
    """Record 233 (DS2, 3,077 beats, 27% of them V): the int8 file gives Keras' label to at
    least 99% of its beats, and is at most a third of the float32 file. Measured by
    benchmarks/export.py: 99.94% of all 49,692 DS2 beats (calibrated on DS1) and 100% of the
    calibration beats; 99% leaves room for a calibration set of two records."""
    from ecgcap.ecg.inference import beat_inputs, load_classifier
    from ecgcap.ecg.litert import contract_path, load_litert_classifier

    contract = json.loads(contract_path(int8_export).read_text())
    assert contract["quantization"] == "int8" and contract["while_loops"] == 6
    assert contract["calibration"]["records"] == [str(mitdb_dir / "101"), str(mitdb_dir / "106")]
    assert contract["calibration"]["beats"] == 1000
    assert contract["checked_label_agreement"] >= 0.99
    assert 0 < contract["checked_max_abs_difference"] < 0.1
    assert int8_export.stat().st_size <= beat_export.stat().st_size / 3

    keras_model, info = load_classifier(MODELS / "mitdb_lstm_beats.keras")
    lite, _ = load_litert_classifier(int8_export)
    _, _, _, x = beat_inputs(info, str(mitdb_dir / "233"))
    x = {"beat": x["beat"], "rr": x["rr"]}
    expected = keras_model.predict(x, batch_size=1024, verbose=0).argmax(-1)
    got = lite.predict(x).argmax(-1)
    assert len(got) == 3077
    assert float(np.mean(got == expected)) >= 0.99


def test_int8_without_calibration_is_refused_in_one_line(tmp_path):
    result = run_module("ecgcap.export", "beats", "--quantize", "int8", "--out",
                        str(tmp_path / "b.tflite"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "python -m ecgcap.export: error: --quantize int8: needs --calibration RECORD... (real "
        "records the model was not tested on: the quantised export is checked on their beats)"]
    assert not list(tmp_path.iterdir())


@pytest.fixture(scope="module")
def onnx_export(tmp_path_factory) -> Path:
    """The shipped beat model exported to ONNX through the command line."""
    target = tmp_path_factory.mktemp("onnx") / "beats.onnx"
    result = run_module("ecgcap.export", "beats", "--format", "onnx", "--out", str(target))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{target}\t") and "beats.onnx.contract.json" in result.stdout
    assert not result.stderr.strip()
    return target


def test_onnx_export_matches_keras_on_every_beat_of_record_233(onnx_export, mitdb_dir):
    """Free batch size, the LSTMs as ONNX LSTM ops (three bidirectional members), run by
    onnxruntime through classify_ecg without TensorFlow; labels as Keras on all 3,077 beats."""
    from ecgcap.ecg.inference import beat_inputs, load_classifier
    from ecgcap.ecg.litert import contract_path
    from ecgcap.ecg.onnx import load_onnx_classifier

    contract = json.loads(contract_path(onnx_export).read_text())
    assert contract["format"] == "ecgcap ECG classifier, ONNX"
    assert contract["onnx_sha256"] == _sha256(onnx_export)
    assert {i["name"]: i["shape"] for i in contract["inputs"]} == {"beat": [None, 126, 2],
                                                                   "rr": [None, 9]}
    assert contract["recurrent_ops"] == {"LSTM": 3}
    keras_model, info = load_classifier(MODELS / "mitdb_lstm_beats.keras")
    model, _ = load_onnx_classifier(onnx_export)
    _, _, _, x = beat_inputs(info, str(mitdb_dir / "233"))
    x = {"beat": x["beat"], "rr": x["rr"]}
    expected = keras_model.predict(x, batch_size=1024, verbose=0)
    got = model.predict(x)
    assert got.shape == expected.shape == (3077, 5)
    assert np.array_equal(got.argmax(-1), expected.argmax(-1))
    assert float(np.abs(got - expected).max()) < TOLERANCE

    result = run_watching_imports("ecgcap.classify_ecg", str(mitdb_dir / "233"), "--model",
                                  str(onnx_export), "--format", "csv")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[-1] == "no tensorflow" and len(lines) == 3077 + 2
    assert lines[2].startswith("233,511,V,")


def test_a_corrupt_onnx_export_is_refused_in_one_line(onnx_export, mitdb_dir, tmp_path):
    from ecgcap.ecg.litert import contract_path

    bad = tmp_path / "bad.onnx"
    bad.write_bytes(onnx_export.read_bytes()[:1000])
    contract_path(bad).write_text(contract_path(onnx_export).read_text())
    result = run_watching_imports("ecgcap.classify_ecg", str(mitdb_dir / "100"), "--model",
                                  str(bad))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"python -m ecgcap.classify_ecg: error: {bad}: corrupt or changed: its sha256 is not "
        "the one bad.onnx.contract.json records"]


def test_onnx_without_onnxruntime_is_one_line(onnx_export, mitdb_dir, tmp_path):
    """With onnxruntime not importable, classify_ecg says what to install (exit 2)."""
    fake = tmp_path / "site" / "onnxruntime"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('not installed')\n")
    result = run_module("ecgcap.classify_ecg", str(mitdb_dir / "100"), "--model",
                        str(onnx_export), env={"PYTHONPATH": str(fake.parent)})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"python -m ecgcap.classify_ecg: error: {onnx_export}: ONNX exports need onnxruntime "
        "(pip install 'ecgcap[export]')"]


def test_rhythm_onnx_export_matches_keras_on_cinc2017_recordings(cinc2017_dir, tmp_path):
    """The masked LSTMs as ONNX Loops over time; A00014 (shorter than a crop: padded, masked)
    and A00103 (three crops) in one batch."""
    from ecgcap.ecg.export import export_classifier
    from ecgcap.ecg.inference import load_classifier
    from ecgcap.ecg.litert import contract_path
    from ecgcap.ecg.onnx import load_onnx_classifier
    from ecgcap.ecg.recordings import RhythmConfig, predict_recordings, read_recording

    target = export_classifier(MODELS / "cinc2017_lstm_rhythm.keras", tmp_path / "r.onnx",
                               fmt="onnx")
    contract = json.loads(contract_path(target).read_text())
    assert contract["recurrent_ops"] == {"Loop": 4} and contract["crop_samples"] == 4500
    keras_model, info = load_classifier(task="rhythm")
    model, _ = load_onnx_classifier(target)
    config = RhythmConfig(**info["rhythm"])
    prepared = [read_recording(cinc2017_dir / name, config) for name in ("A00014", "A00103")]
    signals = [p["signal"] for p in prepared]
    rr = np.stack([p["rr"] for p in prepared])
    expected = predict_recordings(keras_model, signals, rr, config)
    got = predict_recordings(model, signals, rr, config)
    assert np.array_equal(got.argmax(-1), expected.argmax(-1))
    assert float(np.abs(got - expected).max()) < TOLERANCE
