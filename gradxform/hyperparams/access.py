"""Reading and setting the hyperparameters of any optimizer state, by name."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from gradxform import checks
from gradxform.base import GradientTransformation, GradientTransformationExtraArgs, with_extra_args
from gradxform.hyperparams.limits import Limit
from gradxform.hyperparams.store import (
    Constant,
    HyperparamState,
    check_spec,
    complement_key,
    current,
    exact_complement,
    override_key,
    stored,
)

__all__ = ["constant_hyperparams", "get_hyperparams", "set_hyperparams"]


def _is_hyperparam_state(x: Any) -> bool:
    return isinstance(x, HyperparamState)


def _is_partition_state(x: Any) -> bool:
    """A partition's state, by duck typing: gradxform's and ``optax.partition``'s.

    (``hyperparams`` sits below ``transforms`` in the import graph, so it names
    no transform's state class.)
    """
    return isinstance(getattr(x, "inner_states", None), Mapping) and hasattr(x, "_replace")


def _is_node(x: Any) -> bool:
    return _is_hyperparam_state(x) or _is_partition_state(x)


Group = tuple[str, ...]  # the labels of the partitions around a store, outermost first


def _layout(opt_state: Any, group: Group = ()) -> tuple[list[tuple[Group, Any]], list[Group]]:
    """Every store with its group, and the innermost groups (partition labels holding
    no further partition), in the order the state's leaves are."""
    stores: list[tuple[Group, Any]] = []
    groups: list[Group] = []
    for node in jax.tree.leaves(opt_state, is_leaf=_is_node):
        if _is_hyperparam_state(node):
            stores.append((group, node))
        elif _is_partition_state(node):
            for label, inner in node.inner_states.items():
                inner_stores, inner_groups = _layout(inner, (*group, str(label)))
                stores += inner_stores
                groups += [g for g in inner_groups or [(*group, str(label))] if g not in groups]
    return stores, groups


def _map_stores(opt_state: Any, fn: Callable[[Group, Any], Any], group: Group = ()) -> Any:
    """``opt_state`` with each store replaced by ``fn(its group, store)``."""

    def visit(node):
        if _is_hyperparam_state(node):
            return fn(group, node)
        if _is_partition_state(node):
            inner = {
                label: _map_stores(state, fn, (*group, str(label)))
                for label, state in node.inner_states.items()
            }
            return node._replace(inner_states=inner)
        return node

    return jax.tree.map(visit, opt_state, is_leaf=_is_node)


def _within(group: Group, outer: Group) -> bool:
    return group[: len(outer)] == outer


def get_hyperparams(opt_state: Any) -> dict[str, Any]:
    """Reads every hyperparameter in an optimizer state, by name (and by group).

    For a state holding a partition (:func:`gradxform.partition`,
    :func:`gradxform.freeze`, or ``optax.partition``), the result is
    ``{group: {name: value}}``, one entry per group. A group's dict also holds
    the hyperparameters of the transforms around the partition (the
    ``max_consecutive_skips`` of an ``apply_if_finite`` wrapping it): they
    apply to that group's parameters too. The groups of a partition nested in
    a group are named ``"outer.inner"``.

    Args:
        opt_state: the state of any transform (gradxform's, or an optax chain
            holding gradxform transforms).

    Returns:
        Name -> current value; for a partitioned state, group -> (name ->
        value). A name held by two stores (two optimizers chained by hand)
        appears once, with the value of the innermost (then the first) store
        found.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> state = gx.adam(1e-3).init(jnp.zeros(3))
        >>> sorted(gx.get_hyperparams(state))
        ['b1', 'b2', 'eps', 'eps_root', 'learning_rate']
        >>> tx = gx.partition({"a": gx.sgd(0.25), "b": gx.adam(1e-3)}, ("a", "b"))
        >>> hyper = gx.get_hyperparams(tx.init((jnp.zeros(2), jnp.zeros(3))))
        >>> float(hyper["a"]["learning_rate"]), sorted(hyper["b"])
        (0.25, ['b1', 'b2', 'eps', 'eps_root', 'learning_rate'])
    """
    stores, groups = _layout(opt_state)
    if not groups:
        return _read([node for _, node in stores])
    innermost_first = sorted(stores, key=lambda item: -len(item[0]))
    return {
        ".".join(g): _read([node for owner, node in innermost_first if _within(g, owner)])
        for g in groups
    }


def _read(stores: list[HyperparamState]) -> dict[str, jax.Array]:
    found: dict[str, jax.Array] = {}
    for node in stores:
        for name, value in node.values.items():
            found.setdefault(name, current(value))
    return found


def _hyperparam_states(opt_state: Any) -> list[HyperparamState]:
    nodes = jax.tree.leaves(opt_state, is_leaf=_is_hyperparam_state)
    return [node for node in nodes if _is_hyperparam_state(node)]


def _check_new_value(
    name: str, value: Any, stores: list[HyperparamState], where: str = "this state"
) -> None:
    """The checks the blocks made when built (each store's limits), for a concrete value."""
    holders = [node for node in stores if name in node.values]
    if not holders:
        known = sorted({key for node in stores for key in node.values})
        what = f"a hyperparameter of {where} (one of {', '.join(known)})"
        if "weight_decay" in name:
            what += "; a weight decay built as the number 0 is left out: build with an array,"
            what += " e.g. jnp.asarray(0.0), to set it later"
        checks.fail(name, what, value)
    if value is None:
        if not all(override_key(name) in node.overrides for node in holders):
            what = "a number or a scalar array (None clears a value set on a scheduled "
            checks.fail(name, what + "hyperparameter, and this one is not scheduled)", value)
        return
    if callable(value):
        what = "a number or a scalar array (a schedule is fixed when the transform is built)"
        checks.fail(name, what, value, TypeError)
    if isinstance(value, jax.core.Tracer) and any(
        isinstance(node.values[name], Constant) for node in holders
    ):
        what = "a concrete value: it is a compile-time constant of this state"
        checks.fail(name, what + " (constant_hyperparams), not a traced array", value, TypeError)
    check_spec(name, value)
    for node in holders:
        integer = jnp.issubdtype(current(node.values[name]).dtype, jnp.integer)
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
        held = new_values[name]
        new_value = stored(value, current(held).dtype)
        key = complement_key(name)
        constant = isinstance(held, Constant)  # a new constant: the next jitted step compiles
        new_values[name] = Constant.of(new_value) if constant else new_value
        if key in new_complements:
            complement = exact_complement(value, new_value)
            new_complements[key] = Constant.of(complement) if constant else complement
    return node._replace(values=new_values, complements=new_complements, overrides=overrides)


def set_hyperparams(opt_state: Any, *, group: str | None = None, **values: Any) -> Any:
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

    Parameter groups (a state holding a :func:`gradxform.partition`):
    ``group="embed"`` sets the values in that group's transforms only (a
    nested group by its dotted name, ``"train.embed"``, or all of ``"train"``'s
    groups by ``"train"``). Without ``group``, a name is set wherever it
    occurs: in every group, and around the partition. A hyperparameter held
    around the partition (an ``apply_if_finite`` wrapping it) applies to every
    group, so it is set without ``group``; naming a group for it is an error.

    Args:
        opt_state: an optimizer state.
        group: the group to set the values in (``None``: everywhere).
        **values: name -> new number or scalar array, or ``None`` to hand a
            scheduled hyperparameter back to its schedule.

    Returns:
        The state with the values replaced wherever the names occur (in
        ``group``, when given).

    Raises:
        ValueError: if a name is not a hyperparameter of the state (or of the
            group), a value lies outside the range its blocks accept,
            ``None`` is given for a hyperparameter that is not scheduled, or
            ``group`` is not a group of the state (the message lists those
            there are).
        TypeError: for a schedule or a value that is not a real scalar.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> state = gx.set_hyperparams(gx.adam(1e-3).init(jnp.zeros(3)), b1=0.5)
        >>> float(gx.get_hyperparams(state)["b1"])
        0.5
        >>> tx = gx.partition({"a": gx.sgd(0.25), "b": gx.sgd(0.25)}, ("a", "b"))
        >>> state = gx.set_hyperparams(tx.init((jnp.zeros(2), jnp.zeros(3))), group="b",
        ...                            learning_rate=0.5)
        >>> {g: float(h["learning_rate"]) for g, h in gx.get_hyperparams(state).items()}
        {'a': 0.25, 'b': 0.5}
    """
    if group is None:
        stores = _hyperparam_states(opt_state)
        for name, value in values.items():
            _check_new_value(name, value, stores)
        return _map_stores(opt_state, lambda owner, node: _replaced(node, values))
    target = _check_group(opt_state, group)
    layout, _ = _layout(opt_state)
    inside = [node for owner, node in layout if _within(owner, target)]
    around = [node for owner, node in layout if _within(target, owner) and owner != target]
    for name, value in values.items():
        if not any(name in node.values for node in inside) and any(
            name in node.values for node in around
        ):
            what = f"a hyperparameter of group {group!r} (it is held around the partition "
            checks.fail(name, what + "and applies to every group: set it without group=)", value)
        _check_new_value(name, value, inside, f"group {group!r}")

    def replace(owner, node):
        return _replaced(node, values) if _within(owner, target) else node

    return _map_stores(opt_state, replace)


def _check_group(opt_state: Any, group: Any) -> Group:
    """``group`` as a tuple of labels, if it names a group (or an outer group) of the state."""
    _, groups = _layout(opt_state)
    target = tuple(group.split(".")) if isinstance(group, str) else None
    if target is None or not any(_within(g, target) for g in groups):
        if not groups:
            checks.fail("group", "None for a state without a partition (it has no groups)", group)
        names = ", ".join(repr(".".join(g)) for g in groups)
        checks.fail("group", f"a group of this state (one of {names})", group)
    return target


def _as_constants(node: HyperparamState) -> HyperparamState:
    """``node`` with each value that is not scheduled (and its complement) a :class:`Constant`."""
    values, complements = dict(node.values), dict(node.complements)
    for name, value in node.values.items():
        if override_key(name) in node.overrides or isinstance(value, Constant):
            continue  # scheduled (the value changes every step), or a constant already
        if isinstance(value, jax.core.Tracer):
            what = "initialised outside jit (constant_hyperparams reads the values when built)"
            checks.fail("constant_hyperparams", what, value, TypeError)
        values[name] = Constant.of(value)
        key = complement_key(name)
        if key in complements:
            complements[key] = Constant.of(complements[key])
    return node._replace(values=values, complements=complements)


def constant_hyperparams(transform: GradientTransformation) -> GradientTransformationExtraArgs:
    """``transform`` with its hyperparameters compile-time constants, as optax's literals.

    Every hyperparameter that is not a schedule is held in the state's tree
    structure (a :class:`~gradxform.hyperparams.store.Constant`, no array), so
    a jitted step sees it as a literal and XLA folds it into the kernels, as
    it does optax's hyperparameters given as numbers. The updates are those of
    ``transform``, bit for bit. The step count and scheduled values stay arrays.

    What changes: :func:`set_hyperparams` still sets a value (checked as
    before) and the next update uses it, but the state's structure changes,
    so a jitted step compiles again for it (once per new value). A traced
    value cannot be set, and the state must be initialised outside ``jit``.
    :func:`get_hyperparams` reads the values as arrays;
    ``optax.tree_utils.tree_get`` finds the ``Constant`` objects.
    :func:`gradxform.checkpoint.save` writes the constants beside the arrays and
    :func:`gradxform.checkpoint.restore` reads them back (into a template with
    constants or with arrays); orbax restores the template's own constants.

    Args:
        transform: any transform whose state holds gradxform hyperparameter
            stores (an optimizer, a chain or partition of them, an optax chain
            holding them).

    Returns:
        The same transform, its ``init`` turning the stores' values into constants.

    Raises:
        TypeError: from ``init`` if it runs under ``jit`` (the values are traced).

    Example:
        >>> import gradxform as gx, jax, jax.numpy as jnp
        >>> tx = gx.constant_hyperparams(gx.adam(1e-3))
        >>> state = tx.init(jnp.zeros(3))
        >>> len(jax.tree.leaves(state)) < len(jax.tree.leaves(gx.adam(1e-3).init(jnp.zeros(3))))
        True
        >>> float(gx.get_hyperparams(gx.set_hyperparams(state, b1=0.5))["b1"])
        0.5
    """
    transform = with_extra_args(transform)

    def init_fn(params):
        return _map_stores(transform.init(params), lambda _, node: _as_constants(node))

    return GradientTransformationExtraArgs(init_fn, transform.update)
