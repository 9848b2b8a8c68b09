"""DS2 figures of finished beat-sequence runs: per seed, mean and spread, their ensemble, speed.

Each run (``train_ecg --model lstm-seq ... --val-records none``) already scored DS2 once in
its ``report.json``; this reads those tables, averages the runs into one model
(``ecgcap.ecg.sequence.ensemble_sequence_runs``, written to ``--out``), scores that on DS2 with
the same stitched predictions, and times ``classify_record`` on a whole 30-minute two-lead
record (model loaded, beats from the ``.atr`` file and from XQRS).

    ECGCAP_DATA=../shared/data python benchmarks/ecg_seq_quality.py RUN [RUN ...] \
        --out runs/seq_ensemble [--speed-record 100]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

BARS = ("bars: macro-F1 >= 0.66; S Se >= 75 and +P >= 55; V Se >= 90 and +P >= 88; "
        "worst seed >= 0.62")


def _line(name: str, r: dict) -> str:
    pc = r["per_class"]
    return (f"{name:<28} {r['macro_f1']:.4f}  S {pc['S']['sensitivity']:.1%}/"
            f"{pc['S']['ppv'] or 0:.1%}  V {pc['V']['sensitivity']:.1%}/{pc['V']['ppv'] or 0:.1%}"
            f"  F1 N {pc['N']['f1']:.3f} S {pc['S']['f1']:.3f} V {pc['V']['f1']:.3f} "
            f"F {pc['F']['f1']:.3f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--out", default=None, help="folder of the ensemble (default: none)")
    parser.add_argument("--speed-record", default="100")
    args = parser.parse_args()

    from ecgcap.ecg.api import locate_or_download
    from ecgcap.ecg.databases import get_database
    from ecgcap.ecg.dataset import BeatConfig, load_beat_leads
    from ecgcap.ecg.evaluation import aami_report, format_confusion, format_table
    from ecgcap.ecg.inference import classify_record, load_classifier
    from ecgcap.ecg.sequence import ensemble_sequence_runs, model_inputs, predict_beats
    from ecgcap.runtime.files import atomic_write_json

    db = get_database("mitdb")
    db_dir = locate_or_download("mitdb")
    reports = [json.loads((Path(r) / "report.json").read_text()) for r in args.runs]
    print("DS2, reference beats, one row per run (macro-F1; S Se/+P; V Se/+P; F1 per class)")
    for run, rep in zip(args.runs, reports, strict=True):
        print(_line(f"{Path(run).name} (ep {rep['epochs_run']})", rep["test"]))
    f1 = np.array([r["test"]["macro_f1"] for r in reports])
    stats = {k: np.array([[r["test"]["per_class"][c][m] or 0 for r in reports]
                          for c in "SV" for m in ("sensitivity", "ppv")][i])
             for i, k in enumerate(("S Se", "S +P", "V Se", "V +P"))}
    sd = f1.std(ddof=1) if len(f1) > 1 else 0.0
    print(f"mean +- sd over {len(f1)} runs: macro-F1 {f1.mean():.4f} +- {sd:.4f}"
          f" (worst {f1.min():.4f}); " + ", ".join(
              f"{k} {100 * v.mean():.1f} +- {100 * (v.std(ddof=1) if len(v) > 1 else 0):.1f}"
              for k, v in stats.items()))
    out: dict = {"runs": args.runs, "macro_f1": f1.tolist()}
    if args.out:
        path = ensemble_sequence_runs([Path(r) for r in args.runs], Path(args.out))
        model, info = load_classifier(path)
        records = reports[0]["records"]["test"]
        data = load_beat_leads(db_dir, db, records, BeatConfig.from_info(info["beats"]),
                               quiet=True)
        y = np.array([db.classes.index(c) for c in data["label"]])
        seq = info["sequence"]
        pred = predict_beats(model, model_inputs(data, seq["leads"]), data["record"],
                             seq["context"]).argmax(-1)
        report = aami_report(y, pred, db.classes)
        print(f"\nensemble of {len(args.runs)} ({path}, {path.stat().st_size / 1e6:.2f} MB) on "
              "DS2:")
        print(format_table(report))
        print()
        print(format_confusion(report))
        print(_line("ensemble", report))
        out["ensemble"] = report
        out["size_mb"] = path.stat().st_size / 1e6
        atomic_write_json(Path(args.out) / "report.json", {**out, "test": report,
                                                           "second_leads": data["second_leads"]})
        # speed: a whole 30-minute two-lead record, model loaded
        rec = db_dir / args.speed_record
        for source in ("atr", "xqrs"):
            classify_record(model, info, rec, annotations=source)  # warm up (graph tracing)
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                result = classify_record(model, info, rec, annotations=source)
                times.append(time.perf_counter() - t0)
            print(f"speed: record {args.speed_record} ({len(result['beats'])} beats, leads "
                  f"{'+'.join(result['leads'])}, beats from {source}): median "
                  f"{np.median(times):.2f} s (runs {' '.join(f'{t:.2f}' for t in times)})")
    print(BARS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
