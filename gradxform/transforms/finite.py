"""Non-finite gradients: skip the step, keep the model, and give up loudly."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform.base import GradientTransformation, GradientTransformationExtraArgs, with_extra_args

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
    """

    consecutive_skipped: jax.Array
    total_skipped: jax.Array
    last_finite: jax.Array
    inner_state: Any


def _all_finite(updates) -> jax.Array:
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
    inner: GradientTransformation, max_consecutive_skips: int = 5
) -> GradientTransformationExtraArgs:
    """Runs ``inner``, but skips any step whose gradients or updates are not all finite.

    A skipped step returns zero updates and leaves ``inner``'s state as it was,
    so ``apply_updates`` leaves the params unchanged (``p + 0``) and the next
    finite step continues as if the bad one never happened. Skips are counted
    in the state (:class:`ApplyIfFiniteState`). When ``max_consecutive_skips``
    steps in a row are skipped, the step raises :class:`NonFiniteUpdatesError`
    (through ``jax.debug.callback``; under ``jit`` it surfaces as a
    ``JaxRuntimeError`` carrying that message) instead of skipping forever.

    Args:
        inner: the transform to protect (any gradxform or optax transform).
        max_consecutive_skips: an integer >= 1.
    """
    if isinstance(max_consecutive_skips, bool) or not isinstance(max_consecutive_skips, int):
        raise TypeError(
            f"max_consecutive_skips must be an integer >= 1; got {max_consecutive_skips!r}"
        )
    if max_consecutive_skips < 1:
        raise ValueError(
            f"max_consecutive_skips must be an integer >= 1; got {max_consecutive_skips!r}"
        )
    inner = with_extra_args(inner)

    def init_fn(params):
        zero = jnp.zeros([], jnp.int32)
        return ApplyIfFiniteState(zero, zero, jnp.array(True), inner.init(params))

    def update_fn(updates, state, params=None, **extra_args):
        new_updates, new_inner = inner.update(updates, state.inner_state, params, **extra_args)
        finite = _all_finite(updates) & _all_finite(new_updates)
        out = jax.tree.map(lambda u: jnp.where(finite, u, jnp.zeros_like(u)), new_updates)
        kept_inner = jax.tree.map(
            lambda new, old: jnp.where(finite, new, old), new_inner, state.inner_state
        )
        consecutive = jnp.where(finite, 0, state.consecutive_skipped + 1)
        jax.lax.cond(
            consecutive >= max_consecutive_skips,
            lambda: jax.debug.callback(_give_up, consecutive, max_consecutive_skips),
            lambda: None,
        )
        total = state.total_skipped + jnp.where(finite, 0, 1).astype(jnp.int32)
        return out, ApplyIfFiniteState(consecutive.astype(jnp.int32), total, finite, kept_inner)

    return GradientTransformationExtraArgs(init_fn, update_fn)
