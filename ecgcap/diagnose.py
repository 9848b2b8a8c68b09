"""``python -m ecgcap.diagnose``: how much of the error reaches each time step, per model.

For a batch of real sequences, the norm of the loss gradient at each step of the first
recurrent layer's input (the error that back-propagation through time carries back to step t)
and at each input sample; written as JSON and a log-scale PNG, one curve per model.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ecgcap.runtime.cli import int_list, make_parser, positive_int, run, say, setup_runtime


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser("diagnose", "Gradient flow through time in ECG models, on real data.")
    parser.add_argument("--model", nargs="+", default=["lstm", "simplernn"], metavar="MODEL",
                        help="lstm, simplernn (the untrained builders) or .keras paths; "
                             "one curve each")
    parser.add_argument("--db", default="cinc2017", help="cinc2017 (recordings) or mitdb (beats)")
    parser.add_argument("--steps", type=positive_int, default=None,
                        help="input samples per sequence (cinc2017; default 30 s = 4500)")
    parser.add_argument("--batch", type=positive_int, default=16, help="real sequences used")
    parser.add_argument("--unidirectional", action="store_true",
                        help="untrained builders: one direction (default: bidirectional)")
    parser.add_argument("--pooling", choices=("mean-max", "last"), default="mean-max",
                        help="untrained builders: pooling over time (last: the final state only)")
    parser.add_argument("--conv-filters", type=int_list, default=None, metavar="F,F,...",
                        help="untrained cinc2017 builders: the Conv1D + pooling blocks in front "
                             "(default: train_ecg's, 32,32,64,64,128,128; 32,32,64,64 gives "
                             "282 steps for 30 s)")
    parser.add_argument("--layers", type=positive_int, default=None,
                        help="untrained cinc2017 builders: recurrent layers (default: "
                             "train_ecg's, 2; the gradients are those of the first)")
    parser.add_argument("--out", default="runs/diagnose", metavar="DIR",
                        help="folder for gradient_flow.json and gradient_flow.png")
    return parser


def _work(args: argparse.Namespace) -> int:
    setup_runtime(args)
    from ecgcap.ecg.api import locate_or_download
    from ecgcap.ecg.databases import get_database
    from ecgcap.ecg.diagnostics import (
        beats_for,
        gradient_flow,
        model_for,
        plot_gradient_flow,
        real_batch,
    )
    from ecgcap.runtime.files import atomic_write_json

    db = get_database(args.db)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        from ecgcap.runtime.errors import EcgcapError

        raise EcgcapError("exists and is not a folder", input=f"--out {out}")
    db_dir = locate_or_download(db.name, args.data_dir, quiet=args.quiet)
    results, batches = {}, {}
    for spec in args.model:
        model, label = model_for(spec, db, bidirectional=not args.unidirectional,
                                 pooling=args.pooling, conv_filters=args.conv_filters,
                                 recurrent_layers=args.layers)
        beats = beats_for(spec, db)  # one batch per way of cutting beats, shared by models
        if beats not in batches:
            batches[beats] = real_batch(db, db_dir, args.batch, args.steps, seed=args.seed,
                                        beats=beats)
        inputs, y, mask = batches[beats]
        results[label] = gradient_flow(model, inputs, y, mask)
    width = max(len(label) for label in results) + 2
    print(f"{'model':{width}}{'steps':>7}{'|g| step 1':>13}{'|g| middle':>13}{'|g| last':>13}")
    for label, r in results.items():
        g = [v for v in r["recurrent"] if v is not None]
        print(f"{label:{width}}{len(g):>7}{g[0]:>13.3e}{g[len(g) // 2]:>13.3e}{g[-1]:>13.3e}")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "gradient_flow.json", {
        "db": db.name, "batch": int(len(y)), "input_samples": int(mask.shape[1]),
        "labels": [db.classes[i] for i in y], "models": results})
    plot_gradient_flow(results, out / "gradient_flow.png",
                       f"{db.name}: {len(y)} real sequences, {mask.shape[1]} samples")
    say(args, f"gradient_flow.json and gradient_flow.png written to {out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser(), _work, argv)


if __name__ == "__main__":
    sys.exit(main())
