"""The valid ranges of hyperparameters: :class:`Limit` and :class:`Limits`."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradxform import checks

__all__ = ["Limit", "Limits"]


def concrete(value: Any) -> float | None:
    """A Python float for a number or a concrete real scalar array, else ``None``."""
    if checks.is_real_number(value):
        return float(value)
    if isinstance(value, (np.ndarray, np.generic, jax.Array)) and not isinstance(
        value, jax.core.Tracer
    ):
        return float(value) if is_real_scalar_array(value) else None
    return None


def is_real_scalar_array(value: Any) -> bool:
    """Whether ``value`` is a 0-d integer or real floating array (numpy or jax)."""
    if not isinstance(value, (np.ndarray, np.generic, jax.Array)) or np.ndim(value) != 0:
        return False
    kind = np.dtype(value.dtype).kind
    return kind in "iuf" or value.dtype == jnp.bfloat16


@dataclasses.dataclass(frozen=True)
class Limit:
    """A valid range of a hyperparameter, declared by a block that reads it.

    Made by :meth:`Hyperparams.check`; the same limit checks the value when
    the block is built, every value :func:`set_hyperparams` sets, and clamps
    a schedule's values at run time.

    Args:
        lower, upper: the bounds (``None``: unbounded), closed unless ``*_open``.
        lower_open, upper_open: exclude the bound.
        integer: the value must be an integer (stored as int32).
    """

    lower: float | None = None
    upper: float | None = None
    lower_open: bool = False
    upper_open: bool = False
    integer: bool = False

    def check(self, name: str, value: Any) -> None:
        """Raises unless ``value`` (a number, a concrete array or a schedule) lies in the range.

        A traced value (inside ``jit``) cannot be checked and passes; a
        schedule is checked at step 0.

        Args:
            name: the name the error gives.
            value: the value.

        Raises:
            TypeError, ValueError: ``<name> must be <what>; got <value>``.
        """
        if isinstance(value, jax.core.Tracer):
            return
        if self.integer:
            if is_real_scalar_array(value) and jnp.issubdtype(value.dtype, jnp.integer):
                value = int(value)
            lower = None if self.lower is None else int(self.lower)
            checks.integer(name, value, minimum=lower)
            return
        bounds = dataclasses.asdict(self)
        del bounds["integer"]
        if not callable(value):
            number = concrete(value)
            checks.real(name, value if number is None else number, **bounds)
            return
        first = float(str(np.asarray(value(jnp.zeros([], jnp.int32)))))  # as its dtype prints
        try:
            checks.real(name, first, **bounds)
        except ValueError as error:  # the same range, said of the schedule
            what = str(error).removeprefix(f"{name} must be ").rsplit("; got ", 1)[0]
            checks.fail(name, f"a schedule whose value at step 0 is {what}", first)

    def __str__(self) -> str:
        left = "(" if self.lower_open or self.lower is None else "["
        right = ")" if self.upper_open or self.upper is None else "]"
        low = "-inf" if self.lower is None else self.lower
        high = "inf" if self.upper is None else self.upper
        return f"{'integer in ' if self.integer else ''}{left}{low}, {high}{right}"

    def clamp(self, value: jax.Array) -> jax.Array:
        """``value`` moved into the range (the nearest value inside); NaN stays NaN.

        Args:
            value: a scalar array.

        Returns:
            The clamped scalar, of ``value``'s dtype.
        """
        floating = jnp.issubdtype(value.dtype, jnp.floating)
        if self.lower is not None:
            low = jnp.asarray(self.lower, value.dtype)
            if self.lower_open and floating:
                low = jnp.nextafter(low, jnp.asarray(jnp.inf, value.dtype))
            value = jnp.where(value < low, low, value)
        if self.upper is not None:
            high = jnp.asarray(self.upper, value.dtype)
            if self.upper_open and floating:
                high = jnp.nextafter(high, jnp.asarray(-jnp.inf, value.dtype))
            value = jnp.where(value > high, high, value)
        return value


@dataclasses.dataclass(frozen=True)
class Limits:
    """The ranges the blocks declared for a store's hyperparameters.

    A static part of :class:`HyperparamState`: it holds no arrays (a pytree
    node without leaves), so it is saved, restored and traced as structure.

    Args:
        by_name: ``(name, (limit, ...))`` pairs, for the names that have limits.
    """

    by_name: tuple[tuple[str, tuple[Limit, ...]], ...] = ()

    def get(self, name: str) -> tuple[Limit, ...]:
        """The limits of ``name`` (empty if it has none).

        Args:
            name: a hyperparameter's name in the state.

        Returns:
            Its limits.
        """
        return dict(self.by_name).get(name, ())

    def __repr__(self) -> str:
        said = (f"{name} in {' and '.join(map(str, limits))}" for name, limits in self.by_name)
        return f"Limits({', '.join(said)})"


jax.tree_util.register_static(Limits)
