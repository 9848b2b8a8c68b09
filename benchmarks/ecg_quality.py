"""AAMI EC57 quality of the beat classifiers under the inter-patient protocol (DS1 -> DS2).

Trains the LSTM and the SimpleRNN baseline with the shipped defaults for several seeds
(every choice made inside DS1: early stopping on the patient-wise validation hold-out, or with
``--fixed-epochs`` a number of epochs from the DS1 cross-validation), prints each run's
DS2 table side by side, the mean and spread over seeds, and checks the bars. Finished runs are
reused (their report.json), so the script can be stopped and started again.

    ECGCAP_DATA=../shared/data python benchmarks/ecg_quality.py [--seeds 0 1 2] [--ship]
        [--fixed-epochs lstm=N simplernn=M]

``--fixed-epochs`` trains each named model on all of DS1 for its number of epochs, without a
validation hold-out or early stopping (``train_ecg --val-records none --epochs N``); the numbers
come from the DS1 cross-validation (``benchmarks/ecg_ds1_cv.py --per-epoch``), never from DS2.

Each model's seeds are also averaged into one ensemble (mean probabilities of the seeds' best
models, :func:`ecgcap.ecg.training.ensemble_runs`), scored beside them. ``--ship`` copies the
LSTM ensemble to models/ (the rule was fixed before its DS2 figures were seen).

Figures on detected beats (the whole chain, as a user with a raw recording runs it):

    ECGCAP_DATA=../shared/data python benchmarks/ecg_quality.py \
        --model-file models/mitdb_lstm_beats.keras --beats both [--verbose]

scores a model file without training anything: on each DS2 record a QRS detector (``xqrs``,
wfdb's XQRS on the lead the model reads, as ``classify_ecg --annotations xqrs`` runs it; or
``neurokit``, NeuroKit2's default detector, when that package is installed) finds the beats,
the model labels them (:func:`ecgcap.ecg.inference.classify_record`), and the labels are
written as WFDB annotation files and scored against the reference with ``score_ecg``'s 150 ms
matching (:func:`ecgcap.ecg.scoring.score_annotations`): the QRS detection sensitivity and
positive predictivity (pooled over DS2; per record with ``--verbose``), and the AAMI table on
the matched beats beside the same model's table on the reference beat positions. Detections
are cached under ``--runs-dir`` (``detections/``), so a rerun only classifies. Without
``--model-file``, ``--beats xqrs|both`` scores each trained ensemble the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from ecgcap.ecg.evaluation import side_by_side  # noqa: E402

BARS = [("macro_f1", None, 0.60), ("sensitivity", "V", 0.85), ("ppv", "V", 0.80),
        ("sensitivity", "S", 0.60), ("ppv", "S", 0.45)]
# Issue 32's bars for detected beats: detection Se and +P, and macro-F1 close to the reference's.
DETECTION_BAR = 0.995
MACRO_F1_GAP = 0.02
DETECTORS = ("xqrs", "neurokit")


def figure(report: dict, metric: str, cls: str | None) -> float:
    value = report[metric] if cls is None else report["per_class"][cls][metric]
    return float(value or 0.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--models", nargs="+", default=["lstm", "simplernn"])
    parser.add_argument("--runs-dir", default="runs/ecg_quality")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--ship", action="store_true")
    parser.add_argument("--fixed-epochs", nargs="+", default=[], metavar="MODEL=N",
                        help="train MODEL on all of DS1 for N epochs, no validation hold-out")
    parser.add_argument("--model-file", metavar="PATH", default=None,
                        help="score this model file on DS2 (reference and/or detected beats) "
                             "and train nothing")
    parser.add_argument("--beats", default=None, metavar="SOURCE",
                        choices=("reference", "xqrs", "neurokit", "both", "all"),
                        help="beat positions to classify and score: reference (the .atr "
                             "beats), xqrs or neurokit (detected, then matched within 150 ms), "
                             "both (reference and xqrs), all (reference, xqrs, neurokit); "
                             "default reference, or both with --model-file")
    parser.add_argument("--verbose", action="store_true",
                        help="per-record QRS detection table")
    args = parser.parse_args()
    data_dir = _data_dir(args.data_dir)
    if args.model_file is not None:
        score_model_file(Path(args.model_file), _sources(args.beats or "both"), data_dir,
                         Path(args.runs_dir), verbose=args.verbose)
        return 0
    fixed = {m: int(n) for m, n in (item.split("=") for item in args.fixed_epochs)}

    reports: dict[str, dict] = {}
    for model in args.models:
        for seed in args.seeds:
            name = f"{model}-seed{seed}"
            run = Path(args.runs_dir) / name
            done = run / "report.json"
            wanted = ([], fixed[model]) if model in fixed else (None, None)
            if done.is_file() and wanted[0] is not None:  # a run of the other protocol
                config = json.loads(done.read_text())["config"]
                if (config["val_records"], config["epochs"]) != wanted:
                    done.unlink()
            if not done.is_file():
                cmd = [sys.executable, "-m", "ecgcap.train_ecg", "--db", "mitdb", "--model", model,
                       "--seed", str(seed), "--runs-dir", args.runs_dir, "--name", name,
                       "--device", "cpu", "-q", "--overwrite"]
                if args.data_dir:
                    cmd += ["--data-dir", args.data_dir]
                if model in fixed:
                    cmd += ["--val-records", "none", "--epochs", str(fixed[model])]
                print("running:", " ".join(cmd[1:]), flush=True)
                subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            reports[name] = json.loads((run / "report.json").read_text())

    from ecgcap.runtime.device import configure_device

    configure_device("cpu")
    ensembles = {}
    for model in args.models:
        folder = Path(args.runs_dir) / f"{model}-ensemble"
        members = [Path(args.runs_dir) / f"{model}-seed{s}" for s in args.seeds]
        report = folder / "report.json"
        if not report.is_file() or json.loads(report.read_text())["members"] != \
                [str(m) for m in members] or any(
                (m / "model.keras").stat().st_mtime > report.stat().st_mtime for m in members):
            ensemble(members, folder, args.data_dir)  # none yet, or of other or older runs
        ensembles[model] = json.loads(report.read_text())

    print("\nDS2 (test records), one column per run:\n")
    print(side_by_side({**{k: r["test"] for k, r in reports.items()},
                        **{f"{m}-ensemble": e["test"] for m, e in ensembles.items()}}))
    print("\nmean (spread = sample std) over seeds, DS2:")
    rows = [("macro-F1", "macro_f1", None)] + [
        (f"{c} {label}", m, c) for c in "NSVF" for label, m in (("Se", "sensitivity"),
                                                               ("+P", "ppv"), ("F1", "f1"))]
    print(f"{'':12}" + "".join(f"{m:>22}" for m in args.models))
    means = {}
    for label, metric, cls in rows:
        cells = []
        for model in args.models:
            vals = [figure(reports[f"{model}-seed{s}"]["test"], metric, cls) for s in args.seeds]
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            means[(model, metric, cls)] = statistics.mean(vals)
            cells.append(f"{statistics.mean(vals):.3f} +- {sd:.3f}")
        print(f"{label:12}" + "".join(f"{c:>22}" for c in cells))
    times = {m: statistics.mean(reports[f"{m}-seed{s}"]["seconds"]["train"] for s in args.seeds)
             for m in args.models}
    print("mean training time (s): " + ", ".join(f"{m} {t:.0f}" for m, t in times.items()))

    if "lstm" in args.models:
        print("\nbars for the LSTM on DS2 (mean over seeds | ensemble of the seeds):")
        for metric, cls, bar in BARS:
            value = means[("lstm", metric, cls)]
            whole = figure(ensembles["lstm"]["test"], metric, cls)
            name = metric if cls is None else f"{cls} {metric}"
            print(f"  {name:16} {value:.3f} {'PASS' if value >= bar else 'FAIL'} | "
                  f"{whole:.3f} {'PASS' if whole >= bar else 'FAIL'}   (bar {bar:.2f})")
        if "simplernn" in args.models:
            a, b = means[("lstm", "macro_f1", None)], means[("simplernn", "macro_f1", None)]
            ea = ensembles["lstm"]["test"]["macro_f1"]
            eb = ensembles["simplernn"]["test"]["macro_f1"]
            print(f"  LSTM macro-F1 {a:.3f} vs SimpleRNN {b:.3f} (seed means): "
                  f"{'PASS' if a > b else 'FAIL'}; ensembles {ea:.3f} vs {eb:.3f}: "
                  f"{'PASS' if ea > eb else 'FAIL'}")
    if args.beats not in (None, "reference"):
        for model in args.models:
            score_model_file(Path(args.runs_dir) / f"{model}-ensemble" / "model.keras",
                             _sources(args.beats), data_dir, Path(args.runs_dir),
                             verbose=args.verbose)
    if args.ship:
        folder = Path(args.runs_dir) / "lstm-ensemble"
        target = Path("models/mitdb_lstm_beats.keras")
        shutil.copy(folder / "model.keras", target)
        shutil.copy(folder / "report.json", Path("models/mitdb_lstm_beats.report.json"))
        print(f"\nshipped the LSTM ensemble of seeds {ensembles['lstm']['member_seeds']} "
              f"as {target}")
    return 0


def ensemble(runs: list[Path], folder: Path, data_dir: str | None) -> dict:
    from ecgcap.ecg.api import locate_or_download
    from ecgcap.ecg.databases import get_database
    from ecgcap.ecg.training import ensemble_runs

    folder.mkdir(parents=True, exist_ok=True)
    return ensemble_runs(runs, get_database("mitdb"), locate_or_download("mitdb", data_dir),
                         folder)


# ---------------------------------------------------------------------------------------------
# scoring a model file on reference and on detected beats


def _data_dir(data_dir: str | None) -> Path:
    from ecgcap.ecg.api import locate_or_download

    return locate_or_download("mitdb", data_dir, quiet=True)


def _sources(beats: str) -> list[str]:
    """The beat sources that ``--beats`` names, reference first."""
    return {"reference": ["reference"], "xqrs": ["xqrs"], "neurokit": ["neurokit"],
            "both": ["reference", "xqrs"], "all": ["reference", *DETECTORS]}[beats]


def neurokit_peaks(x: np.ndarray, fs: float) -> np.ndarray:
    """R peaks by NeuroKit2's default detector (``ecg_clean`` then ``ecg_peaks``)."""
    try:
        import neurokit2 as nk
    except ImportError:
        raise SystemExit("ecg_quality.py: error: --beats neurokit needs NeuroKit2 "
                         "(pip install neurokit2)") from None
    cleaned = nk.ecg_clean(np.asarray(x, dtype=np.float64), sampling_rate=fs)
    _, found = nk.ecg_peaks(cleaned, sampling_rate=fs)
    return np.unique(np.asarray(found["ECG_R_Peaks"], dtype=np.int64))


def detect(path: Path, lead: str, detector: str) -> tuple[np.ndarray, float]:
    """R peaks of a record on the lead a model reading ``lead`` reads (the lead chosen as
    ``classify_ecg`` chooses it), and the record's sampling rate."""
    import wfdb

    from ecgcap.ecg import io
    from ecgcap.ecg.inference import _beat_lead, beat_positions

    rec = io.read_record(path)
    x, used = _beat_lead(rec, lead, str(path))
    if detector == "xqrs":  # exactly as classify_record runs it (--annotations xqrs)
        one = wfdb.Record(record_name=rec.record_name, fs=rec.fs, sig_len=len(x),
                          p_signal=x[:, None], sig_name=[used], n_sig=1)
        return beat_positions(one, None, "xqrs")[0], float(rec.fs)
    if detector == "neurokit":
        return neurokit_peaks(x, rec.fs), float(rec.fs)
    raise ValueError(f"unknown detector {detector!r}; choose from {', '.join(DETECTORS)}")


def cached_detections(records: list[str], data_dir: Path, lead: str, detector: str,
                      cache: Path) -> tuple[dict[str, np.ndarray], Path]:
    """Each record's detections, computed once and kept in ``cache/<detector>-<lead>/``.

    The folder also gets a copy of each record as links (header, signal, reference) with the
    detections as a ``.qrs`` annotation file, so that ``classify_record(...,
    annotations="qrs")`` classifies the beats at the detected positions. Returns the
    detections and that folder.
    """
    import wfdb

    folder = cache / f"{detector}-{lead}"
    folder.mkdir(parents=True, exist_ok=True)
    found = {}
    for name in records:
        source = data_dir / name
        saved = folder / f"{name}.npy"
        newest = max(source.with_suffix(e).stat().st_mtime for e in (".hea", ".dat"))
        if saved.is_file() and saved.stat().st_mtime >= newest and \
                (folder / f"{name}.qrs").is_file():
            peaks = np.load(saved)
        else:
            peaks, fs = detect(source, lead, detector)
            peaks = np.unique(peaks)
            for ext in (".hea", ".dat", ".atr"):
                link = folder / f"{name}{ext}"
                if link.is_symlink() or link.exists():
                    link.unlink()
                link.symlink_to(source.with_suffix(ext).resolve())
            wfdb.wrann(name, "qrs", peaks, symbol=["N"] * len(peaks), fs=fs,
                       write_dir=str(folder))
            np.save(saved, peaks)
        found[name] = peaks
    return found, folder


def reference_beats(path: Path) -> tuple[np.ndarray, float]:
    """The reference beat positions (AAMI beat symbols, as ``score_ecg`` counts them)."""
    from ecgcap.ecg import io, processing

    ann = io.read_annotation(path)
    beats = processing.aami_classes(ann.symbol) != ""
    return np.asarray(ann.sample)[beats], float(ann.fs)


def detection_counts(reference: np.ndarray, found: np.ndarray, fs: float) -> dict[str, int]:
    """Reference beats, detections, and matches within ``score_ecg``'s 150 ms window."""
    from ecgcap.ecg.scoring import MATCH_WINDOW, match_beats

    tp = len(match_beats(reference, found, int(round(MATCH_WINDOW * fs))))
    return {"reference": len(reference), "detected": len(found), "tp": tp,
            "fn": len(reference) - tp, "fp": len(found) - tp}


def _se_ppv(c: dict[str, int]) -> tuple[float, float]:
    return c["tp"] / max(c["reference"], 1), c["tp"] / max(c["detected"], 1)


def format_detection(rows: dict[str, dict[str, int]]) -> str:
    """A QRS detection table: one row per record (or detector), Se and +P in %."""
    head = f"{'':10}{'ref beats':>10}{'detected':>10}{'TP':>8}{'FN':>6}{'FP':>6}" \
           f"{'Se %':>9}{'+P %':>9}"
    lines = [head, "-" * len(head)]
    for name, c in rows.items():
        se, ppv = _se_ppv(c)
        lines.append(f"{name:10}{c['reference']:>10}{c['detected']:>10}{c['tp']:>8}"
                     f"{c['fn']:>6}{c['fp']:>6}{100 * se:>9.2f}{100 * ppv:>9.2f}")
    return "\n".join(lines)


def classify_and_score(model: Any, info: dict[str, Any], records: list[str], data_dir: Path,
                       folder: Path, annotations: str, out_dir: Path) -> dict[str, Any]:
    """Classify each record's beats at the positions of ``folder/<record>.<annotations>``,
    write them as WFDB annotation files in ``out_dir`` (as ``classify_ecg --format wfdb``
    does) and score them against the reference (as ``score_ecg`` does)."""
    from ecgcap.ecg.evaluation import aami_report
    from ecgcap.ecg.inference import classify_record, write_wfdb
    from ecgcap.ecg.scoring import score_annotations

    y_ref, y_test, missed, extra, classified = [], [], 0, 0, 0
    start = time.perf_counter()
    for name in records:
        result = classify_record(model, info, str(folder / name), annotations=annotations)
        write_wfdb(result, "ecgcap", out_dir)
        r, t, m, e = score_annotations(data_dir / name, "ecgcap", out_dir)
        y_ref += r
        y_test += t
        missed += m
        extra += e
        classified += len(result["beats"])
    report = aami_report(y_ref, y_test)
    return {"report": report, "matched": len(y_ref), "missed": missed, "extra": extra,
            "classified": classified, "seconds": round(time.perf_counter() - start, 1)}


def score_model_file(path: Path, sources: list[str], data_dir: Path, runs_dir: Path, *,
                     verbose: bool = False) -> dict[str, Any]:
    """Score the beat model file ``path`` on DS2 for each beat source (``reference`` or a
    detector) and print the detection table, the AAMI tables and the issue's bars."""
    from ecgcap.ecg.databases import get_database
    from ecgcap.ecg.evaluation import format_confusion, format_table
    from ecgcap.ecg.inference import load_classifier
    from ecgcap.runtime.device import configure_device
    from ecgcap.runtime.files import atomic_write_json

    if not path.is_file():
        raise SystemExit(f"ecg_quality.py: error: --model-file {path}: no such file")
    configure_device("cpu")
    model, info = load_classifier(path)
    lead = str(info.get("beats", {}).get("lead", "MLII"))
    records = list(get_database("mitdb").split["test"])
    slug = "_".join(path.with_suffix("").parts[-2:]).replace(os.sep, "_")
    out = runs_dir / "model-file" / slug
    print(f"\n{path}: DS2 ({len(records)} records), beats from "
          f"{', '.join(sources)}; a detection or label within 150 ms of a reference beat "
          "is a match (score_ecg)", flush=True)
    detection: dict[str, dict[str, Any]] = {}
    scored: dict[str, dict[str, Any]] = {}
    for source in sources:
        if source == "reference":
            folder, annotations = data_dir, "atr"
        else:
            start = time.perf_counter()
            found, folder = cached_detections(records, data_dir, lead, source,
                                              runs_dir / "detections")
            annotations = "qrs"
            per_record = {}
            for name in records:
                ref, fs = reference_beats(data_dir / name)
                per_record[name] = detection_counts(ref, found[name], fs)
            pooled = {k: sum(c[k] for c in per_record.values()) for k in per_record[records[0]]}
            detection[source] = {"pooled": pooled, "records": per_record,
                                 "seconds": round(time.perf_counter() - start, 1)}
            if verbose:
                print(f"\nQRS detection by {source} on lead {lead}, per DS2 record:")
                print(format_detection({**per_record, "DS2": pooled}))
        scored[source] = classify_and_score(model, info, records, data_dir, folder,
                                            annotations, out / source)
    if detection:
        print(f"\nQRS detection on DS2 (lead {lead}; pooled over the 22 records, whole "
              "records):")
        print(format_detection({d: v["pooled"] for d, v in detection.items()}))
    for source, s in scored.items():
        where = "reference beat positions (.atr)" if source == "reference" else \
            f"beats detected by {source}, matched to the reference within 150 ms"
        print(f"\nDS2, {where}:\n")
        print(format_table(s["report"]))
        print()
        print(format_confusion(s["report"]))
        print(f"\nbeats classified {s['classified']}, matched {s['matched']}, reference beats "
              f"missed {s['missed']}, extra beats {s['extra']} ({s['seconds']:.0f} s)")
    if len(scored) > 1:
        print("\nside by side:\n")
        print(side_by_side({k: v["report"] for k, v in scored.items()}))
    bars = {}
    if "reference" in scored:
        reference_f1 = scored["reference"]["report"]["macro_f1"]
        for d in detection:
            se, ppv = _se_ppv(detection[d]["pooled"])
            f1 = scored[d]["report"]["macro_f1"]
            bars[d] = {"se": se, "ppv": ppv, "macro_f1": f1, "reference_macro_f1": reference_f1,
                       "pass": se >= DETECTION_BAR and ppv >= DETECTION_BAR
                       and reference_f1 - f1 <= MACRO_F1_GAP}
            print(f"\nbars on {d} beats: Se {100 * se:.2f}% and +P {100 * ppv:.2f}% "
                  f"(bar {100 * DETECTION_BAR:.1f}%), macro-F1 {f1:.4f} against "
                  f"{reference_f1:.4f} on reference beats (gap {reference_f1 - f1:+.4f}, bar "
                  f"{MACRO_F1_GAP}): {'PASS' if bars[d]['pass'] else 'FAIL'}")
    summary = {"model": str(path), "lead": lead, "records": records, "detection": detection,
               "scores": scored, "bars": bars}
    atomic_write_json(out / "report.json", summary)
    print(f"\nreport: {out / 'report.json'}")
    return summary


if __name__ == "__main__":
    sys.exit(main())
