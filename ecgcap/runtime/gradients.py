"""How much of the error reaches each time step: loss gradients per step, on every backend.

Back-propagation through time multiplies the error by the recurrent Jacobian once per step, so
the gradient that reaches early steps shrinks or explodes. :func:`step_gradients` measures it:
the gradient of the loss with respect to a sequence tensor, either a model input or the input
sequence of one of its layers (for a recurrent layer: what reaches step t through the
recurrence). It adds a zero "probe" to that tensor and differentiates with respect to the
probe, with each backend's own mechanism (``tf.GradientTape``, ``jax.grad``,
``torch.autograd``) behind one function. Shared by both wings; it knows nothing of ECG or
captions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import keras
import numpy as np

Loss = Callable[[Any, Any], Any]


class _Probe(keras.layers.Layer):
    """Adds ``self.offset`` (zeros, or the tensor being differentiated) to its input."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.offset = None
        self.seen_shape: tuple[int, ...] | None = None

    def call(self, x):
        self.seen_shape = tuple(x.shape)
        return x if self.offset is None else x + self.offset


def _with_probe(model: keras.Model, layer_name: str) -> tuple[keras.Model, _Probe]:
    """The same model (shared weights) with a probe on the first input of ``layer_name``."""
    model.get_layer(layer_name)  # a clear ValueError for an unknown name
    probe = _Probe(name=f"probe_{layer_name}")

    def call(layer, *args, **kwargs):
        if layer.name == layer_name:
            args = (probe(args[0]), *args[1:])
        return layer(*args, **kwargs)

    clone = keras.models.clone_model(model, clone_function=lambda layer: layer,
                                     call_function=call)
    return clone, probe


def _gradient(fn: Callable[[Any], Any], zeros: np.ndarray) -> np.ndarray:
    """d fn(offset) / d offset at ``offset = zeros``, with the running backend."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        offset = tf.constant(zeros)
        with tf.GradientTape() as tape:
            tape.watch(offset)
            value = fn(offset)
        return np.asarray(tape.gradient(value, offset))
    if backend == "jax":
        import jax

        return np.asarray(jax.grad(fn)(zeros))
    if backend == "torch":
        import torch

        offset = torch.tensor(zeros, requires_grad=True)
        fn(offset).backward()
        return offset.grad.detach().cpu().numpy()
    raise NotImplementedError(f"no gradient support for the {backend} backend")


def step_gradients(model: keras.Model, inputs: Mapping[str, np.ndarray] | np.ndarray,
                   targets: np.ndarray, *, layer: str | None = None, input_name: str | None = None,
                   loss: Loss | None = None) -> np.ndarray:
    """Gradient of the summed loss with respect to a sequence tensor of ``model``.

    Parameters
    ----------
    model : a functional Keras model, in inference mode (dropout off, batch norm frozen).
    inputs, targets : one batch, as ``model`` takes it, and its targets.
    layer : differentiate with respect to this layer's (first) input; for a recurrent layer
        that is the sequence entering the recurrence, so the result says how much of the error
        at the end reaches step t.
    input_name : or with respect to this model input (the only input when both are ``None``).
    loss : ``loss(targets, outputs)``, summed over the batch; default sparse categorical
        cross-entropy. Any callable on backend tensors works (e.g. the output itself).

    Returns
    -------
    np.ndarray with the tensor's shape, e.g. ``(batch, steps, features)``.
    """
    if loss is None:
        ce = keras.losses.SparseCategoricalCrossentropy(reduction="sum")
        loss = ce
    is_dict = isinstance(inputs, Mapping)
    tensor = keras.ops.convert_to_tensor
    arrays = ({k: tensor(np.asarray(v)) for k, v in inputs.items()} if is_dict
              else tensor(np.asarray(inputs)))
    y = keras.ops.convert_to_tensor(np.asarray(targets))
    if layer is not None:
        probed, probe = _with_probe(model, layer)
        probed(arrays, training=False)                  # learn the probed tensor's shape
        zeros = np.zeros(probe.seen_shape, dtype="float32")

        def fn(offset):
            probe.offset = offset
            try:
                return keras.ops.sum(loss(y, probed(arrays, training=False)))
            finally:
                probe.offset = None

        return _gradient(fn, zeros)
    if is_dict:
        name = input_name or (next(iter(arrays)) if len(arrays) == 1 else None)
        if name not in arrays:
            raise ValueError(f"name the input to differentiate: one of {sorted(arrays)}")
        zeros = np.zeros(tuple(arrays[name].shape), dtype="float32")

        def fn(offset):
            return keras.ops.sum(loss(y, model({**arrays, name: arrays[name] + offset},
                                               training=False)))
    else:
        zeros = np.zeros(tuple(arrays.shape), dtype="float32")

        def fn(offset):
            return keras.ops.sum(loss(y, model(arrays + offset, training=False)))

    return _gradient(fn, zeros)


def step_norms(grad: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Per time step, the L2 norm of the gradient over features, averaged over the batch.

    ``grad`` is ``(batch, steps[, features])``; ``mask`` ``(batch, steps)`` leaves padded steps
    out of the average (a step that is padding in every sequence gives NaN).
    """
    grad = np.asarray(grad, dtype=np.float64)
    norms = np.sqrt((grad ** 2).sum(axis=-1)) if grad.ndim == 3 else np.abs(grad)
    if mask is None:
        return norms.mean(axis=0)
    mask = np.asarray(mask, dtype=bool)
    with np.errstate(invalid="ignore"):
        return np.where(mask, norms, 0).sum(0) / mask.sum(0)


def layer_gradient_norms(model: keras.Model, inputs: Any, targets: np.ndarray,
                         loss: Loss | None = None) -> dict[str, float]:
    """L2 norm of the gradient of the mean loss over each layer's trainable weights.

    The gradient training would apply on this batch before clipping (the model is called with
    ``training=False``, so dropout does not add noise to the measurement).
    """
    loss = loss or keras.losses.SparseCategoricalCrossentropy()
    y = keras.ops.convert_to_tensor(np.asarray(targets))
    weights = list(model.trainable_variables)
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            value = keras.ops.mean(loss(y, model(inputs, training=False)))
        # convert_to_tensor: an embedding's gradient comes as IndexedSlices
        grads = [np.asarray(tf.convert_to_tensor(g)) if g is not None else np.zeros(w.shape)
                 for g, w in zip(tape.gradient(value, weights), weights, strict=True)]
    elif backend == "jax":
        import jax

        non_trainable = [v.value for v in model.non_trainable_variables]

        def fn(values):
            out, _ = model.stateless_call(values, non_trainable, inputs, training=False)
            return keras.ops.mean(loss(y, out))

        grads = [np.asarray(g) for g in jax.grad(fn)([w.value for w in weights])]
    elif backend == "torch":
        value = keras.ops.mean(loss(y, model(inputs, training=False)))
        model.zero_grad()
        value.backward()
        grads = [w.value.grad.detach().cpu().numpy() for w in weights]
    else:
        raise NotImplementedError(f"no gradient support for the {backend} backend")
    squares: dict[str, float] = {}
    owner = {id(w): layer.name for layer in model.layers for w in layer.trainable_weights}
    for w, g in zip(weights, grads, strict=True):
        name = owner.get(id(w), w.path.split("/")[0])
        squares[name] = squares.get(name, 0.0) + float(np.sum(np.square(g, dtype=np.float64)))
    return {k: float(np.sqrt(v)) for k, v in squares.items()}


class GradientLog(keras.callbacks.Callback):
    """``--log-gradients``: per-layer gradient norms on a fixed batch at the end of each epoch.

    Adds ``grad_norm/<layer>`` and ``grad_norm/total`` to the epoch logs (so they reach the
    history, ``report.json`` and any other callback). The norms are those before clipping; with
    ``clipnorm`` set, the optimizer scales each weight's gradient down to at most that norm.
    """

    def __init__(self, inputs: Any, targets: np.ndarray, loss: Loss | None = None):
        super().__init__()
        self.inputs, self.targets, self.loss = inputs, targets, loss

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        norms = layer_gradient_norms(self.model, self.inputs, self.targets, self.loss)
        if logs is not None:
            for name, value in norms.items():
                logs[f"grad_norm/{name}"] = value
            logs["grad_norm/total"] = float(np.sqrt(sum(v * v for v in norms.values())))
