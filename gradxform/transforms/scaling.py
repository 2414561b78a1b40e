"""Scaling transforms: multiply updates by a number, a schedule or the learning rate."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform import checks, tree
from gradxform.base import EmptyState, GradientTransformationExtraArgs, Schedule
from gradxform.hyperparams import Hyperparam, Hyperparams, HyperparamState, ScalarOrSchedule

__all__ = [
    "AddDecayedWeightsState",
    "ScaleByLearningRateState",
    "ScaleState",
    "add_decayed_weights",
    "scale",
    "scale_by_learning_rate",
    "scale_by_schedule",
]


class ScaleState(NamedTuple):
    """State of :func:`scale` and :func:`scale_by_schedule`.

    Attributes:
        hyperparams: the block's store of the factor (``EmptyState()`` for a handle).
    """

    hyperparams: HyperparamState | EmptyState


def scale(
    factor: ScalarOrSchedule | Hyperparam, *, name: str = "factor"
) -> GradientTransformationExtraArgs:
    r"""Multiplies the updates by a factor: :math:`u \leftarrow c\, u`.

    Args:
        factor: :math:`c`, any finite real: a number, a schedule or a handle.
        name: the factor's key in the state (for a number or a schedule).

    Returns:
        The block; its state is :class:`ScaleState`.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.scale(-3.0)
        >>> u, _ = tx.update(jnp.array([1.0, 2.0]), tx.init(jnp.zeros(2)))
        >>> u.tolist()
        [-3.0, -6.0]
    """
    hp = Hyperparams(**{name: factor}).check(name)
    return hp.transform(
        lambda updates, values, params: tree.scale(values[name], updates), ScaleState
    )


def scale_by_schedule(schedule: Schedule) -> GradientTransformationExtraArgs:
    r"""Multiplies the updates by a schedule: :math:`u \leftarrow s(t)\, u`.

    :math:`t` is the number of updates taken so far (0 at the first); the
    current factor is stored under the name ``schedule``.

    Args:
        schedule: a function of the step count.

    Returns:
        A :func:`scale` block whose factor is named ``schedule`` (state: :class:`ScaleState`).

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.scale_by_schedule(lambda t: 0.5**t)
        >>> state = tx.init(jnp.zeros(1))
        >>> _, state = tx.update(jnp.ones(1), state)
        >>> u, _ = tx.update(jnp.ones(1), state)
        >>> float(u[0])
        0.5
    """
    checks.callable_arg("schedule", schedule, "t -> factor")
    return scale(schedule, name="schedule")


class ScaleByLearningRateState(NamedTuple):
    """State of :func:`scale_by_learning_rate`.

    Attributes:
        hyperparams: the block's store of ``learning_rate`` (``EmptyState()``
            for a handle).
    """

    hyperparams: HyperparamState | EmptyState


def scale_by_learning_rate(
    learning_rate: ScalarOrSchedule | Hyperparam, *, flip_sign: bool = True
) -> GradientTransformationExtraArgs:
    r"""The step: :math:`u \leftarrow -\eta\, u`, the only sign flip in gradxform.

    Args:
        learning_rate: :math:`\eta \ge 0`: a number, a schedule
            :math:`t \mapsto \eta_t` evaluated at :math:`t` = number of updates
            taken so far (0 first), or a handle.
        flip_sign: ``False`` gives :math:`+\eta\, u` (for ascent, or for
            composing the velocity form of momentum by hand).

    Returns:
        The block; its state is :class:`ScaleByLearningRateState`.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.scale_by_learning_rate(0.1)
        >>> u, _ = tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))
        >>> round(float(u[0]), 6)
        -0.2
    """
    hp = Hyperparams(learning_rate=learning_rate).check("learning_rate", lower=0)
    sign = -1 if flip_sign else 1

    def apply(updates, values, params):
        return tree.scale(sign * values["learning_rate"], updates)

    return hp.transform(apply, ScaleByLearningRateState)


class AddDecayedWeightsState(NamedTuple):
    """State of :func:`add_decayed_weights`.

    Attributes:
        hyperparams: the block's store of ``weight_decay`` (``EmptyState()`` for a handle).
    """

    hyperparams: HyperparamState | EmptyState


def _masked(mask: Any, params: Any, out: Any, updates: Any) -> Any:
    """``out`` where the mask of ``params`` is True, ``updates`` elsewhere."""
    flags = mask(params) if callable(mask) else mask
    tree.check_structure(params, flags, "params", "mask", leaves=False)

    def leaf(keep, o, u):
        return (o if keep else u) if isinstance(keep, bool) else jnp.where(keep, o, u)

    return jax.tree.map(leaf, flags, out, updates)


def add_decayed_weights(
    weight_decay: ScalarOrSchedule | Hyperparam = 0.0,
    mask: Any | Callable[[Any], Any] | None = None,
) -> GradientTransformationExtraArgs:
    r"""Adds decayed weights: :math:`u \leftarrow u + \lambda x` (where ``mask`` is True).

    Before the moments (``chain(add_decayed_weights(wd), adam...)``) this is
    L2 regularisation, torch's ``weight_decay``; after them it is decoupled
    weight decay, as in :func:`gradxform.adamw`.

    Args:
        weight_decay: :math:`\lambda \ge 0`: a number, a schedule or a handle.
        mask: ``None`` (decay every leaf), a pytree of bools shaped like the
            params, or a function ``params -> such a pytree`` (e.g. to spare biases).

    Returns:
        The block; its state is :class:`AddDecayedWeightsState`. Its update
        needs ``params``.

    Raises:
        ValueError: for an empty mask pytree.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.add_decayed_weights(0.5)
        >>> x = jnp.array([2.0])
        >>> u, _ = tx.update(jnp.array([1.0]), tx.init(x), x)
        >>> float(u[0])
        2.0
    """
    hp = Hyperparams(weight_decay=weight_decay).check("weight_decay", lower=0)
    if mask is not None and not callable(mask) and not jax.tree.leaves(mask):
        checks.fail("mask", "a pytree of bools, a function params -> mask, or None", mask)

    def apply(updates, values, params):
        if params is None:
            checks.fail("params", "given (add_decayed_weights' update needs params)", params)
        tree.check_structure(params, updates, "params", "updates")
        out = tree.cast(tree.add(updates, tree.scale(values["weight_decay"], params)), updates)
        return out if mask is None else _masked(mask, params, out, updates)

    return hp.transform(apply, AddDecayedWeightsState)


def decay_off(weight_decay: Any) -> bool:
    """Whether an alias's ``weight_decay`` asks for no decay block: ``None``, or a
    Python or NumPy number equal to 0 (as ``optax.add_decayed_weights`` skips a zero
    given as a number).

    A scalar array or a schedule keeps the block, so its value can be set later
    (``gx.set_hyperparams(state, weight_decay=...)``), ``jnp.asarray(0.0)`` included.
    Leaving the block out matters for speed: ``g + 0 * x`` is one more pass over the
    parameters, which XLA cannot drop for a value read from the state.
    """
    return weight_decay is None or (checks.is_real_number(weight_decay) and weight_decay == 0)


def decay_spec(weight_decay: Any, name: str = "weight_decay") -> dict[str, Any]:
    """``{name: weight_decay}`` for an alias's store, or ``{}`` when :func:`decay_off`."""
    return {} if decay_off(weight_decay) else {name: weight_decay}


def decay_blocks(
    hp: Hyperparams, mask: Any = None, name: str = "weight_decay"
) -> list[GradientTransformationExtraArgs]:
    """``[add_decayed_weights(hp[name], mask)]`` if the store declares ``name``, else ``[]``."""
    return [add_decayed_weights(hp[name], mask)] if name in hp.specs else []
