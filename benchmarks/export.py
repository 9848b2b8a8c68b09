"""Exports of the shipped ECG models and captioners against their Keras originals, on real data.

    ECGCAP_DATA=../shared/data python benchmarks/export.py [--rhythm-records 40]
        [--latency-beats 300] [--calibration-records 101 106 ...]

Exports both shipped ECG models into a temporary folder (``python -m ecgcap.export``'s code),
then prints, per model: file sizes (``.keras`` against ``.tflite``), agreement with Keras
(max abs probability difference, label agreement %) and the task figure of both runtimes on
real data (beats: every beat of the 22 MIT-BIH DS2 records, macro-F1; rhythm: the first
``--rhythm-records`` CinC 2017 recordings of ``REFERENCE.csv``, the challenge score F1(N,A,O)),
and latency at batch size 1 (the device case): per beat, Keras ``predict`` and
``predict_on_batch`` on one beat against the LiteRT interpreter on the same beats (the first
``--latency-beats`` DS2 beats), and per recording the same for the rhythm subset. Keras also runs
its usual batched ``predict`` (1,024 beats a batch) for reference. Times are medians of the
per-call wall time, on the CPU threads Keras configures (LiteRT: one thread).

Then the beat model once per quantisation (``none``, ``float16``, ``int8``), each export
calibrated on the beats of MIT-BIH DS1 records (the training patients; by default all 22,
1,000 beats drawn from them), never on DS2, and once as ONNX (onnxruntime): file size, its
fraction of the float32 file, difference and label agreement with Keras on all DS2 beats, DS2
macro-F1, and batch-1 latency per beat; then as a TensorFlow SavedModel. The rhythm model
the same way. ``--skip-float`` prints only those tables.

    ECGCAP_DATA=../shared/data python benchmarks/export.py --captioner rsicd
        [--captioner-images 200] [--latency-images 20]

prints only the captioner table instead: the shipped captioner exported to LiteRT, ONNX and a
SavedModel, each run on the first ``--captioner-images`` test images (RSICD test has 593) and
compared with Keras: files' size, the largest difference of any output of encode, init and the
greedy steps (each runtime fed Keras' tokens), identical greedy captions %, CIDEr
(``score_captions``), and the median time to caption one image greedily at batch size 1.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _median_ms(fn, items) -> float:
    times = []
    for item in items:
        t = time.perf_counter()
        fn(item)
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def _rhythm_exports(out: Path, count: int, calibration_count: int) -> None:
    """The rhythm model per quantisation and as ONNX on the first ``count`` CinC 2017
    recordings, calibrated on the ``calibration_count`` recordings after them."""
    from ecgcap.ecg.api import locate_or_download
    from ecgcap.ecg.evaluation import challenge_report
    from ecgcap.ecg.export import SavedModelClassifier, export_classifier
    from ecgcap.ecg.inference import SHIPPED, load_classifier
    from ecgcap.ecg.io import read_reference
    from ecgcap.ecg.litert import contract_path, load_litert_classifier
    from ecgcap.ecg.onnx import load_onnx_classifier
    from ecgcap.ecg.recordings import RhythmConfig, predict_recordings, read_recording

    keras_model, info = load_classifier(SHIPPED["rhythm"])
    classes = info["classes"]
    config = RhythmConfig(**info["rhythm"])
    cinc = locate_or_download("cinc2017")
    labels = read_reference(cinc / "REFERENCE.csv", tuple(classes))
    names = list(labels)[:count]
    calibration = [str(cinc / n) for n in list(labels)[count:count + calibration_count]]
    prepared = [read_recording(cinc / name, config) for name in names]
    signals = [p["signal"] for p in prepared]
    rr = np.stack([p["rr"] for p in prepared])
    truth = [labels[name] for name in names]
    ref = predict_recordings(keras_model, signals, rr, config)
    score_keras = challenge_report(truth, [classes[i] for i in ref.argmax(-1)])["score"]
    rows, float_mb = [], None
    for fmt, quantize in (("litert", "none"), ("litert", "float16"), ("litert", "int8"),
                          ("onnx", "none"), ("saved_model", "none")):
        suffix = {"onnx": ".onnx", "saved_model": ".saved_model"}.get(fmt, ".tflite")
        t = time.perf_counter()
        path = export_classifier(SHIPPED["rhythm"], out / f"rhythm.{quantize}{suffix}",
                                 quantize, calibration, fmt=fmt)
        export_s = time.perf_counter() - t
        load = {"onnx": load_onnx_classifier, "saved_model": lambda p: (
            SavedModelClassifier(p), None)}.get(fmt, load_litert_classifier)
        model, _ = load(path)
        got = predict_recordings(model, signals, rr, config)
        contract = json.loads(contract_path(path).read_text())
        ms = _median_ms(lambda i, model=model: predict_recordings(
            model, signals[i:i + 1], rr[i:i + 1], config, batch_size=1), range(len(names)))
        mb = (sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir()
              else path.stat().st_size) / 1e6
        float_mb = float_mb or mb
        score = challenge_report(truth, [classes[i] for i in got.argmax(-1)])["score"]
        rows.append(f"| {fmt} {quantize} | {mb:.3f} | {mb / float_mb:.3f} | {export_s:.0f} | "
                    f"{100 * contract['checked_label_agreement']:.2f}% / "
                    f"{contract['checked_max_abs_difference']:.2g} | "
                    f"{float(np.abs(got - ref).max()):.2g} | "
                    f"{100 * float(np.mean(got.argmax(-1) == ref.argmax(-1))):.2f}% | "
                    f"{score:.4f} ({score_keras - score:+.4f}) | {ms:.2f} |")
    cal_crops = contract["calibration"]["crops"]
    print()
    print(f"rhythm: checked at export on the {cal_crops} crops of CinC 2017 recordings "
          f"{count + 1}-{count + calibration_count}; then the first {count} recordings "
          f"(Keras F1(N,A,O) {score_keras:.4f})")
    print()
    print("| export | file MB | of float32 .tflite | export s | calibration crops: labels "
          "agree / max diff | max abs prob diff | labels agree | F1(N,A,O) (Keras - export) | "
          "ms per recording, batch 1 |")
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


def _captioner_exports(name: str, count: int, latency_images: int) -> None:
    """The captioner ``name`` exported to LiteRT, ONNX and a SavedModel, against Keras on the
    first ``count`` RSICD (or Flickr8k) test images: file size, the largest difference of the
    step outputs (logits, states, attention) over the whole greedy decoding (each runtime
    fed Keras' greedy tokens, its own states), identical greedy captions %, CIDEr, and the
    median time to caption one image (greedy, batch 1) on the first ``latency_images``."""
    from ecgcap.captioning.datasets import load_captions
    from ecgcap.captioning.decoding import CaptionDecoder
    from ecgcap.captioning.evaluation import score_captions
    from ecgcap.captioning.images import load_images
    from ecgcap.captioning.inference import captioner_path, load_captioner
    from ecgcap.captioning.litert import export_captioner, load_captioner_litert
    from ecgcap.captioning.models import decoder_parts
    from ecgcap.captioning.onnx import export_captioner_onnx, load_captioner_onnx
    from ecgcap.captioning.savedmodel import (
        export_captioner_saved_model,
        load_captioner_saved_model,
    )

    path = captioner_path(name)
    out = Path(tempfile.mkdtemp(prefix="ecgcap-caption-export-"))
    exports = {"litert": (export_captioner, load_captioner_litert),
               "onnx": (export_captioner_onnx, load_captioner_onnx),
               "saved_model": (export_captioner_saved_model, load_captioner_saved_model)}
    keras_parts = decoder_parts(load_captioner(path)[0])
    dataset = "rsicd" if name == "rsicd" else "flickr8k"
    test = load_captions(dataset, "test", report=lambda _: None)
    refs = test.captions[:count]
    size = int(keras_parts.encoder.inputs[0].shape[1])
    images = load_images(test.paths()[:count], size).astype(np.float32)

    chunk = 64  # images a call: ONNX Runtime's encoder on all 593 at once runs out of memory

    def greedy_chain(parts, batch, tokens_ref=None):
        fmap, vec = (np.asarray(t) for t in parts.encoder.predict_on_batch(batch))
        states = [np.asarray(s) for s in parts.init.predict_on_batch(vec)]
        token = np.full((len(batch), 1), 2, np.int32)
        outs, tokens = [[fmap, vec]], []
        for t in range(keras_parts.max_length):
            out = [np.asarray(o) for o in parts.step.predict_on_batch(
                [token, vec, fmap, *states])]
            outs.append(out)
            states = out[1:1 + len(states)]
            token = (out[0].argmax(-1).astype(np.int32)[:, None] if tokens_ref is None
                     else tokens_ref[t])
            tokens.append(token)
        return outs, tokens

    def step_difference(parts) -> float:
        """The largest difference from Keras of any output of encode, init or a step, each
        runtime fed Keras' greedy tokens and its own states."""
        worst = 0.0
        for i in range(0, len(images), chunk):
            batch = images[i:i + chunk]
            keras_outs, keras_tokens = greedy_chain(keras_parts, batch)
            outs, _ = greedy_chain(parts, batch, keras_tokens)
            worst = max([worst] + [float(np.max(np.abs(a - b)))
                                   for o, k in zip(outs, keras_outs, strict=True)
                                   for a, b in zip(o, k, strict=True)])
        return worst

    t = time.perf_counter()
    keras_decoder = CaptionDecoder(keras_parts, batch_size=chunk)
    keras_caps = keras_decoder.caption(images, beam=1)
    keras_s = time.perf_counter() - t
    keras_cider = score_captions(refs, keras_caps, meteor=False)["CIDEr"]
    keras_decoder.caption(images[:1], beam=1)  # warm-up: Keras traces at batch size 1
    keras_ms = _median_ms(lambda i: keras_decoder.caption(images[i:i + 1], beam=1),
                          range(latency_images))
    keras_mb = path.stat().st_size / 1e6
    print(f"\n{name} captioner ({path.name}, {keras_mb:.1f} MB), {dataset} test, first "
          f"{count} images; Keras: greedy CIDEr {keras_cider:.3f}, {keras_s:.0f} s for the "
          f"greedy captions ({chunk} a call), {keras_ms:.0f} ms per image at batch 1")
    print("| export | files MB | export s | max abs diff of step outputs | greedy captions "
          "identical | CIDEr (Keras / export) | ms per image, batch 1 (Keras / export) |")
    print("|---|---|---|---|---|---|---|")
    for fmt, (export, load) in exports.items():
        t = time.perf_counter()
        folder = export(path, out / f"{name}.{fmt}")
        export_s = time.perf_counter() - t
        mb = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6
        parts = load(folder)
        diff = step_difference(parts)
        decoder = CaptionDecoder(parts, batch_size=chunk)
        caps = decoder.caption(images, beam=1)
        same = 100 * np.mean([a == b for a, b in zip(caps, keras_caps, strict=True)])
        cider = score_captions(refs, caps, meteor=False)["CIDEr"]
        decoder.caption(images[:1], beam=1)  # warm-up
        ms = _median_ms(lambda i, d=decoder: d.caption(images[i:i + 1], beam=1),
                        range(latency_images))
        print(f"| {fmt} | {mb:.1f} | {export_s:.0f} | {diff:.2g} | {same:.1f}% | "
              f"{keras_cider:.4f} / {cider:.4f} | {keras_ms:.0f} / {ms:.0f} |", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rhythm-records", type=int, default=40)
    parser.add_argument("--latency-beats", type=int, default=300)
    parser.add_argument("--calibration-records", nargs="+", default=None,
                        help="MIT-BIH records to calibrate on (default: all of DS1)")
    parser.add_argument("--rhythm-calibration", type=int, default=20,
                        help="CinC 2017 recordings after the first --rhythm-records to "
                             "calibrate the rhythm exports on")
    parser.add_argument("--skip-float", action="store_true",
                        help="only the quantisation table")
    parser.add_argument("--captioner", default=None, metavar="photo|rsicd",
                        help="only the captioner table, for this shipped captioner")
    parser.add_argument("--captioner-images", type=int, default=200,
                        help="the first N test images (RSICD test has 593)")
    parser.add_argument("--latency-images", type=int, default=20)
    args = parser.parse_args()
    if args.captioner:
        from ecgcap.runtime.device import configure_device

        print(configure_device("cpu"))
        _captioner_exports(args.captioner, args.captioner_images, args.latency_images)
        return 0

    from ecgcap.ecg.api import locate_or_download
    from ecgcap.ecg.databases import MITDB_DS1, MITDB_DS2, get_database
    from ecgcap.ecg.dataset import BeatConfig, load_beats
    from ecgcap.ecg.evaluation import aami_report, challenge_report
    from ecgcap.ecg.export import SavedModelClassifier, export_classifier
    from ecgcap.ecg.inference import SHIPPED, load_classifier
    from ecgcap.ecg.io import read_reference
    from ecgcap.ecg.litert import contract_path, load_litert_classifier
    from ecgcap.ecg.onnx import load_onnx_classifier
    from ecgcap.ecg.recordings import RhythmConfig, predict_recordings, read_recording
    from ecgcap.runtime.device import configure_device

    print(configure_device("cpu"))
    out = Path(tempfile.mkdtemp(prefix="ecgcap-export-"))
    rows = []

    # beats: every DS2 beat
    mitdb = locate_or_download("mitdb")
    keras_model, info = load_classifier(SHIPPED["beats"])
    classes = info["classes"]
    data = load_beats(mitdb, get_database("mitdb"), list(MITDB_DS2),
                      BeatConfig.from_info(info["beats"]), quiet=True)
    x = {"beat": data["beat"], "rr": data["rr"]}
    n = len(data["label"])
    t = time.perf_counter()
    ref = keras_model.predict(x, batch_size=1024, verbose=0)
    keras_batched = 1e3 * (time.perf_counter() - t) / n
    one = [{k: v[i:i + 1] for k, v in x.items()} for i in range(args.latency_beats)]
    f1_keras = aami_report(data["label"], [classes[i] for i in ref.argmax(-1)])["macro_f1"]

    calibration = [str(mitdb / r) for r in (args.calibration_records or MITDB_DS1)]
    assert not set(map(Path, calibration)) & {mitdb / r for r in MITDB_DS2}, "DS2 is test data"
    quant_rows = []
    for quantize in ("none", "float16", "int8"):
        t = time.perf_counter()
        path = export_classifier(SHIPPED["beats"], out / f"beats.{quantize}.tflite", quantize,
                                 calibration)
        export_s = time.perf_counter() - t
        model, _ = load_litert_classifier(path)
        got = model.predict(x)
        contract = json.loads(contract_path(path).read_text())
        quant_rows.append({
            "quantize": quantize, "mb": path.stat().st_size / 1e6, "export_s": export_s,
            "cal_agree": 100 * contract["checked_label_agreement"],
            "cal_diff": contract["checked_max_abs_difference"],
            "max_diff": float(np.abs(got - ref).max()),
            "agree": 100 * float(np.mean(got.argmax(-1) == ref.argmax(-1))),
            "f1": aami_report(data["label"], [classes[i] for i in got.argmax(-1)])["macro_f1"],
            "ms": _median_ms(model.predict_on_batch, one)})
    cal_beats = contract["calibration"]["beats"]
    t = time.perf_counter()
    path = export_classifier(SHIPPED["beats"], out / "beats.onnx", fmt="onnx")
    export_s = time.perf_counter() - t
    model, _ = load_onnx_classifier(path)
    t = time.perf_counter()
    got = model.predict(x)
    onnx_all = 1e3 * (time.perf_counter() - t) / n
    quant_rows.append({
        "quantize": "onnx (float32, onnxruntime, 1 thread)", "mb": path.stat().st_size / 1e6,
        "export_s": export_s, "cal_agree": float("nan"), "cal_diff": float("nan"),
        "max_diff": float(np.abs(got - ref).max()),
        "agree": 100 * float(np.mean(got.argmax(-1) == ref.argmax(-1))),
        "f1": aami_report(data["label"], [classes[i] for i in got.argmax(-1)])["macro_f1"],
        "ms": _median_ms(model.predict_on_batch, one)})
    t = time.perf_counter()
    path = export_classifier(SHIPPED["beats"], out / "beats.saved_model", fmt="saved_model")
    export_s = time.perf_counter() - t
    model = SavedModelClassifier(path)
    got = model.predict(x)
    quant_rows.append({
        "quantize": "saved_model (float32, TensorFlow)",
        "mb": sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6,
        "export_s": export_s, "cal_agree": float("nan"), "cal_diff": float("nan"),
        "max_diff": float(np.abs(got - ref).max()),
        "agree": 100 * float(np.mean(got.argmax(-1) == ref.argmax(-1))),
        "f1": aami_report(data["label"], [classes[i] for i in got.argmax(-1)])["macro_f1"],
        "ms": _median_ms(model.predict_on_batch, one)})
    print()
    print(f"beats, per quantisation: checked at export on {cal_beats} beats of "
          f"{len(calibration)} MIT-BIH DS1 records; then all {n} DS2 beats (Keras macro-F1 "
          f"{f1_keras:.4f})")
    print()
    print("| export | file MB | of float32 .tflite | export s | calibration beats: labels "
          "agree / max diff | DS2: max abs prob diff | DS2: labels agree | DS2 macro-F1 "
          "(Keras - export) | ms per beat, batch 1 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in quant_rows:
        cal = ("-" if r["cal_agree"] != r["cal_agree"]  # NaN: checked on one example
               else f"{r['cal_agree']:.2f}% / {r['cal_diff']:.2g}")
        print(f"| {r['quantize']} | {r['mb']:.3f} | {r['mb'] / quant_rows[0]['mb']:.3f} | "
              f"{r['export_s']:.0f} | {cal} | "
              f"{r['max_diff']:.2g} | {r['agree']:.2f}% | {r['f1']:.4f} "
              f"({f1_keras - r['f1']:+.4f}) | {r['ms']:.2f} |")
    print(f"\nONNX over all {n} DS2 beats, 1,024 a call: {onnx_all:.3f} ms/beat")
    _rhythm_exports(out, args.rhythm_records, args.rhythm_calibration)
    if args.skip_float:
        return 0

    t = time.perf_counter()
    beats_tflite = export_classifier(SHIPPED["beats"], out / "beats.tflite")
    export_s = time.perf_counter() - t
    lite, _ = load_litert_classifier(beats_tflite)
    t = time.perf_counter()
    got = lite.predict(x)
    lite_all = 1e3 * (time.perf_counter() - t) / n
    keras_model.predict(one[0], verbose=0)  # warm up both Keras paths
    keras_model.predict_on_batch(one[0])
    lat = {"keras predict": _median_ms(lambda b: keras_model.predict(b, verbose=0), one),
           "keras predict_on_batch": _median_ms(keras_model.predict_on_batch, one),
           "litert": _median_ms(lite.predict_on_batch, one)}
    f1_lite = aami_report(data["label"], [classes[i] for i in got.argmax(-1)])["macro_f1"]
    rows.append({
        "model": "beats (mitdb_lstm_beats)", "data": f"MIT-BIH DS2, all {n} beats",
        "keras_mb": SHIPPED["beats"].stat().st_size / 1e6,
        "tflite_mb": beats_tflite.stat().st_size / 1e6, "export_s": export_s,
        "max_diff": float(np.abs(got - ref).max()),
        "agree": 100 * float(np.mean(got.argmax(-1) == ref.argmax(-1))),
        "figure": f"macro-F1 {f1_keras:.4f} / {f1_lite:.4f}", "unit": "beat",
        "latency": lat, "extra": f"Keras predict, batch 1024: {keras_batched:.3f} ms/beat; "
                                 f"LiteRT over all {n} beats: {lite_all:.3f} ms/beat"})

    # rhythm: the first recordings of REFERENCE.csv
    t = time.perf_counter()
    rhythm_tflite = export_classifier(SHIPPED["rhythm"], out / "rhythm.tflite")
    export_s = time.perf_counter() - t
    keras_model, info = load_classifier(SHIPPED["rhythm"])
    lite, _ = load_litert_classifier(rhythm_tflite)
    classes = info["classes"]
    config = RhythmConfig(**info["rhythm"])
    cinc = locate_or_download("cinc2017")
    labels = read_reference(cinc / "REFERENCE.csv", tuple(classes))
    names = list(labels)[:args.rhythm_records]
    prepared = [read_recording(cinc / name, config) for name in names]
    signals = [p["signal"] for p in prepared]
    rr = np.stack([p["rr"] for p in prepared])
    ref = predict_recordings(keras_model, signals, rr, config)
    got = predict_recordings(lite, signals, rr, config)
    each = list(range(len(names)))
    predict_recordings(keras_model, signals[:1], rr[:1], config)  # warm up
    lat = {
        "keras predict": _median_ms(lambda i: predict_recordings(
            keras_model, signals[i:i + 1], rr[i:i + 1], config, batch_size=1,
            predict=lambda b: keras_model.predict(b, verbose=0)), each),
        "keras predict_on_batch": _median_ms(lambda i: predict_recordings(
            keras_model, signals[i:i + 1], rr[i:i + 1], config, batch_size=1), each),
        "litert": _median_ms(lambda i: predict_recordings(
            lite, signals[i:i + 1], rr[i:i + 1], config, batch_size=1), each)}
    truth = [labels[name] for name in names]
    score_keras = challenge_report(truth, [classes[i] for i in ref.argmax(-1)])["score"]
    score_lite = challenge_report(truth, [classes[i] for i in got.argmax(-1)])["score"]
    seconds = sum(len(s) for s in signals) / config.fs / len(signals)
    rows.append({
        "model": "rhythm (cinc2017_lstm_rhythm)",
        "data": f"CinC 2017, first {len(names)} recordings (mean {seconds:.0f} s)",
        "keras_mb": SHIPPED["rhythm"].stat().st_size / 1e6,
        "tflite_mb": rhythm_tflite.stat().st_size / 1e6, "export_s": export_s,
        "max_diff": float(np.abs(got - ref).max()),
        "agree": 100 * float(np.mean(got.argmax(-1) == ref.argmax(-1))),
        "figure": f"F1(N,A,O) {score_keras:.4f} / {score_lite:.4f}", "unit": "recording",
        "latency": lat, "extra": "crops of 30 s every 15 s, one crop per call"})

    print()
    print("| model | data | .keras MB | .tflite MB | export s | max abs prob diff | "
          "labels agree | task figure (Keras / LiteRT) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['data']} | {r['keras_mb']:.2f} | {r['tflite_mb']:.2f} | "
              f"{r['export_s']:.0f} | {r['max_diff']:.2g} | {r['agree']:.2f}% | "
              f"{r['figure']} |")
    print()
    print("| model | batch-1 latency | Keras predict | Keras predict_on_batch | LiteRT | "
          "LiteRT speed-up vs predict / predict_on_batch |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        lat = r["latency"]
        print(f"| {r['model'].split()[0]} | ms per {r['unit']} | {lat['keras predict']:.2f} | "
              f"{lat['keras predict_on_batch']:.2f} | {lat['litert']:.2f} | "
              f"{lat['keras predict'] / lat['litert']:.1f}x / "
              f"{lat['keras predict_on_batch'] / lat['litert']:.1f}x |")
    print()
    for r in rows:
        print(f"{r['model'].split()[0]}: {r['extra']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
