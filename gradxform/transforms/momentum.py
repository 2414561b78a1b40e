"""Momentum: heavy-ball and Nesterov velocity, with torch's dampening."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import DTypeLike

from gradxform import tree
from gradxform.base import EmptyState, GradientTransformationExtraArgs
from gradxform.hyperparams import Hyperparam, Hyperparams, HyperparamState, ScalarOrSchedule

__all__ = ["ScaleByMomentumState", "scale_by_momentum"]


class ScaleByMomentumState(NamedTuple):
    """State of :func:`scale_by_momentum`.

    Attributes:
        velocity: :math:`v`, shaped like the params.
        hyperparams: the block's store of ``momentum`` and ``dampening``
            (``EmptyState()`` when they are handles).
    """

    velocity: Any
    hyperparams: HyperparamState | EmptyState


def scale_by_momentum(
    momentum: ScalarOrSchedule | Hyperparam = 0.9,
    *,
    nesterov: bool = False,
    dampening: ScalarOrSchedule | Hyperparam | None = None,
    dtype: DTypeLike | None = None,
) -> GradientTransformationExtraArgs:
    r"""Heavy-ball or Nesterov momentum, as a direction.

    :math:`v \leftarrow \rho v + (1 - d) g`, output :math:`v`, or
    :math:`g + \rho v` with ``nesterov=True``. Before the learning rate
    (``chain(scale_by_momentum(rho), scale_by_learning_rate(lr))``, as in
    :func:`gradxform.sgd`) this is :math:`x \leftarrow x - \eta v`; after it,
    the velocity form :math:`v \leftarrow \rho v - \eta g`,
    :math:`x \leftarrow x + v` (:func:`gradxform.sgd_velocity`). As in torch,
    the first update sets :math:`v = g`, without dampening.

    Args:
        momentum: :math:`\rho` in [0, 1): a number, a schedule or a handle.
        nesterov: use Nesterov's look-ahead form.
        dampening: :math:`d` in [0, 1] (a number, a schedule or a handle), or
            ``None`` for none (then nothing is stored and no step count kept).
        dtype: dtype of the velocity (default: each parameter's dtype).

    Returns:
        The block; its state is :class:`ScaleByMomentumState`.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.scale_by_momentum(0.5)
        >>> state = tx.init(jnp.zeros(1))
        >>> v, state = tx.update(jnp.array([2.0]), state)
        >>> v, state = tx.update(jnp.array([2.0]), state)
        >>> float(v[0])  # 0.5 * 2 + 2
        3.0
    """
    specs = {"momentum": momentum}
    if dampening is not None:
        specs["dampening"] = dampening
    hp = Hyperparams(**specs).check("momentum", lower=0, upper=1, upper_open=True)
    if dampening is not None:
        hp.check("dampening", lower=0, upper=1).use_complement("dampening").use_count()

    def init_fn(params):
        return ScaleByMomentumState(tree.zeros_like(params, dtype), hp.init(params))

    def update_fn(updates, state, params=None, **extra_args):
        del params
        tree.check_structure(state.velocity, updates, "velocity", "updates")
        values, hyper = hp.step(state.hyperparams, extra_args)
        rho = values["momentum"]
        gain = None  # 1: g + rho v, without a multiplication by 1 per element
        if dampening is not None:  # torch: no dampening at the first update
            gain = jnp.where(values.count == 1, 1, values.complement("dampening"))
        velocity = tree.ema(rho, gain, state.velocity, updates)
        if nesterov:
            out = jax.tree.map(lambda g, v: g + tree.to_dtype(rho, v.dtype) * v, updates, velocity)
        else:
            out = velocity
        return out, ScaleByMomentumState(velocity, hyper)

    return GradientTransformationExtraArgs(init_fn, update_fn)
