"""Average the decoder weights of a stage-1 captioner run's checkpoints into one model file.

Checkpoint averaging (Vaswani et al. 2017 average a run's last checkpoints; Izmailov et al.
2018, "stochastic weight averaging", the epochs of a run continued at a low learning rate):
the decoder weights of the ``--checkpoints`` files (default: ``RUN/best.keras``, the best
epoch on the selection split, and ``RUN/checkpoint.keras``, the last epoch) are averaged with
equal weights and written into the run's full image-to-caption model (``RUN/model.keras``:
the frozen encoder and a decoder of the same shape), saved as ``--out``. The encoder is frozen
in stage 1, so only the decoder differs between the checkpoints.

    python benchmarks/caption_average.py runs/photo_320 --out averaged.keras
    python benchmarks/caption_average.py runs/photo_swa --out models/photo_captioner.keras \\
        --checkpoints runs/photo_320/best.keras runs/photo_swa/ep14.keras ...

How the shipped photo captioner was made from its training run (docs/captioning.md); the
choice to average, and of which epochs, was made on Flickr8k's dev split, as every choice for
that model.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a stage-1 train_caption run folder")
    parser.add_argument("--out", type=Path, required=True, help="the averaged .keras file")
    parser.add_argument("--checkpoints", type=Path, nargs="+", metavar="FILE",
                        help="stage-1 checkpoints of that run to average (default: its "
                             "best.keras and checkpoint.keras)")
    parser.add_argument("--length-penalty", type=float, default=None, metavar="X",
                        help="store X as the model's beam-search length penalty, the default "
                             "of caption and evaluate_caption (chosen on the selection split)")
    args = parser.parse_args(argv)
    files = args.checkpoints or [args.run / "best.keras", args.run / "checkpoint.keras"]
    if len(files) < 2:
        parser.error("--checkpoints: give at least two files")
    for f in [args.run / "model.keras", *files]:
        if not f.is_file():
            parser.error(f"{f}: no such file")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from ecgcap.captioning.training import CAPTION_MODEL
    from ecgcap.runtime.modelfile import load_model, save_model

    full, info = load_model(args.run / "model.keras", (CAPTION_MODEL,))
    models = [load_model(f, (CAPTION_MODEL,))[0] for f in files]
    for layer in models[0].layers:
        if layer.weights and layer.name != "encoder":
            weights = [m.get_layer(layer.name).get_weights() for m in models]
            full.get_layer(layer.name).set_weights(
                [sum(arrays) / len(arrays) for arrays in zip(*weights, strict=True)])
    info = {**info, "averaged": {"checkpoints": [str(f) for f in files]}}
    if args.length_penalty is not None:
        info["length_penalty"] = args.length_penalty
    save_model(full, args.out, info)
    print(f"{args.out}: the mean decoder weights of {len(files)} checkpoints "
          f"({', '.join(map(str, files))})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
