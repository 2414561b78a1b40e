r"""Hyperparameters that live in the optimizer state, each name in one place.

Every numeric hyperparameter of a gradxform transform (learning rate, decays,
eps, weight decay, the finite guard's limit, ...) is a number, a scalar array
or a schedule (a function of the step count), and its current value is stored
in the state, so that

* it can be read by name: ``gx.get_hyperparams(state)["learning_rate"]``, or
  ``optax.tree_utils.tree_get(state, "learning_rate")``;
* it can be changed between steps without recompiling a jitted step:
  ``state = gx.set_hyperparams(state, learning_rate=1e-4)``, checked as when
  built (a value set on a scheduled hyperparameter replaces the schedule
  until cleared with ``gx.set_hyperparams(state, learning_rate=None)``);
* a schedule is evaluated at the number of updates taken so far (0 at the
  first update), and the value stored is the one the latest update used; a
  scheduled value outside the range its blocks declared is clamped into it
  and counted (``<name>_clamped`` in the state).

Design: one store per optimizer, shared by handles
--------------------------------------------------

A :class:`Hyperparams` is a *store*: ``hp = Hyperparams(b1=0.9, lr=...)``
declares each hyperparameter once and ``hp["b1"]`` is a :class:`Hyperparam`,
a handle on it. A block (``ema_first_moment``, ``bias_correct``, ...) takes a
number, a schedule or a handle. Given a number it makes a store of its own, so
a block used alone works; given a handle it stores nothing and reads the value
that the handle's store computed for this step. ``hp.chain(*blocks)`` is
:func:`gradxform.chain` with the store in front: its state is
:class:`HyperparamChainState` ``(hyperparams, inner_state)``, and each update
first steps the store, then passes the values to the blocks (as the extra
argument ``hyperparams``). Adam is::

    hp = Hyperparams(learning_rate=lr, b1=b1, b2=b2, eps=eps, eps_root=eps_root)
    hp.chain(scale_by_adam(hp["b1"], hp["b2"], hp["eps"], eps_root=hp["eps_root"]),
             scale_by_learning_rate(hp["learning_rate"]))

so ``b1``, read by the first moment and by its bias correction, is one entry
of one store by construction, and ``gx.set_hyperparams`` or
``optax.tree_utils.tree_set`` changes it for both.

Blocks declare what they read, when they are built: ``check`` declares a
value's valid range (a :class:`Limit`) and validates it (``<name> must be
<what>; got <value>``; a schedule at step 0), ``use_complement`` asks for
``1 - value`` rounded once (see below) and ``use_count`` for the step count.
A store keeps one int32 count, saturating at ``2**31 - 1``, only if a block
reads it or a value is a schedule; so Adam's state holds one count (read by
both bias corrections and by any schedule) and SGD's none.

A store's state is a :class:`HyperparamState` ``(count, values,
complements, overrides, clamped, limits)``; ``limits``, the declared ranges,
holds no arrays (it is part of the tree structure), so that
:func:`set_hyperparams` applies the checks made when the blocks were built.
Values are float32, or float64 when a parameter leaf is float64 (or
complex128), cast to each leaf's dtype where used; integer hyperparameters
are int32.

Rounding: ``1 - decay``
-----------------------

For a decay given as a Python number, ``1 - decay`` is stored beside it under
the key ``one_minus_<name>``: the float32 rounding of the exact ``1 - decay``,
as optax and torch compute it in Python (``1 - float32(0.999)`` is not
``float32(1 - 0.999)``). Only decays whose complement an update reads have one.
An update uses the stored complement while it agrees with the value to within
two ulps, and ``1 - value`` otherwise, so a value changed with
``optax.tree_utils.tree_set`` (which leaves the complement alone) is used
correctly; :func:`set_hyperparams` sets both. Derivatives with respect to the
value flow through the complement either way.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradxform import checks, tree
from gradxform.base import (
    EmptyState,
    GradientTransformation,
    GradientTransformationExtraArgs,
    chain,
    with_extra_args,
)

__all__ = [
    "Hyperparam",
    "HyperparamChainState",
    "HyperparamState",
    "Hyperparams",
    "Limit",
    "Limits",
    "ScalarOrSchedule",
    "Values",
    "get_hyperparams",
    "increment_count",
    "set_hyperparams",
]

ScalarOrSchedule = float | jax.Array | Callable[[jax.Array], jax.Array]
"""A hyperparameter given as a number, a scalar array, or a schedule ``step count -> value``."""

_INT32_MAX = np.iinfo(np.int32).max
_VALUES_ARG = "hyperparams"  # the extra argument that carries a store's values to its blocks
_SPEC = "a real number, a real scalar array or a schedule (a function of the step count)"


def increment_count(count: jax.Array) -> jax.Array:
    """The step count plus one, saturating instead of overflowing.

    Args:
        count: an int32 scalar array.

    Returns:
        ``count + 1``, or ``count`` when it is already ``2**31 - 1``.
    """
    return jnp.where(count < _INT32_MAX, count + 1, count)


@dataclasses.dataclass(frozen=True)
class Limit:
    """A valid range of a hyperparameter, declared by a block that reads it.

    Made by :meth:`Hyperparams.check`; the same limit checks the value when
    the block is built, every value :func:`set_hyperparams` sets, and clamps
    a schedule's values at run time.

    Attributes:
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
            if _is_real_scalar_array(value) and jnp.issubdtype(value.dtype, jnp.integer):
                value = int(value)
            lower = None if self.lower is None else int(self.lower)
            checks.integer(name, value, minimum=lower)
            return
        bounds = dataclasses.asdict(self)
        del bounds["integer"]
        if not callable(value):
            concrete = _concrete(value)
            checks.real(name, value if concrete is None else concrete, **bounds)
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

    Attributes:
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


class HyperparamState(NamedTuple):
    """The state of one :class:`Hyperparams` store.

    Attributes:
        count: number of updates taken (int32, saturating at ``2**31 - 1``),
            or ``None`` when no update reads it.
        values: name -> value used by the latest update (before the first
            update: the value the first update will use).
        complements: ``"one_minus_<name>"`` -> ``1 - value`` rounded once from
            the exact difference, for the decays whose complement is read.
        overrides: ``"<name>_is_set"`` -> True while a value set with
            :func:`set_hyperparams` replaces the schedule of ``name`` (one
            bool per scheduled hyperparameter).
        clamped: ``"<name>_clamped"`` -> the number of updates at which the
            schedule of ``name`` gave a value outside its range, which was
            clamped into it (one int32 per scheduled hyperparameter with a range).
        limits: the declared ranges (:class:`Limits`, no arrays).
    """

    count: jax.Array | None  # type: ignore[assignment]  # optax's field name, over tuple.count
    values: dict[str, jax.Array]
    complements: dict[str, jax.Array]
    overrides: dict[str, jax.Array]
    clamped: dict[str, jax.Array]
    limits: Limits


class HyperparamChainState(NamedTuple):
    """The state of :meth:`Hyperparams.chain`: the store, then the chained blocks.

    Attributes:
        hyperparams: the store's :class:`HyperparamState`.
        inner_state: the state of the block (one block) or the tuple of their
            states (several).
    """

    hyperparams: HyperparamState
    inner_state: Any


class Hyperparam:
    """A handle on one hyperparameter of a :class:`Hyperparams` store.

    Pass it to a block in place of a number to make the block read the
    store's value: every block given the same handle reads the same entry.
    Made by ``Hyperparams(...)[name]``, not directly.

    Args:
        name: the hyperparameter's key in the state.
        spec: the number, scalar array or schedule it was declared with.
        owner: the store that holds it.
    """

    __slots__ = ("complement", "integer", "limits", "name", "owner", "spec")

    def __init__(self, name: str, spec: Any, owner: Hyperparams):
        self.name, self.spec, self.owner = name, spec, owner
        self.complement = False  # does an update read 1 - value?
        self.integer = False  # stored as int32?
        self.limits: tuple[Limit, ...] = ()  # the ranges the blocks reading it declared

    def __repr__(self) -> str:
        return f"Hyperparam({self.name!r}, {self.spec!r})"


def _concrete(value: Any) -> float | None:
    """A Python float for a number or a concrete real scalar array, else ``None``."""
    if checks.is_real_number(value):
        return float(value)
    if isinstance(value, (np.ndarray, np.generic, jax.Array)) and not isinstance(
        value, jax.core.Tracer
    ):
        return float(value) if _is_real_scalar_array(value) else None
    return None


def _is_real_scalar_array(value: Any) -> bool:
    if not isinstance(value, (np.ndarray, np.generic, jax.Array)) or np.ndim(value) != 0:
        return False
    kind = np.dtype(value.dtype).kind
    return kind in "iuf" or value.dtype == jnp.bfloat16


def _check_schedule(name: str, schedule: Callable) -> None:
    """Calls a schedule at step 0 when it is declared: it must give a finite real scalar."""
    step = jax.ShapeDtypeStruct((), jnp.int32)
    try:
        shape = jax.eval_shape(schedule, step)
    except Exception as error:  # the schedule's own error, with the argument named
        what = f"a schedule accepting a scalar int32 step count (it raised {error!r})"
        checks.fail(name, what, schedule, TypeError)
    if getattr(shape, "shape", None) != () or not (
        jnp.issubdtype(shape.dtype, jnp.integer) or jnp.issubdtype(shape.dtype, jnp.floating)
    ):
        checks.fail(name, "a schedule returning a real scalar", shape, TypeError)
    first = float(schedule(jnp.zeros([], jnp.int32)))
    if not math.isfinite(first):
        checks.fail(name, "a schedule whose value at step 0 is finite", first)


def _check_spec(name: str, spec: Any) -> None:
    if callable(spec):
        _check_schedule(name, spec)
    elif not (checks.is_real_number(spec) or _is_real_scalar_array(spec)):
        checks.fail(name, _SPEC, spec, TypeError)


def _storage_dtype(params: Any) -> np.dtype:
    for leaf in jax.tree.leaves(params):
        if jnp.dtype(leaf.dtype) in (np.dtype("float64"), np.dtype("complex128")):
            return np.dtype("float64")
    return np.dtype("float32")


def _complement_key(name: str) -> str:
    return f"one_minus_{name}"


def _stored(value: Any, dtype) -> jax.Array:
    """``value`` as the stored scalar: rounded to nearest from a Python number."""
    if checks.is_real_number(value):
        return jnp.asarray(np.asarray(value, dtype))
    return jnp.asarray(value, dtype)


def _exact_complement(spec: Any, value: jax.Array) -> jax.Array:
    """``1 - spec`` rounded once to ``value``'s dtype (from ``value`` for arrays and schedules)."""
    if checks.is_real_number(spec):
        return jnp.asarray(np.asarray(1.0 - float(spec), value.dtype))
    return 1 - value


def _override_key(name: str) -> str:
    return f"{name}_is_set"


def _clamped_key(name: str) -> str:
    return f"{name}_clamped"


def _bounded(limits: tuple[Limit, ...]) -> bool:
    return any(limit.lower is not None or limit.upper is not None for limit in limits)


def _scheduled(handle: Hyperparam, state: HyperparamState, clamped: dict) -> jax.Array:
    """A scheduled value for this update: the set value while one is set, else the
    schedule's, clamped into the declared range (counted in ``clamped``)."""
    stored = jnp.asarray(state.values[handle.name])
    value = jnp.asarray(handle.spec(state.count), stored.dtype)
    fresh = value
    for limit in handle.limits:
        value = limit.clamp(value)
    is_set = state.overrides[_override_key(handle.name)]
    key = _clamped_key(handle.name)
    if key in clamped:
        outside = ~is_set & ((value != fresh) | ~jnp.isfinite(fresh))
        clamped[key] = jnp.where(outside, increment_count(clamped[key]), clamped[key])
    return jnp.where(is_set, stored, value)


def _current_complement(stored: jax.Array, value: jax.Array) -> jax.Array:
    """The stored ``1 - value`` while it belongs to ``value``; else ``1 - value``.

    The stored complement of ``d`` is within two ulps of ``1 - float(d)``; a
    value changed behind the store's back (``tree_set``) is further away. The
    derivative with respect to ``value`` is -1 either way.
    """
    fresh = 1 - value
    agrees = jnp.abs(stored - fresh) <= 2 * jnp.finfo(value.dtype).eps
    return jnp.where(agrees, stored + (fresh - jax.lax.stop_gradient(fresh)), fresh)


class Values(Mapping):
    """The hyperparameter values one update reads, by the reading block's names.

    A mapping ``name -> value`` over the names of the :class:`Hyperparams` it
    came from; :meth:`complement` and :attr:`count` give what blocks declared
    with ``use_complement`` and ``use_count``.

    Args:
        names: the block's name -> handle.
        values: handle -> this update's value, for this store and those outside it.
        complements: handle -> this update's ``1 - value``.
        count: the step count including this update (1 at the first update),
            or ``None`` if no store on the way keeps one.
    """

    def __init__(
        self,
        names: dict[str, Hyperparam],
        values: dict[Hyperparam, jax.Array],
        complements: dict[Hyperparam, jax.Array],
        count: jax.Array | None,
    ):
        self._names, self._values, self._complements = names, values, complements
        self.count = count

    def _find(self, table: dict, name: str) -> jax.Array:
        handle = self._names[name]
        if handle not in table:
            raise LookupError(
                f"the hyperparameter {handle.name!r} is read outside its store: build the "
                "transform that reads it inside that Hyperparams' chain(...)"
            )
        return table[handle]

    def __getitem__(self, name: str) -> jax.Array:
        return self._find(self._values, name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def complement(self, name: str) -> jax.Array:
        """``1 - value`` of a decay, rounded once from the exact difference.

        Args:
            name: a name whose complement the block declared with ``use_complement``.

        Returns:
            The scalar ``1 - value`` this update uses.
        """
        return self._find(self._complements, name)


class Hyperparams:
    """A store of hyperparameters, each declared once, and the handles on them.

    Built with keyword arguments, each a number, a scalar array, a schedule
    (owned by this store) or a :class:`Hyperparam` handle of another store
    (read from that store's values). ``hp[name]`` is the handle to pass to
    blocks; ``hp.chain(*blocks)`` puts the store in front of the blocks. A
    block keeps its ``Hyperparams`` in its state (:meth:`init`, :meth:`step`);
    it holds nothing when all its hyperparameters are handles.

    Args:
        **specs: name -> number, scalar array, schedule or handle.

    Raises:
        TypeError: for a value of another kind, or a schedule that fails or
            does not return a real scalar at step 0.
        ValueError: for a schedule whose value at step 0 is not finite.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> hp = gx.Hyperparams(learning_rate=0.1, decay=0.9)
        >>> tx = hp.chain(
        ...     gx.ema_first_moment(hp["decay"]), gx.scale_by_learning_rate(hp["learning_rate"])
        ... )
        >>> state = tx.init(jnp.zeros(2))
        >>> sorted(gx.get_hyperparams(state))
        ['decay', 'learning_rate']
    """

    def __init__(self, **specs: ScalarOrSchedule | Hyperparam):
        self._handles: dict[str, Hyperparam] = {}
        self._owned: list[Hyperparam] = []
        self._count = False
        for name, spec in specs.items():
            if isinstance(spec, Hyperparam):
                self._handles[name] = spec
                continue
            _check_spec(name, spec)
            handle = Hyperparam(name, spec, self)
            self._handles[name] = handle
            self._owned.append(handle)
            self._count = self._count or callable(spec)

    def __getitem__(self, name: str) -> Hyperparam:
        return self._handles[name]

    @property
    def specs(self) -> dict[str, Any]:
        """Name -> what each hyperparameter was declared with (a handle for a borrowed one)."""
        return {name: h.spec if h.owner is self else h for name, h in self._handles.items()}

    def check(
        self,
        name: str,
        *,
        lower: float | None = None,
        upper: float | None = None,
        lower_open: bool = False,
        upper_open: bool = False,
        integer: bool = False,
    ) -> Hyperparams:
        """Declares a hyperparameter's valid range and checks its value when the block is built.

        A schedule is checked at step 0, and its later values are clamped
        into the range (:meth:`step`); :func:`set_hyperparams` checks new
        values against the same range.

        Args:
            name: the block's name for it.
            lower, upper: bounds (``None``: unbounded), closed unless ``*_open``.
            lower_open, upper_open: exclude the bound.
            integer: it must be a Python integer (stored as int32).

        Returns:
            This store, so that declarations chain.

        Raises:
            TypeError, ValueError: ``<name> must be <what>; got <value>``.
        """
        handle = self._handles[name]
        limit = Limit(lower, upper, lower_open, upper_open, integer)
        handle.integer = handle.integer or integer
        if limit not in handle.limits:
            handle.limits += (limit,)
        limit.check(handle.name, handle.spec)
        return self

    def use_complement(self, name: str) -> Hyperparams:
        """Declares that updates read ``1 - value`` of ``name`` (a decay).

        Args:
            name: the block's name for it.

        Returns:
            This store.
        """
        self._handles[name].complement = True
        return self

    def use_count(self) -> Hyperparams:
        """Declares that updates read the step count (``Values.count``).

        Returns:
            This store.
        """
        self._count = True
        for handle in self._handles.values():
            handle.owner._count = True
        return self

    def init(self, params: Any) -> HyperparamState | EmptyState:
        """The store's state before the first update.

        Args:
            params: the parameters (they fix the storage dtype).

        Returns:
            A :class:`HyperparamState`, or ``EmptyState()`` when the store
            owns nothing (all its hyperparameters are handles of another).
        """
        if not self._owned:
            return EmptyState()
        tree.check_params(params)
        dtype = _storage_dtype(params)
        values, complements, overrides, clamped = {}, {}, {}, {}
        for h in self._owned:
            spec = h.spec(jnp.zeros([], jnp.int32)) if callable(h.spec) else h.spec
            values[h.name] = _stored(spec, jnp.int32 if h.integer else dtype)
            if h.complement:
                complements[_complement_key(h.name)] = _exact_complement(spec, values[h.name])
            if callable(h.spec):
                overrides[_override_key(h.name)] = jnp.asarray(False)
                if _bounded(h.limits):
                    clamped[_clamped_key(h.name)] = jnp.zeros([], jnp.int32)
        count = jnp.zeros([], jnp.int32) if self._count else None
        limits = Limits(tuple((h.name, h.limits) for h in self._owned if h.limits))
        return HyperparamState(count, values, complements, overrides, clamped, limits)

    def step(
        self, state: HyperparamState | EmptyState, extra_args: dict | None = None
    ) -> tuple[Values, HyperparamState | EmptyState]:
        """The values for this update, and the store's next state.

        A schedule's value is clamped into the range the blocks declared
        (:meth:`check`; the update is counted in ``clamped``), unless a value
        set with :func:`set_hyperparams` replaces the schedule.

        Args:
            state: the store's state, from :meth:`init` or the previous step.
            extra_args: the update's extra keyword arguments, which carry the
                values of the stores this block is inside.

        Returns:
            ``(values, next_state)``: schedules evaluated at the count of
            updates taken before this one, and the count advanced.
        """
        outer = (extra_args or {}).get(_VALUES_ARG)
        values = dict(outer._values) if outer is not None else {}
        complements = dict(outer._complements) if outer is not None else {}
        count = outer.count if outer is not None else None
        if not self._owned:
            return Values(self._handles, values, complements, count), state
        assert isinstance(state, HyperparamState)  # a store that owns a value has a state
        new_values, new_complements, clamped = {}, {}, dict(state.clamped)
        for h in self._owned:
            stored = jnp.asarray(state.values[h.name])
            value = _scheduled(h, state, clamped) if callable(h.spec) else stored
            values[h] = new_values[h.name] = value
            if h.complement:
                key = _complement_key(h.name)
                stored_c = state.complements[key]
                if callable(h.spec):
                    stored_c = jnp.where(
                        state.overrides[_override_key(h.name)], stored_c, 1 - value
                    )
                new_complements[key] = stored_c  # kept as is: a constant while unset
                complements[h] = _current_complement(stored_c, value)
        old_count: jax.Array | None = state.count
        next_count = None if old_count is None else increment_count(old_count)
        count = next_count if next_count is not None else count
        new_state = state._replace(count=next_count, values=new_values)
        new_state = new_state._replace(complements=new_complements, clamped=clamped)
        return Values(self._handles, values, complements, count), new_state

    def chain(self, *transforms: GradientTransformation) -> GradientTransformationExtraArgs:
        """:func:`gradxform.chain` of ``transforms`` with this store in front.

        Each update steps the store, then runs the transforms with its values
        (the extra argument ``hyperparams``), so every handle of this store
        reads one value.

        Args:
            *transforms: the blocks, in order.

        Returns:
            The chained transform; its state is :class:`HyperparamChainState`
            (the plain chain when the store owns nothing).
        """
        inner = chain(*transforms) if len(transforms) != 1 else with_extra_args(transforms[0])
        if not self._owned:
            return inner

        def init_fn(params):
            return HyperparamChainState(self.init(params), inner.init(params))

        def update_fn(updates, state, params=None, **extra_args):
            values, hyper = self.step(state.hyperparams, extra_args)
            extra_args[_VALUES_ARG] = values
            updates, inner_state = inner.update(updates, state.inner_state, params, **extra_args)
            return updates, HyperparamChainState(hyper, inner_state)

        return GradientTransformationExtraArgs(init_fn, update_fn)

    def transform(
        self, apply: Callable[[Any, Values, Any], Any], state_type: type
    ) -> GradientTransformationExtraArgs:
        """A block whose only state is this store: ``updates <- apply(updates, values, params)``.

        Args:
            apply: the block's update, given this step's :class:`Values`.
            state_type: the block's state class, with the single field ``hyperparams``.

        Returns:
            The block.
        """

        def init_fn(params):
            return state_type(self.init(params))

        def update_fn(updates, state, params=None, **extra_args):
            values, hyper = self.step(state.hyperparams, extra_args)
            return apply(updates, values, params), state_type(hyper)

        return GradientTransformationExtraArgs(init_fn, update_fn)


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
    for node in jax.tree.leaves(opt_state, is_leaf=_is_hyperparam_state):
        if _is_hyperparam_state(node):
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
        if not all(_override_key(name) in node.overrides for node in holders):
            what = "a number or a scalar array (None clears a value set on a scheduled "
            checks.fail(name, what + "hyperparameter, and this one is not scheduled)", value)
        return
    if callable(value):
        what = "a number or a scalar array (a schedule is fixed when the transform is built)"
        checks.fail(name, what, value, TypeError)
    _check_spec(name, value)
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
        if _override_key(name) in overrides:
            overrides[_override_key(name)] = jnp.asarray(value is not None)
        if value is None:
            continue
        new_values[name] = _stored(value, jnp.result_type(new_values[name]))
        key = _complement_key(name)
        if key in new_complements:
            new_complements[key] = _exact_complement(value, new_values[name])
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
