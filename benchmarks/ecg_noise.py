"""Macro-F1 of a beat model on DS2 against added noise (electrode motion, muscle), as nst adds it.

    ECGCAP_DATA=../shared/data python benchmarks/ecg_noise.py \
        [--model-file models/mitdb_lstm_beats.keras] [--snr 24 12 6 0] [--noise em ma] \
        [--nstdb DIR] [--beats reference|xqrs] [--protocol continuous|nst] [--seed 0]

Each DS2 record gets noise on every lead, scaled to each SNR as PhysioNet's ``nst`` scales it
(:mod:`ecgcap.ecg.noise`: the SNR is set by the clean lead's normal-QRS peak-to-peak amplitude
and the noise's RMS), is written as a WFDB record (a scratch folder under ``--runs-dir``) and
classified by the model file at the reference beat positions (``--beats reference``) or at the
beats XQRS finds in the noisy signal (``--beats xqrs``); the labels are scored against the
reference with ``score_ecg``'s 150 ms matching. ``--protocol nst`` adds the noise only where
nst does (alternate two-minute segments after the first five minutes; the figures then mix
clean and noisy beats); the default adds it to the whole record.

With ``--nstdb DIR`` (a folder with PhysioNet's NSTDB ``em``, ``ma`` and ``bw`` records) the
noise is those recordings, as nst uses them (the same noise for every record). Without it the
noise is *generated noise of matched spectrum* (:func:`ecgcap.ecg.noise.generate_noise`,
seeded: one draw of each kind, the same for every record), and every table says so.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ecg_quality import _data_dir, classify_and_score  # noqa: E402


def noisy_records(records: list[str], data_dir: Path, folder: Path, kind: str, snr: float, *,
                  nstdb: str | None, seed: int, protocol: str) -> str:
    """Write each record with noise ``kind`` at ``snr`` dB into ``folder`` (with a link to its
    reference annotations); return what the noise is."""
    import wfdb

    from ecgcap.ecg import io, noise

    folder.mkdir(parents=True, exist_ok=True)
    what = ""
    cache: dict[tuple[int, float], np.ndarray] = {}
    for name in records:
        rec = io.read_record(data_dir / name)
        x = io.signal_of(rec).astype(np.float64)
        ann = io.read_annotation(data_dir / name)
        symbols = np.asarray(ann.symbol)
        beats = np.isin(symbols, list("NLRejAaJSVEF/fQ"))
        peaks, symbols = np.asarray(ann.sample)[beats], symbols[beats]
        key = (len(x), float(rec.fs))
        if key not in cache:
            cache[key], what = noise.noise_source(kind, len(x), rec.fs, nstdb=nstdb,
                                                  channels=x.shape[1], seed=seed)
        source = cache[key]
        mask = noise.nst_protocol(len(x), rec.fs) if protocol == "nst" else None
        out = np.empty_like(x)
        for lead in range(x.shape[1]):
            amplitude = noise.qrs_amplitude(x[:, lead], rec.fs, peaks, symbols)
            out[:, lead] = noise.mix(x[:, lead], source[:, lead % source.shape[1]], snr,
                                     amplitude, fs=rec.fs, mask=mask)
        n = x.shape[1]
        wfdb.wrsamp(name, fs=rec.fs, units=list(rec.units), sig_name=list(rec.sig_name),
                    p_signal=out, fmt=["16"] * n, adc_gain=[400.0] * n, baseline=[0] * n,
                    write_dir=str(folder))
        link = folder / f"{name}.atr"
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to((data_dir / f"{name}.atr").resolve())
    return what


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-file", default="models/mitdb_lstm_beats.keras",
                        metavar="PATH", help="the beat model file to score")
    parser.add_argument("--snr", type=float, nargs="+", default=[24.0, 12.0, 6.0, 0.0],
                        help="signal-to-noise ratios, dB (nst's definition)")
    parser.add_argument("--noise", nargs="+", default=["em", "ma"], choices=("em", "ma", "bw"))
    parser.add_argument("--nstdb", default=None, metavar="DIR",
                        help="folder with the NSTDB noise records em, ma, bw (else generated "
                             "noise of matched spectrum)")
    parser.add_argument("--beats", choices=("reference", "xqrs"), default="reference",
                        help="beat positions: the reference annotations, or XQRS on the noisy "
                             "signal")
    parser.add_argument("--protocol", choices=("continuous", "nst"), default="continuous",
                        help="noise over the whole record, or in nst's alternate 2-minute "
                             "segments after 5 minutes")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated noise")
    parser.add_argument("--records", nargs="+", default=None,
                        help="records to score (default: DS2)")
    parser.add_argument("--runs-dir", default="runs/ecg_noise")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()

    from ecgcap.ecg.databases import get_database
    from ecgcap.ecg.inference import load_classifier
    from ecgcap.runtime.device import configure_device
    from ecgcap.runtime.files import atomic_write_json

    if args.nstdb is not None and not Path(args.nstdb).is_dir():
        raise SystemExit(f"ecg_noise.py: error: --nstdb {args.nstdb}: no such folder")
    data_dir = _data_dir(args.data_dir)
    records = args.records or list(get_database("mitdb").split["test"])
    configure_device("cpu")
    model, info = load_classifier(args.model_file)
    runs = Path(args.runs_dir)
    scratch = runs / "scratch"
    annotations = "atr" if args.beats == "reference" else "xqrs"
    label = "NSTDB noise recordings" if args.nstdb else "generated noise of matched spectrum"
    where = "at the reference positions" if args.beats == "reference" else \
        "found by XQRS in the noisy signal"
    print(f"{args.model_file}: macro-F1 on {len(records)} records "
          f"({'given' if args.records else 'DS2'}), beats {where}, noise {args.protocol} "
          f"({label}; seed {args.seed})", flush=True)

    results: dict[str, Any] = {}
    start = time.perf_counter()
    results["clean"] = classify_and_score(model, info, records, data_dir, data_dir,
                                          annotations, runs / "scored" / "clean")
    print(f"  clean: macro-F1 {results['clean']['report']['macro_f1']:.4f}", flush=True)
    described = {}
    for kind in args.noise:
        for snr in args.snr:
            key = f"{kind} {snr:g}"
            described[kind] = noisy_records(records, data_dir, scratch, kind, snr,
                                            nstdb=args.nstdb, seed=args.seed,
                                            protocol=args.protocol)
            results[key] = classify_and_score(model, info, records, data_dir, scratch,
                                              annotations, runs / "scored" / key.replace(" ", "_"))
            print(f"  {kind} at {snr:g} dB: macro-F1 {results[key]['report']['macro_f1']:.4f}",
                  flush=True)
    shutil.rmtree(scratch, ignore_errors=True)

    scope = "the given records" if args.records else "DS2"
    print(f"\nmacro-F1 (N, S, V, F), S F1 and V F1 on {scope} "
          f"({args.beats} beats) against {args.protocol} noise at SNR (dB, nst's definition), "
          f"{label}:")
    for kind in args.noise:
        print(f"  {kind}: {described[kind]}")
    rows = [("macro-F1", "macro_f1", None), ("S F1", "f1", "S"), ("V F1", "f1", "V")]
    header = f"{'':14}{'clean':>8}" + "".join(f"{snr:>8g}" for snr in args.snr)
    print(header)
    print("-" * len(header))
    for kind in args.noise:
        for title, metric, cls in rows:
            cells = [_figure(results[k]["report"], metric, cls)
                     for k in ["clean", *(f"{kind} {snr:g}" for snr in args.snr)]]
            print(f"{kind + ' ' + title:14}" + "".join(f"{c:>8.3f}" for c in cells))
    if args.beats == "xqrs":
        print("classified beats matched to the reference within 150 ms (reference beats "
              "missed / extra beats; Se % / +P %):")
        for k, r in results.items():
            se = 100 * r["matched"] / max(r["matched"] + r["missed"], 1)
            ppv = 100 * r["matched"] / max(r["matched"] + r["extra"], 1)
            print(f"  {k}: {r['matched']} ({r['missed']} / {r['extra']}; {se:.2f} / {ppv:.2f})")
    seconds = time.perf_counter() - start
    print(f"({seconds:.0f} s)")
    atomic_write_json(runs / "report.json", {
        "model": args.model_file, "noise": label, "described": described,
        "beats": args.beats, "protocol": args.protocol, "seed": args.seed, "records": records,
        "snr": args.snr, "results": results, "seconds": round(seconds, 1)})
    print(f"report: {runs / 'report.json'}")
    return 0


def _figure(report: dict, metric: str, cls: str | None) -> float:
    value = report[metric] if cls is None else report["per_class"][cls][metric]
    return float(value or 0.0)


if __name__ == "__main__":
    sys.exit(main())
