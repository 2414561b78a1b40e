"""Hyperparameters that live in the optimizer state.

Every numeric hyperparameter of a gradxform transform (learning rate,
momentum, decays, eps, weight decay, ...) is either a number or a schedule
(a function of the step count). Either way its current value is stored in the
transform's state, in a :class:`HyperparamState`, so that

* it can be read by name: ``gx.get_hyperparams(opt_state)["learning_rate"]``;
* it can be changed between steps without recompiling a jitted step:
  ``opt_state = gx.set_hyperparams(opt_state, learning_rate=1e-4)`` (a value
  set on a scheduled hyperparameter is replaced by the schedule at the next
  step);
* a schedule is evaluated at the number of updates taken so far: 0 at the
  first update, and the value stored is the one the latest update used.

Values are stored as float32, or float64 when a parameter leaf is float64 (or
complex128), and cast to each leaf's dtype where they are used. For a number
given in Python, the rounding residual of its float32 copy is kept beside it,
so that ``1 - decay`` is the float32 rounding of the exact ``1 - decay``, as
when optax or torch compute it in Python (:meth:`Values.complement`).
"""

from __future__ import annotations

import numbers
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradxform import tree

__all__ = [
    "HyperparamState",
    "Hyperparams",
    "Values",
    "check_decay",
    "check_nonnegative",
    "increment_count",
    "get_hyperparams",
    "set_hyperparams",
]

_INT32_MAX = np.iinfo(np.int32).max


def increment_count(count: jax.Array) -> jax.Array:
    """``count + 1``, saturating at ``2**31 - 1`` instead of overflowing (int32 counts)."""
    return jnp.where(count < _INT32_MAX, count + 1, count)


class HyperparamState(NamedTuple):
    """The hyperparameter part of a transform's state.

    Attributes:
        count: number of updates taken, int32, saturating at ``2**31 - 1``.
        values: name -> value used by the latest update (before the first
            update: the value the first update will use, for numbers).
        residuals: name -> rounding residual of ``values`` (0 for schedules).
    """

    count: jax.Array
    values: dict[str, jax.Array]
    residuals: dict[str, jax.Array]


def _is_number(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _concrete(x):
    """A Python float for a number or concrete scalar array, else None."""
    if _is_number(x):
        return float(x)
    if isinstance(x, (np.ndarray, np.generic, jax.Array)) and not isinstance(x, jax.core.Tracer):
        if np.ndim(x) == 0 and not jnp.iscomplexobj(x):
            return float(x)
    return None


def _check_type(name: str, value) -> None:
    if callable(value) or _is_number(value):
        return
    if isinstance(value, (np.ndarray, np.generic, jax.Array)) and np.ndim(value) == 0:
        return
    raise TypeError(
        f"{name} must be a real number, a scalar array or a schedule "
        f"(a function of the step count); got {value!r}"
    )


def _check_schedule(name: str, schedule) -> None:
    """Evaluates a schedule at step 0 when the transform is built: a real, finite scalar."""
    try:
        value = jax.eval_shape(schedule, jax.ShapeDtypeStruct((), jnp.int32))
    except Exception as error:  # the schedule's own error, with the argument named
        raise TypeError(
            f"{name}: the schedule failed when called with a scalar int32 step count: {error}"
        ) from error
    if (
        getattr(value, "shape", None) != ()
        or not jnp.issubdtype(value.dtype, jnp.number)
        or (jnp.issubdtype(value.dtype, jnp.complexfloating))
    ):
        raise TypeError(
            f"{name}: a schedule must return a real scalar; it returned "
            f"{getattr(value, 'shape', value)} {getattr(value, 'dtype', '')}".rstrip()
        )
    first = np.asarray(schedule(jnp.zeros([], jnp.int32)))
    if not np.isfinite(first):
        raise ValueError(f"{name}: the schedule returned {first} at step 0; it must be finite")


def check_nonnegative(name: str, value) -> None:
    """Raises ``ValueError`` naming ``name`` unless ``value >= 0`` (schedules pass)."""
    _check_type(name, value)
    v = _concrete(value)
    if v is not None and not v >= 0:
        raise ValueError(f"{name} must be >= 0; got {value!r}")


def check_decay(name: str, value, *, allow_one: bool = False) -> None:
    """Raises ``ValueError`` naming ``name`` unless ``0 <= value < 1`` (or ``<= 1``)."""
    _check_type(name, value)
    v = _concrete(value)
    if v is None:
        return
    ok = 0 <= v <= 1 if allow_one else 0 <= v < 1
    if not ok:
        bound = "[0, 1]" if allow_one else "[0, 1)"
        raise ValueError(f"{name} must lie in {bound}; got {value!r}")


def _storage_dtype(params) -> np.dtype:
    for leaf in jax.tree.leaves(params):
        dtype = jnp.asarray(leaf).dtype
        if dtype in (np.dtype("float64"), np.dtype("complex128")):
            return np.dtype("float64")
    return np.dtype("float32")


class Values(dict):
    """The current hyperparameter values: a ``dict`` name -> scalar array."""

    def __init__(self, values: dict, residuals: dict):
        super().__init__(values)
        self._residuals = residuals

    def complement(self, name: str) -> jax.Array:
        """``1 - value``, rounded once from the exact difference."""
        return (1 - self[name]) - self._residuals[name]


class Hyperparams:
    """The static description of a transform's hyperparameters.

    Built once in a transform's factory from keyword arguments, each a number,
    a scalar array or a schedule. ``init`` makes the :class:`HyperparamState`;
    ``step`` returns the values for this update and the next state.
    """

    def __init__(self, **specs: Any):
        for name, value in specs.items():
            _check_type(name, value)
            if callable(value):
                _check_schedule(name, value)
        self.specs = specs

    def init(self, params) -> HyperparamState:
        tree.check_params(params)
        dtype = _storage_dtype(params)
        values, residuals = {}, {}
        for name, spec in self.specs.items():
            if callable(spec):
                value = jnp.asarray(spec(jnp.zeros([], jnp.int32)), dtype)
                residual = jnp.zeros([], dtype)
            elif _is_number(spec):
                value, residual = _split(float(spec), dtype)
            else:
                value = jnp.asarray(spec, dtype)
                residual = jnp.zeros([], dtype)
            values[name], residuals[name] = value, residual
        return HyperparamState(jnp.zeros([], jnp.int32), values, residuals)

    def step(self, state: HyperparamState) -> tuple[Values, HyperparamState]:
        values, residuals = dict(state.values), dict(state.residuals)
        for name, spec in self.specs.items():
            if callable(spec):
                dtype = state.values[name].dtype
                values[name] = jnp.asarray(spec(state.count), dtype)
                residuals[name] = jnp.zeros([], dtype)
        count = increment_count(state.count)
        return Values(values, residuals), HyperparamState(count, values, residuals)


def _split(value: float, dtype) -> tuple[jax.Array, jax.Array]:
    stored = np.asarray(value, dtype)
    residual = np.asarray(value - float(stored), dtype)
    return jnp.asarray(stored), jnp.asarray(residual)


def _is_hyperparam_state(x) -> bool:
    return isinstance(x, HyperparamState)


def get_hyperparams(opt_state) -> dict[str, jax.Array]:
    """Reads every hyperparameter in an optimizer state, by name.

    A name used by several transforms of a chain (``b1`` in Adam's first
    moment and its bias correction) appears once, with the first value found.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> state = gx.adam(1e-3).init(jnp.zeros(3))
        >>> sorted(gx.get_hyperparams(state))
        ['b1', 'b2', 'eps', 'eps_root', 'learning_rate']
    """
    found: dict[str, jax.Array] = {}
    for node in jax.tree.leaves(opt_state, is_leaf=_is_hyperparam_state):
        if _is_hyperparam_state(node):
            for name, value in node.values.items():
                found.setdefault(name, value)
    return found


def set_hyperparams(opt_state, **values) -> Any:
    """Returns ``opt_state`` with the named hyperparameters set everywhere they occur.

    The new values keep the stored dtype and shape, so a jitted step that takes
    the state as an argument does not recompile.

    Raises:
        ValueError: if a name is not a hyperparameter of the state.
    """
    known = get_hyperparams(opt_state)
    for name, value in values.items():
        if name not in known:
            raise ValueError(
                f"set_hyperparams: {name!r} is not a hyperparameter of this state; "
                f"it has {sorted(known)}"
            )
        _check_type(name, value)
        if callable(value):
            raise TypeError(
                f"set_hyperparams: {name} must be a number or scalar array, not a "
                "schedule; build the transform with the schedule instead"
            )

    def replace(node):
        if not _is_hyperparam_state(node):
            return node
        new_values, new_residuals = dict(node.values), dict(node.residuals)
        for name, value in values.items():
            if name in new_values:
                dtype = new_values[name].dtype
                if _is_number(value):
                    new_values[name], new_residuals[name] = _split(float(value), dtype)
                else:
                    new_values[name] = jnp.asarray(value, dtype)
                    new_residuals[name] = jnp.zeros([], dtype)
        return node._replace(values=new_values, residuals=new_residuals)

    return jax.tree.map(replace, opt_state, is_leaf=_is_hyperparam_state)
