"""Gradient accumulation: ``k`` microbatch calls make one step on their mean gradient."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradxform import checks, tree
from gradxform.base import (
    GradientTransformation,
    GradientTransformationExtraArgs,
    with_extra_args,
)
from gradxform.hyperparams import increment_count
from gradxform.transforms.finite import ApplyIfFiniteState

__all__ = ["AccumulateState", "accumulate", "has_updated"]


class AccumulateState(NamedTuple):
    """State of :func:`accumulate`.

    Attributes:
        mini_step: microbatches summed in ``acc_grads`` since the last step
            (int32, in ``[0, every)``; 0 right after a step).
        gradient_step: steps of the inner transform taken so far (int32,
            saturating at ``2**31 - 1``).
        acc_grads: the running sum of this step's microbatch gradients, in
            the accumulator dtype (the only buffer shaped like the params).
        inner_state: the wrapped transform's state, as of the last step.
    """

    mini_step: jax.Array
    gradient_step: jax.Array
    acc_grads: Any
    inner_state: Any


def _leaf_dtype(param: Any, dtype: np.dtype | None) -> np.dtype:
    """The accumulator dtype of one leaf: the param's, or ``dtype`` (complex for complex leaves)."""
    own = jnp.asarray(param).dtype
    if dtype is None:
        return own
    if jnp.issubdtype(own, jnp.complexfloating):
        return jnp.promote_types(dtype, jnp.complex64)
    return dtype


def _mean(total: jax.Array, every: int) -> jax.Array:
    """``total / every``; a complex sum has its real and imaginary parts divided alone."""
    if jnp.iscomplexobj(total):
        return jax.lax.complex(total.real / every, total.imag / every)
    return total / every


def accumulate(
    tx: GradientTransformation, every: int, *, accumulator_dtype: Any = None
) -> GradientTransformationExtraArgs:
    r"""Sums ``every`` microbatch gradients, then runs ``tx`` once on their mean.

    With :math:`k` = ``every``, calls :math:`1, \dots, k` receive gradients
    :math:`g_1, \dots, g_k`. Calls :math:`1, \dots, k-1` add their gradient
    to the accumulator and return zero updates, leaving ``tx``'s state as it
    was; call :math:`k` runs ``tx`` on

    .. math:: \bar g = (g_1 + g_2 + \dots + g_k) / k,

    the sum taken in the order received and divided once, then clears the
    accumulator. So ``k`` calls equal one call of ``tx`` on the mean a JAX
    program computes, ``functools.reduce(operator.add, grads) / k``, bit for
    bit (XLA evaluates ``/ k`` as ``* (1 / k)``, within one ulp of NumPy's
    quotient). The mean is materialised before ``tx`` reads it (an
    optimisation barrier), so XLA cannot fold :math:`1/k` into ``tx``'s own
    constants. optax's ``MultiSteps`` keeps a running mean instead
    (:math:`a \leftarrow a + (g - a)/(n+1)`), which rounds differently. The
    accumulator starts at ``-0.0``, the exact additive identity, so
    ``every=1`` hands ``tx`` each gradient unchanged.

    ``every`` is a Python ``int`` fixed when built, not a hyperparameter in
    the state: it decides which calls run ``tx`` and divides the sum. The
    state's structure does not depend on it, so a state saved at a step
    boundary (``mini_step == 0``) can continue under another ``every``.

    Under ``jit`` the inner update sits in a ``lax.cond``: the ``k - 1``
    accumulating calls add one array per leaf and do not run ``tx`` (XLA
    copies ``tx``'s state through the conditional instead; the guide
    measures both). Extra
    arguments (``value=``, ...) reach ``tx`` on the final call: they are that
    microbatch's. The hyperparameters of ``tx`` stay readable and settable
    through this state (:func:`gradxform.get_hyperparams`). To skip
    microbatches whose gradients are not finite, wrap this transform:
    ``apply_if_finite(accumulate(tx, k))`` (see the guide).

    Args:
        tx: the transform to run on the mean gradient (gradxform or optax).
        every: the number of microbatches per step, an integer >= 1.
        accumulator_dtype: the dtype of the running sum; ``None`` (default)
            uses each parameter's dtype, a real floating dtype (such as
            ``jnp.float32`` for bfloat16 gradients) is used for every real
            leaf and its complex counterpart for complex leaves. The mean is
            cast to the gradient's dtype before ``tx`` sees it.

    Returns:
        A ``GradientTransformationExtraArgs`` with state
        :class:`AccumulateState`.

    Raises:
        TypeError: if ``every`` is not an integer or ``accumulator_dtype`` not a dtype.
        ValueError: if ``every < 1`` or ``accumulator_dtype`` is not floating.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.accumulate(gx.sgd(1.0), every=2)
        >>> state = tx.init(jnp.zeros(1))
        >>> u1, state = tx.update(jnp.array([1.0]), state)
        >>> u2, state = tx.update(jnp.array([2.0]), state)
        >>> u1.tolist(), u2.tolist(), bool(gx.has_updated(state))
        ([0.0], [-1.5], True)
    """
    every = checks.integer("every", every, minimum=1)
    acc_dtype = checks.optional_dtype("accumulator_dtype", accumulator_dtype)
    inner = with_extra_args(tx)

    def init_fn(params):
        acc = jax.tree.map(lambda p: tree.full_like(p, -0.0, _leaf_dtype(p, acc_dtype)), params)
        # two arrays, not one twice: a step that donates the state donates each buffer once
        mini_step, gradient_step = jnp.zeros([], jnp.int32), jnp.zeros([], jnp.int32)
        return AccumulateState(mini_step, gradient_step, acc, inner.init(params))

    def update_fn(updates, state, params=None, **extra_args):
        tree.check_structure(state.acc_grads, updates, "accumulator", "updates")
        total = jax.tree.map(lambda a, g: tree.to_dtype(a + g, a.dtype), state.acc_grads, updates)

        def step(total):
            mean = jax.tree.map(
                lambda s, g: tree.to_dtype(_mean(s, every), g.dtype), total, updates
            )
            mean = jax.lax.optimization_barrier(mean)  # XLA would fold 1/k into tx's constants
            out, new_inner = inner.update(mean, state.inner_state, params, **extra_args)
            return out, new_inner, tree.full_like(total, -0.0)

        def wait(total):
            out = jax.tree.map(jnp.zeros_like, jax.eval_shape(step, total)[0])
            return out, state.inner_state, total

        emit = state.mini_step == every - 1
        if every == 1:
            out, new_inner, total = step(total)
        else:
            out, new_inner, total = jax.lax.cond(emit, step, wait, total)
        mini_step = jnp.where(emit, 0, state.mini_step + 1).astype(jnp.int32)
        gradient_step = jnp.where(emit, increment_count(state.gradient_step), state.gradient_step)
        return out, AccumulateState(mini_step, gradient_step, total, new_inner)

    return GradientTransformationExtraArgs(init_fn, update_fn)


def has_updated(state: Any) -> jax.Array:
    """Whether the latest update of an :func:`accumulate` in ``state`` took a step.

    True after every ``every``-th call (the params moved), False after the
    calls that only accumulated. Works inside ``jit`` (a traced boolean), for
    example to update averaged weights or log metrics once per step. When an
    :func:`gradxform.apply_if_finite` wraps the accumulation and skipped the
    latest microbatch (which leaves the accumulation's state as it was), the
    answer is False. A guard inside, ``accumulate(apply_if_finite(tx), k)``,
    is not consulted: every ``k``-th call counts as a step, and the guard's
    ``last_finite`` says whether that step was applied or skipped.

    Args:
        state: an optimizer state holding one or more :class:`AccumulateState`
            (the state of :func:`accumulate`, a chain's state, ...).

    Returns:
        A boolean scalar array: True when every accumulation found has just
        taken a step.

    Raises:
        ValueError: if ``state`` holds no :class:`AccumulateState`.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.accumulate(gx.adam(0.1), every=3)
        >>> state = tx.init(jnp.zeros(2))
        >>> flags = []
        >>> for _ in range(6):
        ...     _, state = tx.update(jnp.ones(2), state)
        ...     flags.append(bool(gx.has_updated(state)))
        >>> flags
        [False, False, True, False, False, True]
    """
    flags = _updated_flags(state, jnp.array(True))
    if not flags:
        checks.fail("has_updated's state", "a state holding an AccumulateState", type(state))
    return jnp.all(jnp.stack(flags))


def _is_wrapper_state(x: Any) -> bool:
    return isinstance(x, (AccumulateState, ApplyIfFiniteState))


def _updated_flags(state: Any, applied: jax.Array) -> list[jax.Array]:
    """One flag per AccumulateState, and'ed with ``last_finite`` of every guard around it."""
    flags = []
    for node in jax.tree.leaves(state, is_leaf=_is_wrapper_state):
        if isinstance(node, ApplyIfFiniteState):
            flags += _updated_flags(node.inner_state, applied & node.last_finite)
        elif isinstance(node, AccumulateState):
            stepped = (node.mini_step == 0) & (node.gradient_step > 0)
            flags.append(applied & stepped)
    return flags
