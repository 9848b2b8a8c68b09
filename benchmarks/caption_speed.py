"""Speed of a captioner on this machine: ``caption one.jpg`` end to end, one-image latency,
batched throughput, and the compiled decoder against a word-by-word ``model.predict`` loop.

    ECGCAP_DATA=../shared/data python benchmarks/caption_speed.py [--model photo|rsicd|PATH]

Uses real val images of the model's dataset (Flickr8k dev photos for ``photo``, RSICD val for
``rsicd``). Bars for the shipped photo model (2 cores): ``caption one.jpg`` under 3 s end to
end, >= 20 images/s on a batch of 200, compiled greedy decoding >= 20x faster than the
``model.predict`` loop with the same captions. The training-step line is for the from-scratch
(convpool) models; a pretrained model's stage-1 epoch time is in its ``report.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np


def _timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="photo")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--images", type=int, default=200, help="images for batched throughput")
    args = parser.parse_args(argv)

    import os
    import subprocess

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


    from ecgcap.captioning.datasets import load_captions
    from ecgcap.captioning.decoding import (
        NO_REPEAT_NGRAM,
        CaptionDecoder,
        greedy_with_predict,
        model_length_penalty,
    )
    from ecgcap.captioning.images import load_images
    from ecgcap.captioning.inference import load_caption_decoder, load_captioner
    from ecgcap.runtime.device import configure_device
    from ecgcap.runtime.errors import EcgcapError

    print(configure_device("cpu"))
    model, info = load_captioner(args.model)
    decoder = CaptionDecoder(model, length_penalty=model_length_penalty(info))
    dataset = info.get("dataset", "rsicd")
    val = load_captions(dataset, "val", data_dir=args.data_dir, report=lambda line: None)
    paths = val.paths()[:args.images]
    if len(paths) < args.images:  # Flickr8k dev has 135 photos present: top up from train
        train = load_captions(dataset, "train", data_dir=args.data_dir, report=lambda line: None)
        paths += train.paths()[:args.images - len(paths)]
    images = load_images(paths, decoder.image_size)
    print(f"{len(images)} {dataset} images (val first, then train) at {decoder.image_size} px")

    walls = []
    for _ in range(3):
        t = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "ecgcap.caption", str(paths[0]), "--model",
                               str(args.model)], capture_output=True, text=True)
        walls.append(time.perf_counter() - t)
        if done.returncode != 0:
            print(f"caption failed: {done.stderr.strip().splitlines()[-1:]}")
            return 1
    print(f"\ncaption one.jpg end to end (new process, beam 3): median "
          f"{statistics.median(walls):.2f} s of {', '.join(f'{w:.2f}' for w in walls)}; "
          f"{done.stdout.strip()}")

    if "soft_attention" not in {layer.name for layer in model.layers}:
        _training_step(model, info, val, images)

    runtimes = [("Keras, compiled step", decoder)]
    try:
        litert, _ = load_caption_decoder(args.model, runtime="litert")
        runtimes.append(("LiteRT export", litert))
    except EcgcapError as exc:
        print(f"no LiteRT row: {exc}")
    rule = NO_REPEAT_NGRAM  # as caption decodes
    print(f"\ndecoding as caption does (no repeated {rule}-gram)")
    print(f"{'decoding':34}{'1 image (ms)':>14}{f'{len(images)} images/s':>16}")
    captions = {}
    for name, runner in runtimes:
        for beam in (1, 3):
            runner.caption(images[:1], beam=beam)
            runner.caption(images[:64], beam=beam)  # compile (trace) for both shapes
            one = _timed(lambda r=runner, b=beam: r.caption(images[:1], beam=b,
                                                            no_repeat_ngram=rule), 10)
            many = _timed(lambda r=runner, b=beam: r.caption(images, beam=b,
                                                             no_repeat_ngram=rule), 2)
            captions[name, beam] = runner.caption(images, beam=beam, no_repeat_ngram=rule)
            label = f"{name}, {'greedy' if beam == 1 else f'beam {beam}'}"
            print(f"{label:34}{one * 1000:14.1f}{len(images) / many:16.1f}")
    if len(runtimes) == 2:
        for beam in (1, 3):
            same = sum(a == b for a, b in zip(captions[runtimes[0][0], beam],
                                              captions[runtimes[1][0], beam], strict=True))
            print(f"LiteRT and Keras, beam {beam}: {same} of {len(images)} captions identical")

    vocab = decoder.parts.vocabulary
    n = 32
    subset = images[:n]
    greedy_with_predict(model, subset[:2], vocab)  # warm up
    slow = _timed(lambda: greedy_with_predict(model, subset, vocab), 1)
    fast = _timed(lambda: decoder.caption(subset), 3)
    same = greedy_with_predict(model, subset, vocab) == decoder.caption(subset)
    print(f"\ngreedy (no repetition rule) on {n} images: word-by-word model.predict "
          f"{slow:.2f} s, compiled step {fast:.2f} s: {slow / fast:.1f}x faster; "
          f"same captions: {same}")
    return 0


def _training_step(model, info, val, images) -> None:
    """One training step of a from-scratch captioner on real images and captions."""
    import keras

    from ecgcap.captioning.text import Vocabulary
    from ecgcap.captioning.training import encode_captions

    # training throughput: the shipped model's own train step on real images and captions
    vocab = Vocabulary(model.get_layer("word_embedding").vocabulary)
    batch = 32
    caps = encode_captions(val, vocab, 5, info["max_length"])[:batch]
    x = {"image": images[:batch].astype(np.float32), "caption": caps[:, :, :-1]}
    y = {"words": caps[:, :, 1:]}
    if "scene" in model.output:
        y["scene"] = np.zeros(batch, dtype=np.int32)
    trainer = keras.models.clone_model(model)
    trainer.compile("adam", loss={k: ("sparse_categorical_crossentropy" if k == "scene" else
                                      keras.losses.SparseCategoricalCrossentropy(
                                          from_logits=True, ignore_class=0)) for k in y})
    trainer.train_on_batch(x, y)
    step = _timed(lambda: trainer.train_on_batch(x, y), 5)
    print(f"\ntraining: {batch} images x 5 captions per step, {step:.2f} s/step, "
          f"{batch * 5 / step:.0f} caption pairs/s, {batch / step:.0f} images/s")


if __name__ == "__main__":
    sys.exit(main())
