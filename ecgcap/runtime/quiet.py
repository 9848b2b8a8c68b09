"""Keep the frameworks' C++ log lines (TensorFlow, absl, XLA, CUDA) off the terminal.

TensorFlow writes them straight to file descriptor 2 while it initialises (twice per import:
once per native library) and when it first looks for a GPU, before ``TF_CPP_MIN_LOG_LEVEL`` or
Python's logging can reach them. :func:`framework_quiet` points descriptor 2 at a temporary
file for such a block and then writes back every line that is not framework noise, so a real
error still shows. :func:`install` makes the first ``import tensorflow`` of the process run
inside that block; ``import ecgcap`` calls it. ``ECGCAP_DEBUG=1`` (``--debug``) lets everything
through.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile
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


@contextlib.contextmanager
def framework_quiet() -> Iterator[None]:
    """Run a block with file descriptor 2 captured; afterwards write back the lines that are
    not framework noise (:func:`is_noise`). Does nothing when :func:`debug_enabled`."""
    if debug_enabled():
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no descriptor 2 (embedded interpreters)
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(OSError, ValueError, AttributeError):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept = [line for line in tmp.read().decode(errors="replace").splitlines()
                    if not is_noise(line)]
            if kept:
                sys.stderr.write("\n".join(kept) + "\n")
                sys.stderr.flush()


class _QuietImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself; wraps the loading of a watched top-level package in
    :func:`framework_quiet` the first time it is imported."""

    def find_spec(self, name, path, target=None):  # noqa: ARG002 - finder protocol
        if name not in _WATCHED or name in sys.modules:
            return None
        sys.meta_path.remove(self)  # once per process, and never recursively
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module

        def quiet_exec(module):
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if debug_enabled() else "3")
            with framework_quiet():
                exec_module(module)

        spec.loader.exec_module = quiet_exec  # this spec's own loader instance
        return spec


def install() -> None:
    """Make the process's first ``import tensorflow`` quiet (idempotent; no effect when
    TensorFlow is already imported)."""
    if any(name in sys.modules for name in _WATCHED):
        return
    if not any(isinstance(f, _QuietImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietImport())
