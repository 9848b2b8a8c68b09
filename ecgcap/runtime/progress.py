"""Progress bars for long non-training work (Keras draws its own for training)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sized
from typing import TypeVar

T = TypeVar("T")


def progress(items: Iterable[T], *, total: int | None = None, label: str = "",
             quiet: bool = False) -> Iterator[T]:
    """Iterate over ``items`` while drawing ``keras.utils.Progbar`` (nothing when ``quiet``)."""
    if total is None and isinstance(items, Sized):
        total = len(items)
    if quiet:
        yield from items
        return
    from keras.utils import Progbar

    if label:
        import sys

        print(label, file=sys.stderr, flush=True)
    bar = Progbar(total, unit_name="item")
    for i, item in enumerate(items, 1):
        yield item
        bar.update(i)
