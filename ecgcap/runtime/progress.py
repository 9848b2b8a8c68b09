"""Progress bars for long non-training work (Keras draws its own for training).

On a terminal the bar redraws in place; when stderr is a file or a pipe it prints plain lines
(no escape codes), one per tenth of the work.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator, Sized
from typing import TypeVar

T = TypeVar("T")


def _line(done: int, total: int | None, seconds: float, width: int = 30) -> str:
    if not total:
        return f"{done} items, {seconds:.0f}s"
    filled = width * done // total
    left = seconds / done * (total - done) if done else 0.0
    eta = f"{left:.0f}s left" if done < total else f"{seconds:.0f}s"
    return f"{done:>{len(str(total))}}/{total} [{'=' * filled}{' ' * (width - filled)}] {eta}"


def progress(items: Iterable[T], *, total: int | None = None, label: str = "",
             quiet: bool = False) -> Iterator[T]:
    """Iterate over ``items`` while drawing a progress bar on stderr (nothing when
    ``quiet``)."""
    if total is None and isinstance(items, Sized):
        total = len(items)
    if quiet:
        yield from items
        return
    out = sys.stderr
    tty = out.isatty()
    if label:
        print(label, file=out, flush=True)
    start = time.perf_counter()
    step = max(1, (total or 10) // 10)
    done = 0
    for done, item in enumerate(items, 1):
        yield item
        seconds = time.perf_counter() - start
        if tty:
            out.write("\r" + _line(done, total, seconds))
            out.flush()
        elif done % step == 0 or done == total:
            print(_line(done, total, seconds), file=out, flush=True)
    if tty:
        out.write("\n")
        out.flush()
