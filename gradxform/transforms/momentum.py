"""Momentum: heavy-ball and Nesterov velocity, with torch's dampening."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform import tree
from gradxform.base import GradientTransformationExtraArgs, Schedule
from gradxform.hyperparams import Hyperparams, HyperparamState, check_decay

__all__ = ["ScaleByMomentumState", "scale_by_momentum"]


class ScaleByMomentumState(NamedTuple):
    """State of :func:`scale_by_momentum`.

    Attributes:
        velocity: ``v``, shaped like the params.
        hyperparams: ``momentum`` and ``dampening``, and the step count.
    """

    velocity: Any
    hyperparams: HyperparamState


def scale_by_momentum(
    momentum: float | Schedule = 0.9,
    *,
    nesterov: bool = False,
    dampening: float | Schedule = 0.0,
    dtype=None,
) -> GradientTransformationExtraArgs:
    """Heavy-ball momentum, the lecture's first formulation, as a direction.

    ``v <- momentum * v + (1 - dampening) * g`` and the output is ``v``, or
    ``g + momentum * v`` with ``nesterov=True``. Before the learning rate
    (``chain(scale_by_momentum(rho), scale_by_learning_rate(lr))``) this is
    ``x <- x - lr * v``. As in torch, the first update sets ``v = g`` without
    dampening; with ``dampening=0`` this is the same as starting from ``v = 0``.

    Placed *after* the learning rate it becomes the lecture's second
    formulation, ``v <- rho * v - lr * g; x <- x + v`` (see
    :func:`gradxform.sgd_velocity`).

    Args:
        momentum: ``rho`` in [0, 1), a number or a schedule.
        nesterov: use Nesterov's look-ahead form.
        dampening: in [0, 1]; scales the new gradient by ``1 - dampening``.
        dtype: dtype of the velocity (default: each parameter's dtype).
    """
    check_decay("momentum", momentum)
    check_decay("dampening", dampening, allow_one=True)
    hp = Hyperparams(momentum=momentum, dampening=dampening)

    def init_fn(params):
        return ScaleByMomentumState(tree.zeros_like(params, dtype), hp.init(params))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        tree.check_structure(state.velocity, updates, "velocity", "updates")
        first = state.hyperparams.count == 0
        values, hyper = hp.step(state.hyperparams)
        rho = values["momentum"]
        gain = jnp.where(first, jnp.ones_like(rho), values.complement("dampening"))
        velocity = tree.ema(rho, gain, state.velocity, updates)
        if nesterov:
            out = jax.tree.map(lambda g, v: g + rho.astype(v.dtype) * v, updates, velocity)
        else:
            out = velocity
        return out, ScaleByMomentumState(velocity, hyper)

    return GradientTransformationExtraArgs(init_fn, update_fn)
