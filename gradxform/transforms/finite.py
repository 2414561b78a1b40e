"""Non-finite gradients: skip the step, keep the model, and give up loudly."""

from __future__ import annotations

import warnings
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

__all__ = ["ApplyIfFiniteState", "NonFiniteUpdatesError", "apply_if_finite", "raise_if_gave_up"]


class NonFiniteUpdatesError(FloatingPointError):
    """Raised when :func:`apply_if_finite` gives up.

    An update that runs outside ``jit`` raises it itself; a jitted update
    cannot raise a Python exception, so it records the fact in its state and
    :func:`raise_if_gave_up` raises this error outside ``jit``.
    """


class ApplyIfFiniteState(NamedTuple):
    """State of :func:`apply_if_finite`.

    Attributes:
        consecutive_skipped: non-finite steps in a row (0 after a finite one).
        total_skipped: non-finite steps since ``init``.
        last_finite: whether the latest step was applied.
        gave_up: whether ``max_consecutive_skips`` steps in a row have been
            skipped since ``init`` (it stays ``True``; :func:`raise_if_gave_up`
            raises when it is).
        inner_state: the wrapped transform's state, as of the last applied step.
        hyperparams: the store of ``max_consecutive_skips`` (int32;
            ``EmptyState()`` for a handle).
    """

    consecutive_skipped: jax.Array
    total_skipped: jax.Array
    last_finite: jax.Array
    gave_up: jax.Array
    inner_state: Any
    hyperparams: HyperparamState | EmptyState


def _all_finite(updates: Any) -> jax.Array:
    leaves = jax.tree.leaves(updates)
    if not leaves:
        return jnp.array(True)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def _message(consecutive, total) -> str:
    return (
        f"apply_if_finite gave up: {int(consecutive)} steps in a row had NaN or infinite "
        f"gradients or updates ({int(total)} skipped since init)"
    )


def _warn_gave_up(newly, consecutive, total):
    if np.any(newly):  # under vmap the cond below runs this for every batch member
        warnings.warn(
            _message(np.max(consecutive), np.max(total))
            + "; the updates stay zero; gx.raise_if_gave_up(state) raises",
            RuntimeWarning,
            stacklevel=2,
        )


def _report(newly, consecutive, total):
    """Raises at once when the values are concrete (no ``jit``); warns from a jitted step."""
    if isinstance(newly, jax.core.Tracer):
        jax.lax.cond(
            newly,
            lambda: jax.debug.callback(_warn_gave_up, newly, consecutive, total),
            lambda: None,
        )
    elif bool(newly):
        raise NonFiniteUpdatesError(_message(consecutive, total))


def raise_if_gave_up(state: Any) -> None:
    """Raises :class:`NonFiniteUpdatesError` if an :func:`apply_if_finite` in ``state`` gave up.

    A jitted update cannot raise a Python exception: when it gives up it
    records ``gave_up`` in its :class:`ApplyIfFiniteState`, keeps the updates
    at zero and warns (``RuntimeWarning``). Call this outside ``jit`` (every
    step, or every few steps: ``gave_up`` stays set) to stop the run with an
    error that ``except gx.NonFiniteUpdatesError`` catches.

    Args:
        state: an optimizer state, or any pytree holding one or more
            :class:`ApplyIfFiniteState` (a chain's state, a dict of states).

    Returns:
        ``None``, when no guard in ``state`` has given up.

    Raises:
        NonFiniteUpdatesError: a guard gave up.

    Example:
        >>> import gradxform as gx, jax, jax.numpy as jnp
        >>> tx = gx.apply_if_finite(gx.sgd(0.1), max_consecutive_skips=1)
        >>> state = tx.init(jnp.zeros(1))
        >>> import warnings
        >>> with warnings.catch_warnings(action="ignore"):  # the jitted step warns
        ...     _, state = jax.jit(tx.update)(jnp.array([jnp.nan]), state)
        >>> bool(state.gave_up)
        True
        >>> gx.raise_if_gave_up(state)
        Traceback (most recent call last):
        ...
        gradxform.transforms.finite.NonFiniteUpdatesError: apply_if_finite gave up: ...
    """
    guards = jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, ApplyIfFiniteState))
    for guard in guards:
        if not isinstance(guard, ApplyIfFiniteState):
            continue
        if isinstance(guard.gave_up, jax.core.Tracer):
            checks.fail("raise_if_gave_up's state", "concrete (call it outside jit)", guard.gave_up)
        if bool(jnp.any(guard.gave_up)):
            raise NonFiniteUpdatesError(_message(guard.consecutive_skipped, guard.total_skipped))


def apply_if_finite(
    inner: GradientTransformation, max_consecutive_skips: int | Hyperparam = 5
) -> GradientTransformationExtraArgs:
    """Runs ``inner``, but skips any step whose gradients or updates are not all finite.

    A skipped step returns zero updates and leaves ``inner``'s state as it was,
    so ``apply_updates`` leaves the params unchanged (``p + 0``) and the next
    finite step continues as if the bad one never happened. Skips are counted
    in the state (:class:`ApplyIfFiniteState`). When ``max_consecutive_skips``
    steps in a row are skipped, the guard gives up instead of skipping
    silently forever: an update run outside ``jit`` raises
    :class:`NonFiniteUpdatesError`; a jitted update (which cannot raise a
    Python exception) sets ``state.gave_up``, keeps the updates at zero and
    warns once (``RuntimeWarning``), and :func:`raise_if_gave_up` raises the
    error outside ``jit``. The limit is a hyperparameter:
    ``gx.set_hyperparams(state, max_consecutive_skips=10)`` changes it
    without recompiling.

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
        count = lambda: jnp.zeros([], jnp.int32)  # noqa: E731 (own buffers: donatable)
        return ApplyIfFiniteState(
            count(), count(), jnp.array(True), jnp.array(False), inner.init(params), hp.init(params)
        )

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
        total = state.total_skipped + jnp.where(finite, 0, 1).astype(jnp.int32)
        gave_up = state.gave_up | (consecutive >= limit)
        _report(gave_up & ~state.gave_up, consecutive, total)
        return out, ApplyIfFiniteState(consecutive, total, finite, gave_up, kept_inner, hyper)

    return GradientTransformationExtraArgs(init_fn, update_fn)
