"""Non-finite gradients: skip the step, keep the model, and give up loudly."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradxform import checks
from gradxform.base import (
    EmptyState,
    GradientTransformation,
    GradientTransformationExtraArgs,
    with_extra_args,
)
from gradxform.hyperparams import Hyperparam, Hyperparams, HyperparamState

__all__ = ["ApplyIfFiniteState", "NonFiniteUpdatesError", "apply_if_finite"]


class NonFiniteUpdatesError(FloatingPointError):
    """Raised (through the jitted step) when :func:`apply_if_finite` gives up."""


class ApplyIfFiniteState(NamedTuple):
    """State of :func:`apply_if_finite`.

    Attributes:
        consecutive_skipped: non-finite steps in a row (0 after a finite one).
        total_skipped: non-finite steps since ``init``.
        last_finite: whether the latest step was applied.
        inner_state: the wrapped transform's state, as of the last applied step.
        hyperparams: the store of ``max_consecutive_skips`` (int32;
            ``EmptyState()`` for a handle).
    """

    consecutive_skipped: jax.Array
    total_skipped: jax.Array
    last_finite: jax.Array
    inner_state: Any
    hyperparams: HyperparamState | EmptyState


def _all_finite(updates: Any) -> jax.Array:
    leaves = jax.tree.leaves(updates)
    if not leaves:
        return jnp.array(True)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def _give_up(consecutive, limit):
    raise NonFiniteUpdatesError(
        f"apply_if_finite: {int(consecutive)} steps in a row had NaN or infinite gradients "
        f"or updates (max_consecutive_skips={int(limit)}); giving up instead of skipping on"
    )


def apply_if_finite(
    inner: GradientTransformation, max_consecutive_skips: int | Hyperparam = 5
) -> GradientTransformationExtraArgs:
    """Runs ``inner``, but skips any step whose gradients or updates are not all finite.

    A skipped step returns zero updates and leaves ``inner``'s state as it was,
    so ``apply_updates`` leaves the params unchanged (``p + 0``) and the next
    finite step continues as if the bad one never happened. Skips are counted
    in the state (:class:`ApplyIfFiniteState`). When ``max_consecutive_skips``
    steps in a row are skipped, the step raises :class:`NonFiniteUpdatesError`
    (through ``jax.debug.callback``; under ``jit`` it surfaces as a
    ``JaxRuntimeError`` carrying that message) instead of skipping forever.
    The limit is a hyperparameter: ``gx.set_hyperparams(state,
    max_consecutive_skips=10)`` changes it without recompiling.

    Args:
        inner: the transform to protect (any gradxform or optax transform).
        max_consecutive_skips: an integer >= 1 (a number, an integer scalar array
            or a handle of a store).

    Returns:
        The guarded transform; its state is :class:`ApplyIfFiniteState`.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.apply_if_finite(gx.sgd(0.1), max_consecutive_skips=3)
        >>> u, state = tx.update(jnp.array([jnp.nan]), tx.init(jnp.zeros(1)))
        >>> float(u[0]), int(state.total_skipped)
        (0.0, 1)
    """
    if not isinstance(max_consecutive_skips, (Hyperparam, jax.Array, np.ndarray)):
        checks.integer("max_consecutive_skips", max_consecutive_skips, minimum=1)
    hp = Hyperparams(max_consecutive_skips=max_consecutive_skips)
    hp.check("max_consecutive_skips", lower=1, integer=True)
    inner = with_extra_args(inner)

    def init_fn(params):
        zero = jnp.zeros([], jnp.int32)
        return ApplyIfFiniteState(zero, zero, jnp.array(True), inner.init(params), hp.init(params))

    def update_fn(updates, state, params=None, **extra_args):
        values, hyper = hp.step(state.hyperparams, extra_args)
        limit = values["max_consecutive_skips"]
        new_updates, new_inner = inner.update(updates, state.inner_state, params, **extra_args)
        finite = _all_finite(updates) & _all_finite(new_updates)
        out = jax.tree.map(lambda u: jnp.where(finite, u, jnp.zeros_like(u)), new_updates)
        kept_inner = jax.tree.map(
            lambda new, old: jnp.where(finite, new, old), new_inner, state.inner_state
        )
        consecutive = jnp.where(finite, 0, state.consecutive_skipped + 1).astype(jnp.int32)
        jax.lax.cond(
            consecutive >= limit,
            lambda: jax.debug.callback(_give_up, consecutive, limit),
            lambda: None,
        )
        total = state.total_skipped + jnp.where(finite, 0, 1).astype(jnp.int32)
        return out, ApplyIfFiniteState(consecutive, total, finite, kept_inner, hyper)

    return GradientTransformationExtraArgs(init_fn, update_fn)
