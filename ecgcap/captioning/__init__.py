"""The captioning wing: caption data, a CNN encoder + LSTM decoder, decoding, training, scores.

It imports only :mod:`ecgcap.runtime`, never :mod:`ecgcap.ecg`. Submodules: ``text``
(vocabulary), ``datasets`` (caption formats), ``download`` (Flickr8k mirror), ``images``
(Pillow), ``pairs`` (caption shards for streamed training), ``layers`` and ``models``
(builders), ``decoding`` (greedy, beam), ``training``, ``evaluation`` (pycocoevalcap,
baselines), ``inference`` (captioning files), ``litert`` (export to LiteRT, and captioning
with the LiteRT interpreter instead of TensorFlow).
"""

from __future__ import annotations

import argparse
import json
from typing import TextIO

from ecgcap.runtime.errors import EXIT_USAGE


def caption_command(args: argparse.Namespace, out: TextIO) -> int:
    """``python -m ecgcap.caption``: print one caption per image; bad images are reported one
    line each on stderr and make the exit code 2, after the good ones are printed."""
    import sys

    from ecgcap.captioning.images import find_images
    from ecgcap.captioning.inference import caption_files, load_caption_decoder
    from ecgcap.runtime.errors import EcgcapError

    if args.attention is not None:
        if len(args.images) != 1 or not str(args.attention).lower().endswith(".png"):
            raise EcgcapError("draws one image as a .png: give one image and an OUT.png",
                              input=f"--attention {args.attention}")
    files = find_images(args.images)
    if not any(f.is_file() for f in files):  # nothing to caption: say so before loading a model
        for f in files:
            print(f"python -m ecgcap.caption: error: {f}: "
                  f"{'is a folder, not an image' if f.is_dir() else 'no such image file'}",
                  file=sys.stderr)
        if args.json:
            out.write("[]\n")
        return EXIT_USAGE
    decoder, info = load_caption_decoder(args.model, runtime=args.runtime)
    if info.get("litert_skipped"):
        print(f"python -m ecgcap.caption: warning: {info['litert_skipped']}", file=sys.stderr)
    if args.attention is not None and not decoder.parts.returns_attention:
        raise EcgcapError("this model has no soft attention over a feature grid to draw (the "
                          "shipped photo model has)", input=f"--attention {args.attention}")
    failed: list[str] = []

    def report(exc: Exception) -> None:
        failed.append(str(exc))
        print(f"python -m ecgcap.caption: error: {exc}", file=sys.stderr)

    results = caption_files(args.images, decoder, beam=args.beam, on_error=report,
                            attention=args.attention, no_repeat_ngram=args.no_repeat,
                            length_penalty=args.length_penalty)
    if args.json:
        json.dump([{"image": str(p), "caption": c} for p, c in results], out, indent=2)
        out.write("\n")
    else:
        for path, caption in results:
            out.write(f"{path}\t{caption}\n")
    return EXIT_USAGE if failed else 0
