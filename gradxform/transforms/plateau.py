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

    Each update takes the monitored loss as the extra argument ``value``
    (``tx.update(updates, state, params, value=loss)``; :func:`gradxform.chain`
    forwards it) and decides, inside the jitted update, as torch's
    ``ReduceLROnPlateau(mode="min")`` decides in ``scheduler.step(loss)``:

    * the value improves on the best so far :math:`b` when :math:`v < b -
      \tau |b|` (``threshold_mode="rel"``) or :math:`v < b - \tau` (``"abs"``);
      then :math:`b \leftarrow v` and the plateau count is reset to 0,
      otherwise it grows by 1 (a NaN value never improves);
    * during a cooldown the count stays 0 and the cooldown counts down;
    * when the count exceeds ``patience``, the scale becomes
      :math:`s \leftarrow \max(\text{factor}\cdot s, \text{min\_scale})`,
      unless that lowers it by ``eps`` or less; the count is reset and the
      cooldown starts (``cooldown`` updates).

    The updates are then multiplied by the new scale, so the update that sees
    a plateau already takes the smaller step; ``state.scale`` after an update
    equals torch's ``lr / initial_lr`` after ``scheduler.step(loss)`` with the
    same losses (``tests/test_plateau.py``). Put it after the optimizer:
    ``gx.chain(gx.adam(1e-3), gx.reduce_on_plateau(patience=5))``.

    Where gradxform differs from torch, and why:

    * ``rel`` thresholds use :math:`|b|`. torch's ``best * (1 - threshold)``
      is the same for :math:`b \ge 0`, but for a negative best it lies above
      :math:`b`, so a slightly worse value counts as an improvement and a
      constant negative loss never reduces the step (pytorch issues 38622,
      47513; optax's ``contrib.reduce_on_plateau``, optax PR 1767). For
      negative losses gradxform decides as torch's ``mode="max"`` on the
      negated loss.
    * ``min_scale`` and ``eps`` are fractions of the initial step: torch's
      ``min_lr`` and ``eps`` (1e-8 by default) are learning rates, so torch on
      a learning rate :math:`\eta` is ``min_scale = min_lr / lr`` and ``eps =
      1e-8 / lr``. As in torch, a reduction of ``eps`` or less is skipped (the
      count is still reset and the cooldown started): with the default
      ``eps`` the scale stops near 1e-8.
    * The comparisons are made in float32 (float64 when a parameter is
      float64); torch's in Python floats. Decisions differ only for a value
      within a float32 rounding of the threshold.

    optax's ``contrib.reduce_on_plateau(factor, patience, rtol, atol,
    cooldown, accumulation_size, min_scale)`` decides as
    ``reduce_on_plateau(factor, patience - 1, ..., eps=0)`` for positive
    losses: it reduces after ``patience`` bad updates where torch and
    gradxform wait for ``patience + 1`` (with ``patience=0`` it reduces at
    every improving update and never on a plateau), has no ``eps``, tests
    ``v < (1 - rtol) b - atol`` (so negative losses as torch's ``rel``), and
    with ``accumulation_size = k`` decides on the mean of every ``k`` values;
    here, average the values before passing them (or pass a validation loss).

    Args:
        factor: in (0, 1), the factor applied at each reduction.
        patience: integer :math:`\geq 0`, the updates without improvement
            tolerated; the next one reduces.
        threshold: :math:`\tau \geq 0` (below 1 for ``rel``), the improvement
            that counts.
        threshold_mode: ``"rel"`` or ``"abs"``.
        cooldown: integer :math:`\geq 0`, the updates after a reduction during
            which no improvement is counted.
        min_scale: :math:`\geq 0`, the lowest scale.
        eps: :math:`\geq 0`, the smallest reduction of the scale that is made.

    Returns:
        The transform; its state is :class:`ReduceOnPlateauState`, whose
        ``scale`` is the current factor
        (``optax.tree_utils.tree_get(state, "scale")`` inside a chain). The
        hyperparameters are in the state: ``gx.set_hyperparams(state,
        patience=3)`` changes one without recompiling.

    Example:
        >>> import gradxform as gx, jax, jax.numpy as jnp
        >>> tx = gx.chain(gx.sgd(0.1), gx.reduce_on_plateau(factor=0.5, patience=1))
        >>> update = jax.jit(tx.update)
        >>> state = tx.init(jnp.zeros(1))
        >>> scales = []
        >>> for loss in [3.0, 2.0, 2.0, 2.0, 1.0, 1.0, 1.0]:
        ...     _, state = update(jnp.ones(1), state, value=loss)
        ...     scales.append(float(state[1].scale))
        >>> scales
        [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25]
    """
    mode = checks.choice("threshold_mode", threshold_mode, ("rel", "abs"))
    relative = mode == "rel"
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
        bad = jnp.where(reduce, 0, bad)
        count = increment_count(state.count)
        new_state = ReduceOnPlateauState(scale, best, bad, cooldown_count, count, hyper)
        return tree.scale(scale, updates), new_state

    return GradientTransformationExtraArgs(init_fn, update_fn)
