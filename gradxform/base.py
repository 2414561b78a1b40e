"""The gradxform contract: what a transform is, and how transforms combine.

A gradient transformation is a pair of pure functions::

    state = tx.init(params)
    updates, state = tx.update(updates, state, params, **extra_args)

gradxform does not define its own protocol: every transform it builds IS an
``optax.GradientTransformationExtraArgs`` (a subclass of
``optax.GradientTransformation``). So gradxform transforms drop into
``optax.chain``, flax and equinox training loops, and optax transforms drop
into :func:`chain`.

Invariants every gradxform transform keeps:

* ``update`` never changes the structure, shapes or dtypes of the state, so a
  jitted step compiles once;
* every numeric hyperparameter lives in the state (see
  :mod:`gradxform.hyperparams`), so changing it does not recompile (unless
  :func:`gradxform.constant_hyperparams` holds it as a compile-time constant);
* only :func:`gradxform.scale_by_learning_rate` flips the sign: every
  ``scale_by_*`` transform returns a direction to *descend* along;
* arguments are validated when the transform is built, never inside ``update``;
* extra keyword arguments (``value``, ``grad``, ``value_fn``, ...) are accepted
  by every transform and forwarded by :func:`chain` to the transforms that
  take them.

The types (:class:`GradientTransformation`, :class:`GradientTransformationExtraArgs`,
:class:`EmptyState`) are optax's; :data:`Schedule` is the type of a schedule,
a function from the step count to a value (see :mod:`gradxform.schedules`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gradxform import tree

GradientTransformation = optax.GradientTransformation
GradientTransformationExtraArgs = optax.GradientTransformationExtraArgs
EmptyState = optax.EmptyState
Params = Any
Updates = Any
OptState = Any
Schedule = Callable[[jax.Array], jax.Array]

__all__ = [
    "EmptyState",
    "GradientTransformation",
    "GradientTransformationExtraArgs",
    "Schedule",
    "apply_updates",
    "chain",
    "divide",
    "identity",
    "with_extra_args",
]


def with_extra_args(tx: GradientTransformation) -> GradientTransformationExtraArgs:
    """Returns ``tx`` as a transform whose ``update`` accepts extra keyword arguments.

    A plain ``optax.GradientTransformation`` does not take ``value=``, ``grad=``
    and the like; the wrapper drops them. Transforms that already take them are
    returned unchanged.

    Args:
        tx: a gradxform or optax transform.

    Returns:
        ``tx`` itself if it is a ``GradientTransformationExtraArgs``, else the
        same ``init`` with an ``update`` that ignores extra keyword arguments.

    Raises:
        TypeError: if ``tx`` is not a ``GradientTransformation``.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp, optax
        >>> tx = gx.with_extra_args(optax.scale(2.0))
        >>> updates, _ = tx.update(jnp.ones(2), tx.init(jnp.ones(2)), value=1.0)
        >>> updates.tolist()
        [2.0, 2.0]
    """
    if isinstance(tx, optax.GradientTransformationExtraArgs):
        return tx
    if not isinstance(tx, optax.GradientTransformation):
        raise TypeError(
            "expected a GradientTransformation (a gradxform or optax transform); "
            f"got {type(tx).__name__}"
        )

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        return tx.update(updates, state, params)

    return GradientTransformationExtraArgs(tx.init, update_fn)


def identity() -> GradientTransformationExtraArgs:
    r"""The transform that returns its updates unchanged: :math:`u \mapsto u`.

    The unit of :func:`chain`, and the numerator of AdaGrad and RMSProp
    (``divide(identity(), ...)``).

    Returns:
        A ``GradientTransformationExtraArgs`` whose state is ``EmptyState()``.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.identity()
        >>> updates, state = tx.update(jnp.array([1.0, -2.0]), tx.init(jnp.zeros(2)))
        >>> updates.tolist(), state
        ([1.0, -2.0], EmptyState())
    """

    def init_fn(params):
        del params
        return EmptyState()

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        return updates, state

    return GradientTransformationExtraArgs(init_fn, update_fn)


def chain(*transforms: GradientTransformation) -> GradientTransformationExtraArgs:
    """Applies transforms one after the other; the state is the tuple of their states.

    ``chain(a, b, c)`` maps updates ``u`` to :math:`c(b(a(u)))`, each transform
    updating its own state. Accepts gradxform and optax transforms alike. Extra
    keyword arguments given to ``update`` reach every transform that accepts
    them (optax transforms that take none are wrapped by :func:`with_extra_args`).
    ``chain`` is associative, with :func:`identity` as its unit.

    Args:
        *transforms: one or more transforms, applied in the order given.

    Returns:
        A ``GradientTransformationExtraArgs`` whose state is the tuple of the
        transforms' states, in order.

    Raises:
        ValueError: if no transform is given (when built), or if ``update`` gets
            a state that is not a tuple of that many states.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.chain(gx.clip_by_global_norm(1.0), gx.scale_by_learning_rate(0.1))
        >>> updates, _ = tx.update({"w": jnp.array([3.0, 4.0])}, tx.init({"w": jnp.zeros(2)}))
        >>> [round(float(u), 5) for u in updates["w"]]
        [-0.06, -0.08]
    """
    if not transforms:
        raise ValueError("chain: transforms must name at least one transform; got none")
    parts = tuple(with_extra_args(tx) for tx in transforms)

    def init_fn(params):
        return tuple(tx.init(params) for tx in parts)

    def update_fn(updates, state, params=None, **extra_args):
        if not isinstance(state, tuple) or len(state) != len(parts):
            raise ValueError(
                f"chain: state must be a tuple of {len(parts)} states, as returned by "
                f"init; got {type(state).__name__}"
            )
        if params is not None:
            tree.check_complex_updates(params, updates)
        new_state = []
        for tx, tx_state in zip(parts, state):
            updates, tx_state = tx.update(updates, tx_state, params, **extra_args)
            new_state.append(tx_state)
        return updates, tuple(new_state)

    return GradientTransformationExtraArgs(init_fn, update_fn)


class DivideState(NamedTuple):
    """State of :func:`divide`: the states of its two branches.

    Attributes:
        numerator: the state of the numerator transform.
        denominator: the state of the denominator transform.
    """

    numerator: OptState
    denominator: OptState


def divide(
    numerator: GradientTransformation,
    denominator: GradientTransformation,
    *,
    positive_if: Any = None,
) -> GradientTransformationExtraArgs:
    r"""Feeds the same updates to two transforms and returns ``numerator / denominator``.

    :math:`u \mapsto n(u) / d(u)` leaf-wise, where :math:`n` and :math:`d` are
    the two transforms. This is how adaptive methods are composed: Adam's
    direction is ``divide(chain(ema_first_moment(b1), bias_correct(b1)),
    chain(ema_second_moment(b2), bias_correct(b2), sqrt_with_eps(eps)))``.
    Where the denominator is exactly zero the result is zero: a coordinate
    that has never seen a gradient does not move (AdaGrad with ``eps=0``).

    Args:
        numerator: the transform whose output is divided.
        denominator: the transform whose output divides; its output must have
            the numerator's tree structure.
        positive_if: a hyperparameter handle of the store this ``divide`` is
            built in (:class:`gradxform.Hyperparams`), whose value, when
            positive, keeps the denominator away from zero (Adam's
            :math:`\epsilon`: :math:`\sqrt{v} + \epsilon \ge \epsilon`).
            Where that value is a compile-time constant
            (:func:`gradxform.constant_hyperparams`) and positive, the zero
            guard is left out: the same quotients, a compare and a select per
            element fewer. A value held as an array keeps the guard.

    Returns:
        A ``GradientTransformationExtraArgs`` with state :class:`DivideState`.

    Raises:
        ValueError: when ``update`` is traced, naming the first path where the
            two outputs' structures differ.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.divide(gx.identity(), gx.scale(2.0))
        >>> updates, _ = tx.update(jnp.array([1.0, -3.0]), tx.init(jnp.zeros(2)))
        >>> updates.tolist()
        [0.5, 0.5]
    """
    num_tx, den_tx = with_extra_args(numerator), with_extra_args(denominator)

    def init_fn(params):
        return DivideState(num_tx.init(params), den_tx.init(params))

    def update_fn(updates, state, params=None, **extra_args):
        num, num_state = num_tx.update(updates, state.numerator, params, **extra_args)
        den, den_state = den_tx.update(updates, state.denominator, params, **extra_args)
        tree.check_structure(num, den, "numerator output", "denominator output")
        if _never_zero(positive_if, extra_args):
            out = jax.tree.map(jnp.divide, num, den)
        else:
            out = tree.safe_divide(num, den)  # one custom JVP for the tree
        return out, DivideState(num_state, den_state)

    return GradientTransformationExtraArgs(init_fn, update_fn)


# the extra argument that carries a hyperparameter store's values to its blocks
# (gradxform.hyperparams, which builds on this module)
_VALUES_ARG = "hyperparams"


def _never_zero(handle: Any, extra_args: dict) -> bool:
    """Whether ``handle``'s value for this update is known while tracing, and positive."""
    if handle is None:
        return False
    value = extra_args[_VALUES_ARG].known(handle)
    return value is not None and value > 0


def apply_updates(params: Params, updates: Updates) -> Params:
    r"""Returns ``params + updates``, each leaf keeping the dtype of its parameter.

    :math:`x \leftarrow x + u`: updates are already signed (the learning-rate
    step :func:`gradxform.scale_by_learning_rate` flips the sign), so this is
    the same call for every optimizer.

    Args:
        params: a pytree of arrays.
        updates: a pytree of the same structure and shapes (as ``update`` returns).

    Returns:
        The pytree ``params + updates``, each leaf cast to its parameter's dtype.

    Raises:
        ValueError: naming the first path where the two trees differ.
        TypeError: naming the first real parameter whose update is complex.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> x = {"w": jnp.array([1.0, 2.0], jnp.bfloat16)}
        >>> new = gx.apply_updates(x, {"w": jnp.array([0.5, -0.5])})
        >>> new["w"].dtype, new["w"].tolist()
        (dtype(bfloat16), [1.5, 1.5])
    """
    tree.check_structure(params, updates, "params", "updates")
    tree.check_complex_updates(params, updates)
    return jax.tree.map(
        lambda p, u: tree.to_dtype(jnp.asarray(p + u), jnp.asarray(p).dtype), params, updates
    )
