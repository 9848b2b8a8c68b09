"""Flickr8k from its public mirror: two zip archives, checked, then unpacked safely.

The mirror most Flickr8k users download from hosts ``Flickr8k_text.zip`` (captions and split
lists) and ``Flickr8k_Dataset.zip`` (8,091 photographs in ``Flicker8k_Dataset/``, sic). Each
archive is fetched to a temporary name with a progress bar, checked against its MD5 (the sums
published with mlverse/torchvision's ``flickr8k_caption_dataset``), renamed, and unpacked with
:func:`ecgcap.runtime.download.extract_zip` into the layout :func:`read_flickr8k` reads: the text
files at the top, the images in ``images/``. Offline, it stops with one line naming
``--data-dir``; a second run fetches and unpacks only what is missing.

Flickr30k has no public direct download: its publisher hands it out through a form, so
``load_captions("flickr30k")`` never downloads; without a local copy it stops with one line
(:func:`flickr30k_not_found`) saying where to ask for it and how to lay it out: the photos in
``flickr30k/images/``, the publisher's ``results_20130124.token`` renamed ``captions.token``
(the layout :func:`~ecgcap.captioning.datasets.read_flickr30k` reads), or Karpathy's
``dataset_flickr30k.json`` given as a caption file, with its train/val/test splits.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from ecgcap.runtime.download import extract_zip, fetch, file_digest
from ecgcap.runtime.errors import EcgcapError

FLICKR8K_URL = "https://github.com/jbrownlee/Datasets/releases/download/Flickr8k"
URL_ENV = "ECGCAP_FLICKR8K_URL"  # another mirror (any URL urllib opens, file:// included)
FLICKR8K_ARCHIVES = {  # name: MD5. The images first: the captions file, which marks the
    "Flickr8k_Dataset.zip": "f18a1e2920de5bd84dae7cf08ec78978",  # folder as there, comes
    "Flickr8k_text.zip": "bf6c1abcb8e4a833b7f922104de18627",  # last, so an interrupted
}  # download is found incomplete and continued


FLICKR30K_FORM = "https://shannon.cs.illinois.edu/DenotationGraph/"


def flickr30k_not_found(root: str | None) -> EcgcapError:
    """The one-line error for no Flickr30k under the data root ``root``: where to get it."""
    return EcgcapError(
        "no flickr30k dataset here (no captions.token in it or in its flickr30k/); point "
        "--data-dir or ECGCAP_DATA at a copy. It cannot be downloaded for you: ask for it "
        f"with the form at {FLICKR30K_FORM}, then put its photos in flickr30k/images/ and its "
        "results_20130124.token beside them as captions.token, or give Karpathy's "
        "dataset_flickr30k.json (with its splits) to --dataset and the photos to --image-dir",
        input=root)


def flickr8k_place(member: str) -> str | None:
    """Where an archive member goes: text files at the top, images in ``images/``; macOS
    metadata and anything else is skipped."""
    path = PurePosixPath(member)
    if "__MACOSX" in path.parts or path.name.startswith("."):
        return None
    if path.suffix.lower() == ".jpg":
        return f"images/{path.name}"
    if path.suffix.lower() == ".txt":
        return path.name
    return None


def _progress(name: str, quiet: bool):
    """A byte counter drawing ``keras.utils.Progbar`` in MB (None when ``quiet``)."""
    if quiet:
        return None
    import sys

    from keras.utils import Progbar

    print(f"downloading {name}", file=sys.stderr, flush=True)
    bar: list[Progbar] = []

    def show(done: int, total: int | None) -> None:
        mb = 1 << 20
        if not bar:
            bar.append(Progbar(max(1, -(-total // mb)) if total else None, unit_name="MB"))
        at_end = total is not None and done >= total
        bar[0].update(max(1, -(-done // mb)) if at_end else done // mb)  # redraws <= 20/s

    return show


def download_flickr8k(dest: str | os.PathLike, *, base_url: str | None = None,
                      archives: dict[str, str] | None = None, quiet: bool = False,
                      timeout: float = 30.0, keep_archives: bool = False) -> Path:
    """Download and unpack Flickr8k into ``dest`` (made if needed); return ``dest``.

    ``archives`` maps archive names to their MD5 (default :data:`FLICKR8K_ARCHIVES`);
    ``base_url`` defaults to ``$ECGCAP_FLICKR8K_URL`` or the public mirror. An archive whose
    files are already unpacked (a ``.<archive>.done`` marker) is skipped; archives are deleted
    once unpacked unless ``keep_archives``.
    """
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise EcgcapError("is a file, not a folder", input=str(dest))
    dest.mkdir(parents=True, exist_ok=True)
    base_url = (base_url or os.environ.get(URL_ENV) or FLICKR8K_URL).rstrip("/")
    for name, md5 in (archives or FLICKR8K_ARCHIVES).items():
        done = dest / f".{name}.done"
        if done.is_file():
            continue
        archive = dest / name
        if not (archive.is_file() and file_digest(archive, "md5") == md5):
            fetch(f"{base_url}/{name}", archive, md5, timeout, "flickr8k", algorithm="md5",
                  on_bytes=_progress(name, quiet))
        extract_zip(archive, dest, flickr8k_place)
        done.write_text(md5 + "\n")
        if not keep_archives:
            archive.unlink()
    return dest
