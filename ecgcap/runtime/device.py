"""Choose the device (``--device auto|cpu|gpu``), mixed precision, and say what is used."""

from __future__ import annotations

import os
import sys

from ecgcap.runtime.errors import EcgcapError

DEVICES = ("auto", "cpu", "gpu")


def cpu_threads() -> int:
    """Number of CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _hide_gpus() -> None:
    if "keras" in sys.modules or "tensorflow" in sys.modules:
        # Too late for the environment: ask TensorFlow directly (the other backends read
        # CUDA_VISIBLE_DEVICES only when they start, so this only matters for tensorflow).
        import keras

        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            try:
                tf.config.set_visible_devices([], "GPU")
            except RuntimeError:
                pass
    os.environ["CUDA_VISIBLE_DEVICES"] = "-1"
    os.environ.setdefault("JAX_PLATFORMS", "cpu")


def list_gpus() -> list[str]:
    """Names of the GPUs the current Keras backend can use (empty on a CPU-only machine)."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        from ecgcap.runtime.quiet import framework_quiet

        names = []
        with framework_quiet():  # "failed call to cuInit" on a machine without a GPU
            gpus = tf.config.list_physical_devices("GPU")
        for gpu in gpus:
            details = tf.config.experimental.get_device_details(gpu)
            names.append(details.get("device_name", gpu.name))
        return names
    if backend == "jax":
        import jax

        return [d.device_kind for d in jax.devices() if d.platform == "gpu"]
    if backend == "torch":
        import torch

        if not torch.cuda.is_available():
            return []
        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return []


def configure_device(device: str = "auto", *, mixed_precision: bool = False) -> str:
    """Apply ``device`` and ``mixed_precision`` and return a one-line description of them.

    ``cpu`` hides every GPU; ``gpu`` is an :class:`EcgcapError` when none is visible; ``auto``
    uses a GPU when present. Mixed precision (``mixed_float16``) applies on GPU only.

    Examples
    --------
    >>> configure_device("cpu")                              # doctest: +SKIP
    'keras backend tensorflow, CPU only, 2 threads'
    """
    if device not in DEVICES:
        raise EcgcapError(f"unknown device; choose one of {', '.join(DEVICES)}",
                          input=f"--device {device}")
    if device == "cpu":
        _hide_gpus()
    import keras

    backend = keras.backend.backend()
    gpus = [] if device == "cpu" else list_gpus()
    if device == "gpu" and not gpus:
        raise EcgcapError(f"no GPU is visible to the {backend} backend on this machine; "
                          "use --device cpu or auto", input="--device gpu")
    if gpus:
        kinds = sorted(set(gpus))
        where = f"{len(gpus)} GPU{'s' if len(gpus) > 1 else ''}: {', '.join(kinds)}"
    else:
        where = f"CPU only, {cpu_threads()} threads"
    precision = "float32"
    if mixed_precision:
        if gpus:
            keras.mixed_precision.set_global_policy("mixed_float16")
            precision = "mixed_float16"
        else:
            precision = "float32 (--mixed-precision ignored: no GPU)"
    else:
        keras.mixed_precision.set_global_policy("float32")
    return f"keras backend {backend}, {where}, {precision}"
