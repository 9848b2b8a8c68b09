"""Caption datasets: images and their reference captions, from the formats users have.

One result type, :class:`CaptionSet`, from four formats (and :func:`merge_caption_sets` to train
on several at once):

- Karpathy-style ``dataset_*.json``: ``{"images": [{"filename", "split", "sentences":
  [{"raw", "tokens"}]}]}`` (RSICD, UCM, Sydney, Flickr8k/30k and COCO are shipped like this);
- MS-COCO ``captions_*.json``: ``{"images": [{"id", "file_name"}], "annotations":
  [{"image_id", "caption"}]}``;
- Flickr token files (``IMAGE.jpg#N<TAB>caption``): Flickr8k's ``Flickr8k.token.txt`` with its
  split lists, and Flickr30k's ``captions.token`` (all of it training data);
- JSON lines, one ``{"filename": ..., "captions": [...]}`` a line.

Images named by the captions but absent from the image folder, and unusable lines, are skipped
and reported in one line each through ``report`` (default: :func:`warnings.warn`), never
silently. Malformed files raise :class:`~ecgcap.runtime.errors.EcgcapError` naming the file.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ecgcap.runtime.errors import EcgcapError
from ecgcap.runtime.paths import DATA_ENV, find_dataset, resolve_data_dir

Report = Callable[[str], None]
SPLITS = ("train", "val", "test")


def _warn(message: str) -> None:
    warnings.warn(message, stacklevel=3)


@dataclass
class CaptionSet:
    """Images (file names inside ``image_dir``) and their reference captions, in order."""

    name: str
    image_dir: Path
    images: list[str]
    captions: list[list[str]]
    missing: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)

    def paths(self) -> list[Path]:
        """The image files, in order."""
        return [self.image_dir / f for f in self.images]

    def all_captions(self) -> list[str]:
        """Every reference caption of every image, in order."""
        return [c for caps in self.captions for c in caps]


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise EcgcapError("no such caption file", input=str(path)) from None
    except IsADirectoryError:
        raise EcgcapError("is a folder, not a caption file", input=str(path)) from None
    except UnicodeDecodeError as exc:
        raise EcgcapError(f"not UTF-8 text (byte {exc.start})", input=str(path)) from None
    except json.JSONDecodeError as exc:
        raise EcgcapError(f"not valid JSON (line {exc.lineno}: {exc.msg})",
                          input=str(path)) from None


def _need(obj: Any, key: str, path: Path, where: str) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise EcgcapError(f"{where} has no {key!r} key", input=str(path))
    return obj[key]


def _finish(name: str, image_dir: Path, source: Path, pairs: dict[str, list[str]],
            report: Report | None) -> CaptionSet:
    """Drop images without captions or files, report what was dropped, keep the order."""
    report = report or _warn
    if not image_dir.is_dir():
        raise EcgcapError("image folder not found", input=str(image_dir))
    present = set(os.listdir(image_dir))
    empty = [f for f, caps in pairs.items() if not caps]
    missing = [f for f, caps in pairs.items() if caps and f not in present]
    if empty:
        report(f"{source}: {len(empty)} images have no usable caption; skipped "
               f"(first: {empty[0]})")
    if missing:
        report(f"{source}: {len(missing)} of {len(pairs)} images are not in {image_dir}; "
               f"skipped (first: {missing[0]})")
    keep = [f for f, caps in pairs.items() if caps and f in present]
    return CaptionSet(name, image_dir, keep, [pairs[f] for f in keep], missing)


def _clean(captions: list[Any]) -> list[str]:
    return [c.strip() for c in captions if isinstance(c, str) and c.strip()]


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise EcgcapError(f"unknown split; choose one of {', '.join(SPLITS)}", input=split)


def read_karpathy(path: str | os.PathLike, image_dir: str | os.PathLike, split: str = "train",
                  *, report: Report | None = None) -> CaptionSet:
    """Images of ``split`` in a Karpathy-style ``dataset_*.json`` (train includes restval)."""
    path, image_dir = Path(path), Path(image_dir)
    _check_split(split)
    wanted = {"train": {"train", "restval"}, "val": {"val"}, "test": {"test"}}[split]
    pairs: dict[str, list[str]] = {}
    for i, entry in enumerate(_need(_read_json(path), "images", path, "the file")):
        where = f"images[{i}]"
        if _need(entry, "split", path, where) not in wanted:
            continue
        name = _need(entry, "filename", path, where)
        sentences = _need(entry, "sentences", path, where)
        caps = []
        for s in sentences:
            if isinstance(s, dict) and isinstance(s.get("raw"), str):
                caps.append(s["raw"])
            elif isinstance(s, dict) and isinstance(s.get("tokens"), list):
                caps.append(" ".join(map(str, s["tokens"])))
        pairs.setdefault(name, []).extend(_clean(caps))
    return _finish(path.stem, image_dir, path, pairs, report)


def read_coco(path: str | os.PathLike, image_dir: str | os.PathLike, *,
              report: Report | None = None) -> CaptionSet:
    """All images of an MS-COCO ``captions_*.json``, in the file's image order."""
    path, image_dir = Path(path), Path(image_dir)
    data = _read_json(path)
    names, pairs = {}, {}
    for i, img in enumerate(_need(data, "images", path, "the file")):
        names[_need(img, "id", path, f"images[{i}]")] = _need(img, "file_name", path,
                                                               f"images[{i}]")
        pairs[img["file_name"]] = []
    unknown = 0
    for i, ann in enumerate(_need(data, "annotations", path, "the file")):
        image_id = _need(ann, "image_id", path, f"annotations[{i}]")
        caption = _need(ann, "caption", path, f"annotations[{i}]")
        if image_id not in names:
            unknown += 1
            continue
        pairs[names[image_id]].extend(_clean([caption]))
    if unknown:
        (report or _warn)(f"{path}: {unknown} annotations name an image id not in 'images'; "
                          "skipped")
    return _finish(path.stem, image_dir, path, pairs, report)


def read_jsonl(path: str | os.PathLike, image_dir: str | os.PathLike, *,
               report: Report | None = None) -> CaptionSet:
    """JSON lines of ``{"filename": ..., "captions": [...]}``."""
    path, image_dir = Path(path), Path(image_dir)
    try:
        lines = path.read_bytes().splitlines()
    except FileNotFoundError:
        raise EcgcapError("no such caption file", input=str(path)) from None
    pairs: dict[str, list[str]] = {}
    bad: list[int] = []
    for n, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw.decode("utf-8"))
            name, caps = obj["filename"], obj["captions"]
            if not isinstance(name, str) or not isinstance(caps, list):
                raise TypeError
        except (UnicodeDecodeError, ValueError, KeyError, TypeError):
            bad.append(n)
            continue
        pairs.setdefault(name, []).extend(_clean(caps))
    if bad:
        (report or _warn)(f"{path}: {len(bad)} lines are not {{\"filename\", \"captions\"}} "
                          f"JSON objects; skipped (first: line {bad[0]})")
    return _finish(path.stem, image_dir, path, pairs, report)


FLICKR8K_SPLITS = {"train": "Flickr_8k.trainImages.txt", "val": "Flickr_8k.devImages.txt",
                   "test": "Flickr_8k.testImages.txt"}
_TOKEN_KEY = re.compile(r"^([^#\s]+\.jpg)#\d+$")


def _decoded_lines(path: Path) -> tuple[list[tuple[int, str]], list[int]]:
    """``(number, text)`` of each UTF-8 line of ``path``, and the numbers of the others."""
    good, bad = [], []
    for n, raw in enumerate(path.read_bytes().splitlines(), 1):
        try:
            good.append((n, raw.decode("utf-8")))
        except UnicodeDecodeError:
            bad.append(n)
    return good, bad


def _read_token_file(path: str | os.PathLike, *, report: Report | None = None
                    ) -> dict[str, list[str]]:
    """Captions by image name from a Flickr token file (``IMAGE.jpg#N<TAB>caption`` lines, as
    Flickr8k's ``Flickr8k.token.txt`` and Flickr30k's ``results_20130124.token``), in file
    order; unusable lines are reported in one line."""
    path = Path(path)
    lines, undecodable = _decoded_lines(path)
    bad = {n: "not UTF-8" for n in undecodable}
    captions: dict[str, list[str]] = {}
    for n, line in lines:
        if not line.strip():
            continue
        key, tab, caption = line.partition("\t")
        match = _TOKEN_KEY.match(key.strip())
        if not tab or not match:
            bad[n] = "no tab" if not tab else f"bad id {key!r}"
            continue
        captions.setdefault(match.group(1), []).extend(_clean([caption]))
    if bad:
        first = min(bad)
        (report or _warn)(f"{path}: {len(bad)} lines skipped (first: line {first} "
                          f"({bad[first]}))")
    return captions


def _split_names(path: Path, report: Report) -> list[str]:
    """The image names of a split list, one a line."""
    lines, undecodable = _decoded_lines(path)
    if undecodable:
        report(f"{path}: {len(undecodable)} lines are not UTF-8; skipped")
    return [name for _, line in lines if (name := line.strip())]


def read_flickr8k(folder: str | os.PathLike, split: str = "train", *,
                  image_dir: str | os.PathLike | None = None,
                  report: Report | None = None) -> CaptionSet:
    """Flickr8k: ``Flickr8k.token.txt`` and the split list of ``split`` (val = dev)."""
    folder = Path(folder)
    _check_split(split)
    report = report or _warn
    token_file, split_file = folder / "Flickr8k.token.txt", folder / FLICKR8K_SPLITS[split]
    for f in (token_file, split_file):
        if not f.is_file():
            raise EcgcapError("Flickr8k file not found", input=str(f))
    captions = _read_token_file(token_file, report=report)
    pairs = {name: captions.get(name, []) for name in _split_names(split_file, report)}
    return _finish(f"flickr8k-{split}", Path(image_dir or folder / "images"), split_file, pairs,
                   report)


def read_flickr30k(folder: str | os.PathLike, split: str = "train", *,
                   report: Report | None = None) -> CaptionSet:
    """Flickr30k as in ``shared/data/flickr30k``: ``captions.token`` and ``images/``.

    There is no split list: "train" is every captioned photo present in ``images/``; "val"
    and "test" are refused (choose on another dataset's val split, e.g. Flickr8k's dev).
    """
    folder = Path(folder)
    _check_split(split)
    if split != "train":
        raise EcgcapError("flickr30k here has no val or test split: all of it is training "
                          "data; choose on another dataset's val split (e.g. flickr8k val)",
                          input=f"{folder} split {split}")
    token_file = folder / "captions.token"
    if not token_file.is_file():
        raise EcgcapError("Flickr30k file not found", input=str(token_file))
    pairs = _read_token_file(token_file, report=report)
    return _finish("flickr30k-train", folder / "images", token_file, pairs, report)


def read_rsicd(folder: str | os.PathLike, split: str = "train", *,
               report: Report | None = None) -> CaptionSet:
    """RSICD as shipped in ``shared/data/rsicd``: train in JSON lines, val and test in COCO."""
    folder = Path(folder)
    _check_split(split)
    if split == "train":
        out = read_jsonl(folder / "captions_train.jsonl", folder / "images", report=report)
    else:
        out = read_coco(folder / f"captions_{split}.json", folder / "images", report=report)
    out.name = f"rsicd-{split}"
    return out


DATASETS = {"rsicd": ("captions_test.json", read_rsicd),
            "flickr8k": ("Flickr8k.token.txt", read_flickr8k),
            "flickr30k": ("captions.token", read_flickr30k)}
ONE_SPLIT = frozenset({"flickr30k"})  # known datasets with a train split only


def _locate(dataset: str, marker: str, data_dir: str | os.PathLike | None) -> Path:
    """The dataset's folder; Flickr8k is downloaded into the default data folder when neither
    ``data_dir`` nor ``$ECGCAP_DATA`` names one (as ``train_ecg`` does for PhysioNet); a
    missing Flickr30k says where to ask for it (it has no public download)."""
    try:
        return find_dataset(dataset, marker, data_dir)
    except EcgcapError as exc:
        if dataset == "flickr30k":
            from ecgcap.captioning.download import flickr30k_not_found

            raise flickr30k_not_found(exc.input) from None
        if dataset != "flickr8k" or data_dir is not None or os.environ.get(DATA_ENV):
            raise
    from ecgcap.captioning.download import download_flickr8k

    return download_flickr8k(resolve_data_dir() / dataset)


_FLICKR_NAME = re.compile(r"^([1-9][0-9]*)(?:_[0-9a-f]+)?\.jpe?g$", re.IGNORECASE)


def flickr_id(filename: str) -> str | None:
    """The Flickr photo id in an image file name, else None.

    Flickr8k's ``1000268201_693b08cb0e.jpg`` and Flickr30k's ``1000268201.jpg`` both give
    ``"1000268201"``: a run of digits (no leading zero, as Flickr ids have none) followed by
    ``.jpg`` or by ``_`` and a hexadecimal secret then ``.jpg``. Other names (``airport_1.jpg``,
    RSICD's ``00003.jpg``, COCO's ``000000000009.jpg``) have none.
    """
    match = _FLICKR_NAME.match(Path(filename).name)
    return match.group(1) if match else None


def photo_key(path: Path) -> str:
    """Who a photo is: ``flickr:ID`` when its name has a Flickr id, else its real file."""
    fid = flickr_id(path.name)
    return f"flickr:{fid}" if fid else f"file:{path.resolve()}"


def merge_caption_sets(sets: Sequence[CaptionSet], name: str | None = None) -> CaptionSet:
    """One training set from several; a photo in more than one set is counted once, with the
    captions of every set it is in (in set order).

    A photo is known by its Flickr id (:func:`flickr_id`) when its file name has one, so
    Flickr8k's ``ID_secret.jpg`` and Flickr30k's ``ID.jpg`` are one photo; any other name is
    known by its file (resolved path): ``airport_1.jpg`` of two folders are two photos, unless
    they are the same file. The first set's file is kept. Order: the first set's images, then
    each later set's new ones. ``images`` are absolute paths (``image_dir`` is ``/``, so
    :meth:`CaptionSet.paths` gives the files); ``missing`` is every set's, concatenated.
    """
    index: dict[str, int] = {}
    images: list[str] = []
    captions: list[list[str]] = []
    for data in sets:
        for path, caps in zip(data.paths(), data.captions, strict=True):
            key = photo_key(path)
            if key in index:
                captions[index[key]].extend(caps)
                continue
            index[key] = len(images)
            images.append(os.path.abspath(path))
            captions.append(list(caps))
    return CaptionSet(name or "+".join(s.name for s in sets), Path("/"), images, captions,
                      [m for s in sets for m in s.missing])


def without_photos(data: CaptionSet, others: Sequence[CaptionSet]) -> tuple[CaptionSet, int]:
    """``data`` without the photos of ``others`` (by :func:`photo_key`), and how many went:
    what keeps another set's val and test photos out of a merged training set."""
    keys = {photo_key(p) for o in others for p in o.paths()}
    keep = [i for i, p in enumerate(data.paths()) if photo_key(p) not in keys]
    out = CaptionSet(data.name, data.image_dir, [data.images[i] for i in keep],
                     [data.captions[i] for i in keep], data.missing)
    return out, len(data) - len(keep)


def load_captions(dataset: str, split: str = "train", *, data_dir: str | os.PathLike | None = None,
                  image_dir: str | os.PathLike | None = None,
                  report: Report | None = None) -> CaptionSet:
    """One interface to every format.

    ``dataset`` is a known name (``rsicd``, ``flickr8k``, ``flickr30k``; found under ``data_dir``
    as the commands find data) or a caption file: a Karpathy ``.json``, a COCO ``.json`` or a
    ``.jsonl`` (images in ``image_dir``, default the file's folder's ``images/``).
    """
    _check_split(split)
    if dataset in DATASETS:
        marker, reader = DATASETS[dataset]
        return reader(_locate(dataset, marker, data_dir), split, report=report)
    path = Path(dataset)
    if path.suffix not in (".json", ".jsonl") or not path.exists():
        raise EcgcapError(f"unknown dataset; give one of {', '.join(DATASETS)} or a caption "
                          "file (.json Karpathy or COCO, .jsonl)", input=dataset)
    images = Path(image_dir) if image_dir else path.parent / "images"
    if path.suffix == ".jsonl":
        return read_jsonl(path, images, report=report)
    data = _read_json(path)
    if _is_coco(data):
        return read_coco(path, images, report=report)
    return read_karpathy(path, images, split, report=report)


def has_splits(dataset: str) -> bool:
    """Whether ``dataset`` names its own train/val/test splits: the known datasets (but
    ``flickr30k``, a train split only) and Karpathy files do; a COCO or JSON-lines caption file
    is one split, whatever split is asked for (so its "train" and "val" would be the same
    images)."""
    if dataset in DATASETS:
        return dataset not in ONE_SPLIT
    path = Path(dataset)
    if path.suffix != ".json" or not path.is_file():
        return False
    return not _is_coco(_read_json(path))


def _is_coco(data: object) -> bool:
    """A parsed caption ``.json`` in MS-COCO form (else Karpathy's)."""
    return isinstance(data, dict) and "annotations" in data
