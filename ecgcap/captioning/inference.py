"""Captioning image files with a trained captioner (the shipped one by default).

A ``.keras`` captioner with a current LiteRT export beside it (``NAME.litert/``, made by
``python -m ecgcap.export``; the shipped ones have theirs) is run by the LiteRT interpreter
unless ``runtime="keras"``: same captions, without importing TensorFlow.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ecgcap.captioning.decoding import NO_REPEAT_NGRAM, CaptionDecoder, model_length_penalty
from ecgcap.captioning.images import find_images, load_image
from ecgcap.runtime.errors import EcgcapError
from ecgcap.runtime.modelfile import load_model, read_info

CAPTION_MODEL = "caption"  # the "kind" in a captioner file's info (as training writes it)
RUNTIMES = ("auto", "litert", "keras")

MODELS_DIR = Path(__file__).resolve().parents[2] / "models"
SHIPPED_MODELS = {"photo": MODELS_DIR / "photo_captioner.keras",    # ordinary photographs
                  "rsicd": MODELS_DIR / "rsicd_captioner.keras"}    # aerial images
SHIPPED = SHIPPED_MODELS["photo"]


def captioner_path(model: str | os.PathLike | None = None) -> Path:
    """The file of ``model``: a shipped model's name (``photo``, the default, or ``rsicd``) or a
    path."""
    if model is None:
        return SHIPPED
    return SHIPPED_MODELS.get(str(model), Path(model))


def load_captioner(path: str | os.PathLike | None = None) -> tuple[Any, dict[str, Any]]:
    """``(model, info)`` of a captioner: a shipped one by name (``photo``, the default, or
    ``rsicd``) or a ``.keras`` file, loaded in safe mode.

    A file of another kind (an ECG model), a corrupt file, or a model without its vocabulary
    raises :class:`EcgcapError` naming the file.
    """
    from ecgcap.captioning import layers as _layers  # noqa: F401 - registers custom layers

    path = captioner_path(path)
    if read_info(path).get("stage") in ("features", "fine_tune"):
        raise EcgcapError("a training checkpoint (cached-feature or stage-2 model); caption "
                          "with the run folder's model.keras", input=str(path))
    model, info = load_model(path, (CAPTION_MODEL,))
    try:
        vocabulary = model.get_layer("word_embedding").vocabulary
    except (ValueError, AttributeError):
        raise EcgcapError("captioner has no vocabulary (no word_embedding layer with one)",
                          input=str(path)) from None
    if not vocabulary or len(vocabulary) < 5:
        raise EcgcapError("captioner's vocabulary is empty", input=str(path))
    return model, info


def load_caption_decoder(model: str | os.PathLike | None = None, *, runtime: str = "auto",
                         batch_size: int = 256) -> tuple[CaptionDecoder, dict[str, Any]]:
    """``(decoder, info)`` for a captioner: a shipped one by name (``photo``, the default, or
    ``rsicd``), a ``.keras`` file, or an exported LiteRT folder.

    ``runtime``: ``auto`` runs a current LiteRT export (:mod:`ecgcap.captioning.litert`) when
    there is one (the folder itself, or ``NAME.litert/`` beside ``NAME.keras`` made from this
    very file), else Keras (also when the export cannot be loaded: ``info["litert_skipped"]``
    says why); ``litert`` insists on the export; ``keras`` loads the ``.keras``
    file.
    """
    from ecgcap.captioning import litert

    if runtime not in RUNTIMES:
        raise EcgcapError(f"unknown runtime; choose one of {', '.join(RUNTIMES)}",
                          input=f"--runtime {runtime}")
    path = captioner_path(model)
    if path.is_dir():
        if runtime == "keras":
            raise EcgcapError("a LiteRT folder; --runtime keras needs a .keras file",
                              input=str(path))
        parts = litert.load_captioner_litert(path)
        return (CaptionDecoder(parts, batch_size=batch_size,
                               length_penalty=model_length_penalty(parts.info)),
                {**parts.info, "runtime": "litert"})
    if not path.is_file():
        raise EcgcapError("no such model file", input=str(path))
    folder = litert.litert_folder(path)
    skipped = None
    if runtime != "keras" and folder.is_dir() and litert.is_current(folder, path):
        try:
            parts = litert.load_captioner_litert(folder)
            return (CaptionDecoder(parts, batch_size=batch_size,
                                   length_penalty=model_length_penalty(parts.info)),
                    {**parts.info, "runtime": "litert"})
        except (EcgcapError, ImportError) as exc:
            if runtime == "litert":
                raise
            skipped = f"{exc}; the .keras file is used instead"  # auto: Keras still works
    if runtime == "litert":
        raise EcgcapError(f"no current LiteRT export beside it ({folder.name}/); make one with "
                          f"python -m ecgcap.export {path}", input=str(path))
    keras_model, info = load_captioner(path)
    info = {**info, "runtime": "keras"}
    if skipped:
        info["litert_skipped"] = skipped
    return (CaptionDecoder(keras_model, batch_size=batch_size,
                           length_penalty=model_length_penalty(info)), info)


def caption_files(paths: Sequence[str | os.PathLike], model: Any, *, beam: int = 3,
                  batch_size: int = 64, length_penalty: float | None = None,
                  no_repeat_ngram: int = NO_REPEAT_NGRAM,
                  on_error: Callable[[EcgcapError], None] | None = None,
                  attention: str | os.PathLike | None = None) -> list[tuple[Path, str]]:
    """Caption image files and folders of images, ``batch_size`` images at a time, with
    ``model`` (a Keras captioner or a :class:`CaptionDecoder`).

    Unreadable images are passed to ``on_error`` (default: raise) and skipped, so the good
    images of the same call still get their captions. ``attention``: a PNG path where, for a
    single image, the figure of where the model looked for each word is written.
    ``no_repeat_ngram``: no caption repeats one of its own n-grams (0: no such rule).
    ``length_penalty``: beam search's length normalisation (``None``: the decoder's default,
    the model file's own when loaded by :func:`load_caption_decoder`).
    """
    if beam < 1:
        raise EcgcapError("must be 1 or more", input=f"--beam {beam}")
    if no_repeat_ngram == 1 or no_repeat_ngram < 0:
        raise EcgcapError("must be 0 (off) or 2 or more", input=f"--no-repeat {no_repeat_ngram}")
    if length_penalty is not None and length_penalty < 0:
        raise EcgcapError("must be 0 or more", input=f"--length-penalty {length_penalty}")
    if isinstance(model, CaptionDecoder):
        decoder = copy.copy(model)  # the caller's decoder keeps its own batch size
        decoder.batch_size = max(batch_size * beam, 1)
    else:
        decoder = CaptionDecoder(model, batch_size=max(batch_size * beam, 1))
    size = decoder.image_size
    files = find_images(paths)
    if attention is not None and len(files) != 1:
        raise EcgcapError(f"draws one image; {len(files)} images given",
                          input=f"--attention {attention}")
    out: list[tuple[Path, str]] = []
    for start in range(0, len(files), batch_size):
        good, arrays = [], []
        for f in files[start:start + batch_size]:
            try:
                arrays.append(load_image(f, size))
                good.append(f)
            except EcgcapError as exc:
                if on_error is None:
                    raise
                on_error(exc)
        if good:
            ids = decoder.decode(np.stack(arrays), beam=beam, length_penalty=length_penalty,
                                 no_repeat_ngram=no_repeat_ngram)
            captions = [decoder.vocabulary.decode(c) for c in ids]
            out.extend(zip(good, captions, strict=True))
            if attention is not None:
                _draw_attention(decoder, good[0], arrays[0], ids[0], attention)
    return out


def _draw_attention(decoder: CaptionDecoder, path: Path, image: np.ndarray, ids: list[int],
                    out: str | os.PathLike) -> None:
    from ecgcap.captioning.plots import attention_figure

    end = decoder.vocabulary.index["<end>"]
    words = [int(i) for i in ids[:ids.index(end)]] if end in ids else [int(i) for i in ids]
    alphas = decoder.attention(image[None], [words + [end]])[0]
    labels = [decoder.vocabulary.tokens[i] for i in words] + ["<end>"]
    attention_figure(image, labels, alphas, out, title=f"{path.name}: "
                     f"{decoder.vocabulary.decode(words)}")
