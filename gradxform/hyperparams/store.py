"""The store: :class:`Hyperparams`, its handles, its state and the values it hands to blocks."""

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
    _VALUES_ARG,
    EmptyState,
    GradientTransformation,
    GradientTransformationExtraArgs,
    chain,
    with_extra_args,
)
from gradxform.hyperparams.limits import Limit, Limits, is_real_scalar_array

__all__ = [
    "Constant",
    "Hyperparam",
    "HyperparamChainState",
    "HyperparamState",
    "Hyperparams",
    "ScalarOrSchedule",
    "Values",
    "increment_count",
]

ScalarOrSchedule = float | jax.Array | Callable[[jax.Array], jax.Array]
"""A hyperparameter given as a number, a scalar array, or a schedule ``step count -> value``."""

_INT32_MAX = np.iinfo(np.int32).max
_SPEC = "a real number, a real scalar array or a schedule (a function of the step count)"


def increment_count(count: jax.Array) -> jax.Array:
    """The step count plus one, saturating instead of overflowing.

    Args:
        count: an int32 scalar array.

    Returns:
        ``count + 1``, or ``count`` when it is already ``2**31 - 1``.
    """
    return jnp.where(count < _INT32_MAX, count + 1, count)


class HyperparamState(NamedTuple):
    """The state of one :class:`Hyperparams` store.

    Attributes:
        count: number of updates taken (int32, saturating at ``2**31 - 1``),
            or ``None`` when no update reads it.
        values: name -> value used by the latest update (before the first
            update: the value the first update will use); a :class:`Constant`
            under :func:`gradxform.constant_hyperparams`.
        complements: ``"one_minus_<name>"`` -> ``1 - value`` rounded once from
            the exact difference, for the decays whose complement is read;
            set with the value (:func:`set_hyperparams`, a schedule) and read
            while it agrees with the value (else ``1 - value`` is used).
        overrides: ``"<name>_is_set"`` -> True while a value set with
            :func:`set_hyperparams` replaces the schedule of ``name`` (one
            bool per scheduled hyperparameter).
        clamped: ``"<name>_clamped"`` -> the number of updates at which the
            schedule of ``name`` gave a value outside its range, which was
            clamped into it (one int32 per scheduled hyperparameter with a range).
        limits: the declared ranges (:class:`Limits`, no arrays).
    """

    count: jax.Array | None  # type: ignore[assignment]  # optax's field name, over tuple.count
    values: dict[str, jax.Array | Constant]
    complements: dict[str, jax.Array | Constant]
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


@dataclasses.dataclass(frozen=True)
class Constant:
    """A hyperparameter value held in the state's structure instead of as an array.

    Made by :func:`gradxform.constant_hyperparams`. It is a pytree node without
    leaves (as :class:`Limits`), so a jitted step sees the value as a
    compile-time constant, as optax's hyperparameters given as Python numbers
    are, and a new value compiles a new program.

    Args:
        value: the stored scalar as a Python number (exactly the rounded value).
        dtype_name: its dtype's name (``"float32"``, ``"float64"``, ``"int32"``).
    """

    value: float | int
    dtype_name: str

    @classmethod
    def of(cls, array: Any) -> Constant:
        """The constant of a concrete scalar array.

        Args:
            array: a concrete (not traced) 0-d array.

        Returns:
            The constant holding its value and dtype.
        """
        held = np.asarray(array)
        return cls(held.item(), held.dtype.name)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.dtype_name)

    def array(self) -> jax.Array:
        """The value as a scalar array of its dtype (a literal inside ``jit``)."""
        return jnp.asarray(np.asarray(self.value, self.dtype))


jax.tree_util.register_static(Constant)


def current(value: jax.Array | Constant) -> jax.Array:
    """A stored value as an array, whether held as an array or as a :class:`Constant`."""
    return value.array() if isinstance(value, Constant) else jnp.asarray(value)


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


def check_spec(name: str, spec: Any) -> None:
    if callable(spec):
        _check_schedule(name, spec)
    elif not (checks.is_real_number(spec) or is_real_scalar_array(spec)):
        checks.fail(name, _SPEC, spec, TypeError)


def _storage_dtype(params: Any) -> np.dtype:
    for leaf in jax.tree.leaves(params):
        if jnp.dtype(leaf.dtype) in (np.dtype("float64"), np.dtype("complex128")):
            return np.dtype("float64")
    return np.dtype("float32")


def complement_key(name: str) -> str:
    return f"one_minus_{name}"


def stored(value: Any, dtype) -> jax.Array:
    """``value`` as the stored scalar: rounded to nearest from a Python number."""
    if checks.is_real_number(value):
        return jnp.asarray(np.asarray(value, dtype))
    return jnp.asarray(value, dtype)


def exact_complement(spec: Any, value: jax.Array) -> jax.Array:
    """``1 - spec`` rounded once to ``value``'s dtype (from ``value`` for arrays and schedules)."""
    if checks.is_real_number(spec):
        return jnp.asarray(np.asarray(1.0 - float(spec), value.dtype))
    return 1 - value


def override_key(name: str) -> str:
    return f"{name}_is_set"


def _clamped_key(name: str) -> str:
    return f"{name}_clamped"


def _bounded(limits: tuple[Limit, ...]) -> bool:
    return any(limit.lower is not None or limit.upper is not None for limit in limits)


def _scheduled(handle: Hyperparam, state: HyperparamState, clamped: dict) -> jax.Array:
    """A scheduled value for this update: the set value while one is set, else the
    schedule's, clamped into the declared range (counted in ``clamped``)."""
    held = jnp.asarray(state.values[handle.name])
    value = jnp.asarray(handle.spec(state.count), held.dtype)
    fresh = value
    for limit in handle.limits:
        value = limit.clamp(value)
    is_set = state.overrides[override_key(handle.name)]
    key = _clamped_key(handle.name)
    if key in clamped:
        outside = ~is_set & ((value != fresh) | ~jnp.isfinite(fresh))
        clamped[key] = jnp.where(outside, increment_count(clamped[key]), clamped[key])
    return jnp.where(is_set, held, value)


def _current_complement(stored: jax.Array, value: jax.Array) -> jax.Array:
    """The stored ``1 - value`` while it belongs to ``value``; else ``1 - value``.

    The stored complement of ``d`` is within two ulps of ``1 - float(d)``; a
    value written behind the store's back (``optax.tree_utils.tree_set`` of
    the value alone) is further away, and its own ``1 - value`` is used. The
    derivative with respect to ``value`` is -1 either way (the stored
    complement's own derivative is not followed). A ``where`` of scalars: XLA
    fuses it into the kernels that read the complement, where it is
    loop-invariant work. (A ``lax.cond`` here, once kept on CPU as its own
    scalar computation, made XLA's scheduler run every leaf's second-moment
    kernel before any first-moment one, so each gradient leaf was read from
    memory twice: Adam's step 7-11% slower than optax's on the GPT tree.)
    """
    fresh = 1 - value
    agrees = jnp.abs(stored - fresh) <= 2 * jnp.finfo(value.dtype).eps
    kept = jax.lax.stop_gradient(stored) + (fresh - jax.lax.stop_gradient(fresh))
    return jnp.where(agrees, kept, fresh)


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
        constants: handle -> its value as a Python number, for the values held
            as :class:`Constant` (known while tracing; see :meth:`known`).
    """

    def __init__(
        self,
        names: dict[str, Hyperparam],
        values: dict[Hyperparam, jax.Array],
        complements: dict[Hyperparam, jax.Array],
        count: jax.Array | None,
        constants: dict[Hyperparam, float | int] | None = None,
    ):
        self._names, self._values, self._complements = names, values, complements
        self.count = count
        self._constants = constants or {}

    def _find(self, table: dict, name: str) -> jax.Array:
        handle = self._names[name]
        self._check_inside(handle, table)
        return table[handle]

    @staticmethod
    def _check_inside(handle: Hyperparam, table: dict) -> None:
        if handle not in table:
            raise LookupError(
                f"the hyperparameter {handle.name!r} is read outside its store: build the "
                "transform that reads it inside that Hyperparams' chain(...)"
            )

    def __getitem__(self, name: str) -> jax.Array:
        return self._find(self._values, name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def known(self, handle: Hyperparam) -> float | int | None:
        """A handle's value as a Python number when it is a compile-time constant.

        Args:
            handle: a :class:`Hyperparam` of this store or of one it is inside.

        Returns:
            The number, for a value held as a :class:`Constant`
            (:func:`gradxform.constant_hyperparams`); ``None`` for one held as
            an array (traced inside ``jit``) or a schedule's.
        """
        self._check_inside(handle, self._values)
        return self._constants.get(handle)

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
            check_spec(name, spec)
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
        values: dict[str, jax.Array | Constant] = {}
        complements: dict[str, jax.Array | Constant] = {}
        overrides, clamped = {}, {}
        for h in self._owned:
            spec = h.spec(jnp.zeros([], jnp.int32)) if callable(h.spec) else h.spec
            value = values[h.name] = stored(spec, jnp.int32 if h.integer else dtype)
            if h.complement:
                complements[complement_key(h.name)] = exact_complement(spec, value)
            if callable(h.spec):
                overrides[override_key(h.name)] = jnp.asarray(False)
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
        constants = dict(outer._constants) if outer is not None else {}
        count = outer.count if outer is not None else None
        if not self._owned:
            return Values(self._handles, values, complements, count, constants), state
        assert isinstance(state, HyperparamState)  # a store that owns a value has a state
        new_values, new_complements, clamped = {}, {}, dict(state.clamped)
        for h in self._owned:
            held = state.values[h.name]
            constant = isinstance(held, Constant)  # constant_hyperparams: it stays one
            value = _scheduled(h, state, clamped) if callable(h.spec) else current(held)
            values[h] = value
            new_values[h.name] = held if constant else value
            if isinstance(held, Constant):  # never a schedule's (those stay arrays)
                constants[h] = held.value
            if h.complement:
                key = complement_key(h.name)
                held_complement = state.complements[key]  # set with the value by set_hyperparams
                complement = current(held_complement)
                if callable(h.spec):  # a scheduled value's, unless a set value replaces it
                    is_set = state.overrides[override_key(h.name)]
                    complement = jnp.where(is_set, complement, 1 - value)
                constant = isinstance(held_complement, Constant)
                new_complements[key] = held_complement if constant else complement
                complements[h] = _current_complement(complement, value)  # tree_set: value alone
        old_count: jax.Array | None = state.count
        next_count = None if old_count is None else increment_count(old_count)
        count = next_count if next_count is not None else count
        new_state = state._replace(count=next_count, values=new_values)
        new_state = new_state._replace(complements=new_complements, clamped=clamped)
        return Values(self._handles, values, complements, count, constants), new_state

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
