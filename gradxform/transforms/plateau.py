"""Reduce the step when the monitored loss stops improving: torch's ``ReduceLROnPlateau``."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from gradxform import checks, tree
from gradxform.base import EmptyState, GradientTransformationExtraArgs
from gradxform.hyperparams import (
    Hyperparams,
    HyperparamState,
    ScalarOrSchedule,
    Values,
    increment_count,
)

__all__ = ["ReduceOnPlateauState", "reduce_on_plateau"]


class ReduceOnPlateauState(NamedTuple):
    """State of :func:`reduce_on_plateau`.

    Attributes:
        scale: the factor the latest update multiplied the updates by (1 at
            first): torch's ``lr / initial_lr`` after ``scheduler.step(loss)``.
        best_value: the best (lowest) monitored value so far, as the
            threshold test counts it (``inf`` before the first update).
        plateau_count: updates in a row without improvement (torch's
            ``num_bad_epochs``), 0 during a cooldown and after a reduction.
        cooldown_count: updates left in the cooldown after the latest reduction.
        count: the number of updates taken (int32, saturating at ``2**31 - 1``).
        hyperparams: the store of ``factor``, ``patience``, ``threshold``,
            ``cooldown``, ``min_scale`` and ``eps``.
    """

    scale: jax.Array
    best_value: jax.Array
    plateau_count: jax.Array
    cooldown_count: jax.Array
    count: jax.Array  # type: ignore[assignment]  # optax's field name, over tuple.count
    hyperparams: HyperparamState | EmptyState


def _monitored(value) -> jax.Array:
    """``value``, checked when the update is traced: a real scalar."""
    if value is None:
        checks.fail(
            "value",
            "given to reduce_on_plateau's update, the monitored loss: "
            "tx.update(updates, state, params, value=loss)",
            value,
            TypeError,
        )
    array = jnp.asarray(value)
    if array.shape != () or not (
        jnp.issubdtype(array.dtype, jnp.floating) or jnp.issubdtype(array.dtype, jnp.integer)
    ):
        checks.fail("value", "a real scalar (the monitored loss)", value, TypeError)
    return array


def _improved(value, best, values: Values, relative: bool) -> jax.Array:
    """Whether ``value`` beats ``best`` by the threshold (a NaN value never does).

    ``rel``: ``value < best - threshold * |best|``, computed as torch's
    ``best * (1 - threshold)`` for ``best >= 0`` (the same rounding) and
    ``best * (1 + threshold)`` below 0; ``abs``: ``value < best - threshold``.
    """
    threshold = values["threshold"].astype(best.dtype)
    if not relative:
        return value < best - threshold
    below = values.complement("threshold").astype(best.dtype)
    return value < best * jnp.where(best >= 0, below, 1 + threshold)


def _store(factor, patience, threshold, relative, cooldown, min_scale, eps) -> Hyperparams:
    """The hyperparameters, checked when the transform is built."""
    hp = Hyperparams(
        factor=factor,
        patience=patience,
        threshold=threshold,
        cooldown=cooldown,
        min_scale=min_scale,
        eps=eps,
    )
    hp.check("factor", lower=0, upper=1, lower_open=True, upper_open=True)
    hp.check("patience", lower=0, integer=True).check("cooldown", lower=0, integer=True)
    hp.check("threshold", lower=0).check("min_scale", lower=0).check("eps", lower=0)
    if relative:
        hp.check("threshold", lower=0, upper=1, upper_open=True).use_complement("threshold")
    return hp


def _decide(state: ReduceOnPlateauState, loss, values: Values, relative: bool):
    """torch's ``scheduler.step(loss)``: the next scale, best value, plateau and cooldown counts."""
    best, dtype = state.best_value, state.scale.dtype
    loss = loss.astype(best.dtype)
    better = _improved(loss, best, values, relative)
    best = jnp.where(better, loss, best)
    bad = jnp.where(better, 0, increment_count(state.plateau_count))
    cooling = state.cooldown_count > 0
    cooldown_count = jnp.where(cooling, state.cooldown_count - 1, state.cooldown_count)
    bad = jnp.where(cooling, 0, bad)
    reduce = bad > values["patience"]
    lower = jnp.maximum(state.scale * values["factor"], values["min_scale"]).astype(dtype)
    scale = jnp.where(reduce & (state.scale - lower > values["eps"]), lower, state.scale)
    cooldown_count = jnp.where(reduce, values["cooldown"], cooldown_count)
    return scale, best, jnp.where(reduce, 0, bad), cooldown_count


def reduce_on_plateau(
    factor: ScalarOrSchedule = 0.1,
    patience: int = 10,
    threshold: ScalarOrSchedule = 1e-4,
    threshold_mode: str = "rel",
    cooldown: int = 0,
    min_scale: ScalarOrSchedule = 0.0,
    eps: ScalarOrSchedule = 1e-8,
) -> GradientTransformationExtraArgs:
    r"""Scales the updates by ``factor`` each time the monitored value stops improving.

    Each update takes the monitored loss as ``value=`` (``tx.update(updates,
    state, params, value=loss)``; :func:`gradxform.chain` forwards it) and
    decides inside the jitted update as torch's ``ReduceLROnPlateau(mode="min")``
    in ``scheduler.step(loss)``: :math:`v` improves on the best :math:`b` when
    :math:`v < b - \tau |b|` (``"rel"``) or :math:`v < b - \tau` (``"abs"``),
    which resets the plateau count (else it grows; a NaN never improves);
    during a cooldown the count stays 0; when it exceeds ``patience`` the
    scale becomes :math:`\max(\text{factor}\cdot s, \text{min\_scale})`
    unless that lowers it by ``eps`` or less, and the cooldown starts. The
    updates are multiplied by the new scale; ``state.scale`` then equals
    torch's ``lr / initial_lr`` after ``scheduler.step(loss)``.

    Unlike torch, ``"rel"`` uses :math:`|b|`: torch's ``b * (1 - threshold)``
    lies above a negative best, so a constant negative loss never reduces
    there (pytorch issue 38622, optax PR 1767); gradxform decides for
    negative losses as torch's ``mode="max"`` on the negated loss.
    ``min_scale`` and ``eps`` are fractions of the initial step (torch's
    ``min_lr`` and ``eps`` are learning rates: ``min_scale = min_lr / lr``,
    ``eps = 1e-8 / lr``); comparisons are float32 (float64 for float64
    params). optax's ``contrib.reduce_on_plateau`` with ``patience + 1`` and
    no ``eps`` decides the same for positive losses. Details and evidence:
    the :doc:`schedules guide </guide/schedules>`.

    Args:
        factor: in (0, 1), the factor applied at each reduction.
        patience: integer :math:`\geq 0`, the updates without improvement
            tolerated; the next one reduces.
        threshold: :math:`\tau \geq 0` (below 1 for ``"rel"``).
        threshold_mode: ``"rel"`` or ``"abs"``.
        cooldown: integer :math:`\geq 0`, updates after a reduction that count no plateau.
        min_scale: :math:`\geq 0`, the lowest scale.
        eps: :math:`\geq 0`, the smallest reduction of the scale that is made.

    Returns:
        The transform; its state is :class:`ReduceOnPlateauState` (the scale:
        ``optax.tree_utils.tree_get(state, "scale")``), its hyperparameters in
        the state (``gx.set_hyperparams(state, patience=3)``).

    Example:
        >>> import gradxform as gx, jax, jax.numpy as jnp
        >>> tx = gx.chain(gx.sgd(0.1), gx.reduce_on_plateau(factor=0.5, patience=1))
        >>> update, state, scales = jax.jit(tx.update), tx.init(jnp.zeros(1)), []
        >>> for loss in [3.0, 2.0, 2.0, 2.0, 1.0, 1.0, 1.0]:
        ...     _, state = update(jnp.ones(1), state, value=loss)
        ...     scales.append(float(state[1].scale))
        >>> scales
        [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25]
    """
    relative = checks.choice("threshold_mode", threshold_mode, ("rel", "abs")) == "rel"
    hp = _store(factor, patience, threshold, relative, cooldown, min_scale, eps)

    def init_fn(params):
        hyper = hp.init(params)
        assert isinstance(hyper, HyperparamState)  # the store owns every hyperparameter
        dtype = hyper.values["factor"].dtype  # float32, float64 for float64 params
        one, inf = jnp.ones([], dtype), jnp.asarray(jnp.inf, dtype)
        counts = [jnp.zeros([], jnp.int32) for _ in range(3)]  # distinct buffers: donatable
        return ReduceOnPlateauState(one, inf, *counts, hyper)

    def update_fn(updates, state, params=None, *, value=None, **extra_args):
        del params
        loss = _monitored(value)
        values, hyper = hp.step(state.hyperparams, extra_args)
        scale, best, bad, cooldown_count = _decide(state, loss, values, relative)
        count = increment_count(state.count)
        new_state = ReduceOnPlateauState(scale, best, bad, cooldown_count, count, hyper)
        return tree.scale(scale, updates), new_state

    return GradientTransformationExtraArgs(init_fn, update_fn)
