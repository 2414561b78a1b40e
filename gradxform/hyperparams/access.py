"""Reading and setting the hyperparameters of any optimizer state, by name."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from gradxform import checks
from gradxform.hyperparams.limits import Limit
from gradxform.hyperparams.store import (
    HyperparamState,
    check_spec,
    complement_key,
    exact_complement,
    override_key,
    stored,
)

__all__ = ["get_hyperparams", "set_hyperparams"]


def _is_hyperparam_state(x: Any) -> bool:
    return isinstance(x, HyperparamState)


def get_hyperparams(opt_state: Any) -> dict[str, jax.Array]:
    """Reads every hyperparameter in an optimizer state, by name.

    Args:
        opt_state: the state of any transform (gradxform's, or an optax chain
            holding gradxform transforms).

    Returns:
        Name -> current value. A name held by two stores (two optimizers
        chained by hand) appears once, with the first value found.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> state = gx.adam(1e-3).init(jnp.zeros(3))
        >>> sorted(gx.get_hyperparams(state))
        ['b1', 'b2', 'eps', 'eps_root', 'learning_rate']
    """
    found: dict[str, jax.Array] = {}
    for node in _hyperparam_states(opt_state):
        for name, value in node.values.items():
            found.setdefault(name, value)
    return found


def _hyperparam_states(opt_state: Any) -> list[HyperparamState]:
    nodes = jax.tree.leaves(opt_state, is_leaf=_is_hyperparam_state)
    return [node for node in nodes if _is_hyperparam_state(node)]


def _check_new_value(name: str, value: Any, stores: list[HyperparamState]) -> None:
    """The checks the blocks made when built (each store's limits), for a concrete value."""
    holders = [node for node in stores if name in node.values]
    if not holders:
        known = sorted({key for node in stores for key in node.values})
        checks.fail(name, f"a hyperparameter of this state (one of {', '.join(known)})", value)
    if value is None:
        if not all(override_key(name) in node.overrides for node in holders):
            what = "a number or a scalar array (None clears a value set on a scheduled "
            checks.fail(name, what + "hyperparameter, and this one is not scheduled)", value)
        return
    if callable(value):
        what = "a number or a scalar array (a schedule is fixed when the transform is built)"
        checks.fail(name, what, value, TypeError)
    check_spec(name, value)
    for node in holders:
        integer = jnp.issubdtype(jnp.result_type(node.values[name]), jnp.integer)
        for limit in node.limits.get(name) or (Limit(integer=integer),):
            limit.check(name, value)


def _replaced(node: HyperparamState, values: dict[str, Any]) -> HyperparamState:
    """``node`` with the values set (a scheduled one marked set, or cleared by ``None``)."""
    new_values, new_complements = dict(node.values), dict(node.complements)
    overrides = dict(node.overrides)
    for name, value in values.items():
        if name not in new_values:
            continue
        if override_key(name) in overrides:
            overrides[override_key(name)] = jnp.asarray(value is not None)
        if value is None:
            continue
        new_values[name] = stored(value, jnp.result_type(new_values[name]))
        key = complement_key(name)
        if key in new_complements:
            new_complements[key] = exact_complement(value, new_values[name])
    return node._replace(values=new_values, complements=new_complements, overrides=overrides)


def set_hyperparams(opt_state: Any, **values: float | jax.Array | None) -> Any:
    """Returns ``opt_state`` with the named hyperparameters set, and their complements.

    The new values keep the stored dtype and shape, so a jitted step that
    takes the state as an argument does not recompile. The next update equals
    that of a transform built with the new values. Each value is checked as
    when the transform was built (``learning_rate >= 0``, decays in
    ``[0, 1)``, ...); a value traced inside ``jit`` cannot be, and is not.

    A value set on a scheduled hyperparameter replaces the schedule until it
    is cleared with ``None`` (``set_hyperparams(state, learning_rate=None)``);
    the step count keeps advancing meanwhile, so the schedule resumes where
    it would have been.

    Args:
        opt_state: an optimizer state.
        **values: name -> new number or scalar array, or ``None`` to hand a
            scheduled hyperparameter back to its schedule.

    Returns:
        The state with the values replaced wherever the names occur.

    Raises:
        ValueError: if a name is not a hyperparameter of the state, a value
            lies outside the range its blocks accept, or ``None`` is given
            for a hyperparameter that is not scheduled.
        TypeError: for a schedule or a value that is not a real scalar.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> state = gx.set_hyperparams(gx.adam(1e-3).init(jnp.zeros(3)), b1=0.5)
        >>> float(gx.get_hyperparams(state)["b1"])
        0.5
    """
    stores = _hyperparam_states(opt_state)
    for name, value in values.items():
        _check_new_value(name, value, stores)

    def replace(node):
        return _replaced(node, values) if _is_hyperparam_state(node) else node

    return jax.tree.map(replace, opt_state, is_leaf=_is_hyperparam_state)
