"""Shared pieces of the schedules: argument checks, count handling, accurate cosines."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gradxform import checks
from gradxform.base import Schedule

_INT32_MAX = int(np.iinfo(np.int32).max)


def _dtype():
    """float32, or float64 while ``jax_enable_x64`` is on (JAX's default float)."""
    return jnp.result_type(float)


# --- argument checks ----------------------------------------------------------------


def _real(name: str, value, *, positive: bool = False, nonnegative: bool = False) -> float:
    if positive or nonnegative:
        return checks.real(name, value, lower=0, lower_open=positive)
    return checks.real(name, value)


def _steps(name: str, value, *, positive: bool = True) -> int:
    return checks.integer(name, value, minimum=1 if positive else 0, maximum=_INT32_MAX)


def _increasing(name: str, boundaries: Sequence[int]) -> list[int]:
    out = [_steps(f"{name}[{i}]", b, positive=False) for i, b in enumerate(boundaries)]
    for i in range(1, len(out)):
        if out[i] <= out[i - 1]:
            raise ValueError(
                f"{name} must be strictly increasing; got {out[i - 1]} then {out[i]} at "
                f"positions {i - 1} and {i}"
            )
    return out


# --- count handling -----------------------------------------------------------------


def _count(count) -> jax.Array:
    """The count as a non-negative integer array (its own integer dtype)."""
    c = jnp.asarray(count)
    if not jnp.issubdtype(c.dtype, jnp.integer):
        raise TypeError(f"count must be an integer step count; got dtype {c.dtype}")
    return jnp.maximum(c, 0)


def _since(count, begin: int) -> jax.Array:
    """``max(count - begin, 0)``, never overflowing (both are non-negative)."""
    c = _count(count)
    return jnp.maximum(c - jnp.asarray(begin, c.dtype), 0) if begin else c


def _float(c: jax.Array) -> jax.Array:
    return c.astype(_dtype())


def _real_array(x: float) -> jax.Array:
    return jnp.asarray(x, _dtype())


def _cos_half_squared(done: jax.Array, total) -> jax.Array:
    """``(1 + cos(pi * done / total)) / 2`` for ``0 <= done <= total``, without cancellation.

    Equals ``cos(pi d / 2T)**2``, computed as ``sin(pi (T - d) / 2T)**2`` in the
    second half where the cosine is small.
    """
    total = jnp.asarray(total, _dtype())
    done = done.astype(_dtype())
    first = jnp.cos(jnp.pi * done / (2 * total)) ** 2
    second = jnp.sin(jnp.pi * (total - done) / (2 * total)) ** 2
    return jnp.where(2 * done <= total, first, second)


def evaluate(schedule: Schedule, num_steps: int, start: int = 0) -> np.ndarray:
    """``schedule`` at counts ``start, ..., start + num_steps - 1``, as a NumPy array.

    One jitted, vectorised call: the helper for plots and tables.

    Args:
        schedule: any schedule (a function of an integer count).
        num_steps: how many counts, at least 1.
        start: the first count.

    Returns:
        A NumPy array of ``num_steps`` values.

    Example:
        >>> import gradxform as gx
        >>> gx.schedules.evaluate(gx.schedules.step_decay(1.0, 0.5, 10), 2, start=9).tolist()
        [1.0, 0.5]
    """
    n = _steps("num_steps", num_steps)
    s = _steps("start", start, positive=False)
    counts = jnp.arange(n, dtype=jnp.int32) + s
    return np.asarray(jax.jit(jax.vmap(schedule))(counts))
