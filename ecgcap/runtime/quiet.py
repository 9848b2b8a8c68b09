"""Keep the frameworks' log lines (TensorFlow, absl, XLA, CUDA) off the terminal.

TensorFlow writes them straight to file descriptor 2 while it initialises (twice per import:
once per native library) and when it first looks for a GPU, before ``TF_CPP_MIN_LOG_LEVEL`` or
Python's logging can reach them. :func:`framework_quiet` points descriptor 2 at a temporary
file for such a block and then writes back every line that is not framework noise, so a real
error still shows. :func:`install` makes the first ``import tensorflow`` of the process run
inside that block and then sets TensorFlow's Python logger to errors only (its
``WARNING:tensorflow:`` lines, such as retracing hints); ``import ecgcap`` calls it.
``ECGCAP_DEBUG=1`` (``--debug``) lets everything through.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile
import threading
import typing
from collections.abc import Iterator

# absl's C++ line format (``I0000 00:00:1796541508.327693   27687 port.cc:153] ...``), the
# notice printed before absl is initialised, and the CPU-feature advice's second line
_NOISE = re.compile(
    r"^[IWE]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ [\w./-]+:\d+\]"
    r"|^WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|^To enable the following instructions: .* rebuild TensorFlow"
    r"|^WARNING:absl:"
    r"|^INFO: Created TensorFlow Lite XNNPACK delegate")
# C++ errors that are kept, although in absl's format: anything not about looking for CUDA
_HARMLESS_ERRORS = re.compile(r"cuInit|cuda|CUDA|cuDNN|cuFFT|cuBLAS|factory|TPU|rocm",
                              re.IGNORECASE)
_WATCHED = ("tensorflow",)


def debug_enabled() -> bool:
    """True when ``ECGCAP_DEBUG`` asks to see everything (``--debug`` sets it)."""
    return os.environ.get("ECGCAP_DEBUG", "") not in ("", "0")


def is_noise(line: str) -> bool:
    """True for a framework log line that :func:`framework_quiet` drops."""
    if not line.strip():
        return True
    if not _NOISE.search(line):
        return False
    return not line.startswith("E") or bool(_HARMLESS_ERRORS.search(line))


_lock = threading.Lock()
_depth = 0  # framework_quiet blocks open in this process (only the outermost swaps fd 2)
_capture: tuple[int, typing.IO[bytes]] | None = None  # (the real fd 2, the capture file)


def _begin() -> None:
    global _depth, _capture
    with _lock:
        _depth += 1
        if _depth > 1:
            return
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError, AttributeError):  # no descriptor 2 (embedded interpreters)
            return
        try:
            tmp = tempfile.TemporaryFile()
        except OSError:  # no writable temporary folder: let everything through
            os.close(saved)
            return
        os.dup2(tmp.fileno(), 2)
        _capture = (saved, tmp)


def _end() -> None:
    global _depth, _capture
    with _lock:
        _depth -= 1
        if _depth > 0 or _capture is None:
            return
        saved, tmp = _capture
        _capture = None
        with contextlib.suppress(OSError, ValueError, AttributeError):
            sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        with tmp:
            tmp.seek(0)
            kept = [line for line in tmp.read().decode(errors="replace").splitlines()
                    if not is_noise(line)]
    if kept:
        sys.stderr.write("\n".join(kept) + "\n")
        sys.stderr.flush()


@contextlib.contextmanager
def framework_quiet() -> Iterator[None]:
    """Run a block with file descriptor 2 captured; afterwards write back the lines that are
    not framework noise (:func:`is_noise`). Does nothing when :func:`debug_enabled`.

    Blocks may nest and overlap across threads: the first to open captures descriptor 2 for
    the process, the last to close restores it and writes back what the others let through.
    """
    if debug_enabled():
        yield
        return
    _begin()
    try:
        yield
    finally:
        _end()


class _QuietImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself; wraps the loading of a watched top-level package in
    :func:`framework_quiet` the first time it is really imported (a mere
    ``importlib.util.find_spec`` check leaves the hook in place)."""

    def __init__(self) -> None:
        self._looking = False

    def find_spec(self, name, path, target=None):  # noqa: ARG002 - finder protocol
        if name not in _WATCHED or name in sys.modules or self._looking:
            return None
        self._looking = True  # the lookup below must not come back here
        try:
            spec = importlib.util.find_spec(name)
        finally:
            self._looking = False
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module
        hook = self

        def quiet_exec(module):
            with contextlib.suppress(ValueError):
                sys.meta_path.remove(hook)  # once per process
            # C++ INFO and WARNING lines off after the import; ERROR lines still show
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if debug_enabled() else "2")
            with framework_quiet():
                exec_module(module)
            if not debug_enabled():  # its Python-side warnings too (retracing hints, ...)
                import logging

                logging.getLogger("tensorflow").setLevel(logging.ERROR)

        spec.loader.exec_module = quiet_exec  # this spec's own loader instance
        return spec


def install() -> None:
    """Make the process's first ``import tensorflow`` quiet (idempotent; no effect when
    TensorFlow is already imported)."""
    if any(name in sys.modules for name in _WATCHED):
        return
    if not any(isinstance(f, _QuietImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietImport())
