"""Average a stage-1 captioner run's best and last checkpoints into one model file.

Checkpoint averaging (as in Vaswani et al. 2017, who average the last checkpoints of a run):
the decoder weights of ``RUN/best.keras`` (the best epoch on the selection split) and
``RUN/checkpoint.keras`` (the last epoch) are averaged with ``--weight`` (the last
checkpoint's share) and written into the run's full image-to-caption model
(``RUN/model.keras``: the frozen encoder and the best epoch's decoder), saved as ``--out``.
The encoder is frozen in stage 1, so only the decoder differs between the checkpoints.

    python benchmarks/caption_average.py runs/photo_320 --out models/photo_captioner.keras

How the shipped photo captioner was made from its training run (docs/captioning.md); the
choice to average was made on Flickr8k's dev split, as every choice for that model.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a stage-1 train_caption run folder")
    parser.add_argument("--out", type=Path, required=True, help="the averaged .keras file")
    parser.add_argument("--weight", type=float, default=0.5,
                        help="the last checkpoint's share of the average (default 0.5)")
    args = parser.parse_args(argv)
    if not 0.0 <= args.weight <= 1.0:
        parser.error(f"--weight {args.weight}: must be between 0 and 1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from ecgcap.captioning.training import CAPTION_MODEL
    from ecgcap.runtime.modelfile import load_model, save_model

    full, info = load_model(args.run / "model.keras", (CAPTION_MODEL,))
    best, _ = load_model(args.run / "best.keras", (CAPTION_MODEL,))
    last, _ = load_model(args.run / "checkpoint.keras", (CAPTION_MODEL,))
    state = json.loads((args.run / "state.json").read_text())
    for layer in best.layers:
        if layer.weights and layer.name != "encoder":
            mean = [(1 - args.weight) * a + args.weight * b
                    for a, b in zip(layer.get_weights(), last.get_layer(layer.name).get_weights(),
                                    strict=True)]
            full.get_layer(layer.name).set_weights(mean)
    info = {**info,
            "averaged": {"epochs": [state["best_epoch"], state["epoch"]],
                         "last_weight": args.weight}}
    save_model(full, args.out, info)
    print(f"{args.out}: decoder weights {1 - args.weight:g} x epoch {state['best_epoch']} + "
          f"{args.weight:g} x epoch {state['epoch']} of {args.run}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
