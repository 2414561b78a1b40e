r"""Schedule-free optimisation (Defazio et al., 2024, "The Road Less Scheduled").

A base optimizer without momentum steps a sequence :math:`z`; the parameters
the gradient is taken at, :math:`y`, interpolate between :math:`z` and a
weighted average :math:`x` of the :math:`z`'s, which is what one evaluates:

.. math::

    z_{t+1} = z_t + \Delta_t, \quad
    x_{t+1} = (1 - c_{t+1})\, x_t + c_{t+1}\, z_{t+1}, \quad
    y_{t+1} = \beta_1 x_{t+1} + (1 - \beta_1)\, z_{t+1},

with :math:`\Delta_t` the base optimizer's update at :math:`y_t` and the
averaging weights :math:`c_{t+1} = w_t / \sum_{s \le t} w_s`,
:math:`w_t = t^r\, (\max_{s \le t} \gamma_s)^p` (:math:`\gamma_s` the
learning rate, :math:`p` = ``weight_lr_power``), so that steps taken during
a warmup count less. The state keeps :math:`z` only: :math:`x` is recovered
from the parameters as :math:`x = (y - (1 - \beta_1) z) / \beta_1`, so the
memory is the base optimizer's plus one copy of the parameters.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.typing import DTypeLike

from gradxform import checks, tree
from gradxform.base import (
    EmptyState,
    GradientTransformation,
    GradientTransformationExtraArgs,
    with_extra_args,
)
from gradxform.hyperparams import Hyperparam, Hyperparams, HyperparamState, ScalarOrSchedule

__all__ = ["ScheduleFreeState", "schedule_free", "schedule_free_eval_params"]

_BASE_PARAMS = ("y", "z")


class ScheduleFreeState(NamedTuple):
    """State of :func:`schedule_free`.

    Attributes:
        z: the base optimizer's sequence :math:`z`, shaped like the params,
            in ``state_dtype`` (the initial params at first).
        b1: the :math:`\\beta_1` the params :math:`y` were last formed with
            (:math:`y = \\beta_1 x + (1 - \\beta_1) z`), read to recover
            :math:`x` (a ``b1`` set between steps takes effect from the next
            interpolation on); 1/2 before the first update, where
            :math:`y = z = x` and 1/2 recovers :math:`x` exactly.
        one_minus_b1: its complement :math:`1 - \\beta_1`, as that update used it.
        weight_sum: :math:`\\sum_{s \\le t} w_s`, the averaging weights so far
            (float32, float64 with float64 params).
        max_lr: the largest learning rate seen so far (same dtype).
        base_state: the base optimizer's state.
        hyperparams: the store of ``learning_rate``, ``schedule_free_b1``,
            ``schedule_free_weight_lr_power``, ``schedule_free_r`` and the
            step count (``EmptyState()`` when all are handles).
    """

    z: Any
    b1: jax.Array
    one_minus_b1: jax.Array
    weight_sum: jax.Array
    max_lr: jax.Array
    base_state: Any
    hyperparams: HyperparamState | EmptyState


def _weight_dtype(params: Any) -> np.dtype:
    """float64 when a leaf is float64 or complex128, else float32 (the store's rule)."""
    wide = (np.dtype("float64"), np.dtype("complex128"))
    leaves = jax.tree.leaves(params)
    return np.dtype("float64" if any(jnp.asarray(p).dtype in wide for p in leaves) else "float32")


def _store(learning_rate, b1, weight_lr_power, r) -> Hyperparams:
    hp = Hyperparams(
        learning_rate=learning_rate,
        schedule_free_b1=b1,
        schedule_free_weight_lr_power=weight_lr_power,
        schedule_free_r=r,
    )
    hp.check("learning_rate", lower=0)
    hp.check("schedule_free_b1", lower=0, upper=1, lower_open=True, upper_open=True)
    hp.check("schedule_free_weight_lr_power", lower=0).check("schedule_free_r", lower=0)
    return hp.use_complement("schedule_free_b1").use_count()


def _averaging_weight(values: Any, state: ScheduleFreeState) -> tuple[Any, Any, Any]:
    """``(c, weight_sum, max_lr)`` after this update: :math:`c = w_t / \\sum_{s \\le t} w_s`
    (0 while every weight is 0), :math:`w_t = t^r (\\max_{s \\le t} \\gamma_s)^p`."""
    dt = state.max_lr.dtype
    max_lr = jnp.maximum(state.max_lr, values["learning_rate"].astype(dt))
    power = values["schedule_free_weight_lr_power"].astype(dt)
    # max_lr ** 2 as a product (the exponent is a state operand, and XLA's pow(x, 2)
    # on a variable exponent rounds differently from the x * x optax compiles to)
    weight = jnp.where(power == 2, max_lr * max_lr, max_lr**power)
    t = values.count.astype(dt)
    weight = weight * t ** values["schedule_free_r"].astype(dt)
    weight_sum = state.weight_sum + weight
    c = jnp.where(weight_sum == 0, jnp.zeros_like(weight), weight / weight_sum)
    return c, weight_sum, max_lr


def _interpolate(params, z_old, z, state, values, c):
    """The update :math:`y_{t+1} - y_t`, each leaf in its parameter's dtype."""
    b1, gain = values["schedule_free_b1"], values.complement("schedule_free_b1")

    # (1 - c) x_t = (y_t - (1 - b1) z_t) * ((1 - c) / b1): one scalar, a product per element
    # instead of a division (the program XLA compiles optax.contrib's expression to)
    shrink = (1 - c) * (1 / state.b1)

    def leaf(y, zo, zn):
        dt = tree.real_dtype(jnp.promote_types(y.dtype, zn.dtype))
        cast = lambda s: tree.to_dtype(s, dt)  # noqa: E731
        x = (y - cast(state.one_minus_b1) * zo) * cast(shrink) + cast(c) * zn
        y_new = cast(b1) * x + cast(gain) * zn
        return tree.to_dtype(y_new - y, y.dtype)

    return jax.tree.map(leaf, params, z_old, z)


def schedule_free(
    base_optimizer: GradientTransformation,
    learning_rate: ScalarOrSchedule | Hyperparam,
    b1: ScalarOrSchedule | Hyperparam = 0.9,
    weight_lr_power: ScalarOrSchedule | Hyperparam = 2.0,
    state_dtype: DTypeLike | None = None,
    *,
    r: ScalarOrSchedule | Hyperparam = 0.0,
    base_params: str = "y",
) -> GradientTransformationExtraArgs:
    r"""Makes ``base_optimizer`` schedule-free: it steps :math:`z`; the params interpolate.

    With :math:`y_t` the params given to the update (the point the gradient
    was taken at), :math:`z_t` and :math:`x_t = (y_t - (1 - \beta_1) z_t) /
    \beta_1` (recovered, not stored), one update is

    .. math::

        z_{t+1} &= z_t + \mathrm{base}(g_t, y_t), \\
        x_{t+1} &= (1 - c_{t+1})\, x_t + c_{t+1}\, z_{t+1}, \quad
        c_{t+1} = \frac{w_t}{\sum_{s=1}^t w_s}, \quad
        w_t = t^r \bigl(\max_{s \le t} \gamma_s\bigr)^p, \\
        y_{t+1} &= \beta_1 x_{t+1} + (1 - \beta_1)\, z_{t+1},

    and the update returned is :math:`y_{t+1} - y_t`. The base optimizer
    carries the learning rate :math:`\gamma_t` (and must have no momentum:
    :math:`\beta_1` replaces it); ``learning_rate`` here is the same rate,
    read only for the averaging weights (give both the same handle). Evaluate
    at :math:`x` with :func:`schedule_free_eval_params`. These are optax.contrib's
    ``schedule_free`` semantics (with :math:`r = 0`) and the ``schedulefree``
    package's; ``r`` is the package's polynomial weighting, ``base_params="z"``
    its ``decay_at_z`` (the base optimizer, hence a weight decay in it, sees
    :math:`z` instead of :math:`y`).

    Composition: the wrapper of ``base_optimizer``; :func:`gradxform.schedule_free_adamw`
    and :func:`gradxform.schedule_free_sgd` build it with one store.

    Args:
        base_optimizer: the optimizer stepping :math:`z`, learning rate included.
        learning_rate: :math:`\gamma_t \ge 0`, the base optimizer's rate: a
            number, a schedule or a handle (the hyperparameter ``learning_rate``).
        b1: :math:`\beta_1` in (0, 1), the interpolation (``schedule_free_b1``).
        weight_lr_power: :math:`p \ge 0` (``schedule_free_weight_lr_power``).
        state_dtype: dtype of :math:`z` (default: each parameter's dtype).
        r: :math:`r \ge 0`, the polynomial weighting (``schedule_free_r``).
        base_params: ``"y"`` (optax.contrib, the package's default) or ``"z"``:
            the params the base optimizer's update is given.

    Returns:
        The wrapped optimizer; its state is :class:`ScheduleFreeState`. Its
        update needs ``params``.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.schedule_free(gx.sgd(1.0), learning_rate=1.0, b1=0.5)
        >>> y = jnp.zeros(1)
        >>> state = tx.init(y)
        >>> u, state = tx.update(jnp.array([-2.0]), state, y)  # z = 2, x = z (c = 1)
        >>> y = gx.apply_updates(y, u)
        >>> float(y[0]), float(gx.schedule_free_eval_params(state, y)[0])
        (2.0, 2.0)
        >>> u, state = tx.update(jnp.array([-2.0]), state, y)  # z = 4, x = (2 + 4) / 2
        >>> y = gx.apply_updates(y, u)
        >>> float(y[0]), float(gx.schedule_free_eval_params(state, y)[0])
        (3.5, 3.0)
    """
    base = with_extra_args(base_optimizer)
    state_dtype = checks.optional_dtype("state_dtype", state_dtype, complex_ok=True)
    checks.choice("base_params", base_params, _BASE_PARAMS)
    hp = _store(learning_rate, b1, weight_lr_power, r)

    def init_fn(params):
        tree.check_params(params)
        z = jax.tree.map(lambda p: jnp.array(p, dtype=state_dtype, copy=True), params)
        dt = _weight_dtype(params)
        # y = z: b1 = 1/2 recovers x = y exactly; four distinct buffers (a state is donated)
        half, other_half, zero, other_zero = (jnp.full([], v, dt) for v in (0.5, 0.5, 0, 0))
        base_state, hyper = base.init(params), hp.init(params)
        return ScheduleFreeState(z, half, other_half, zero, other_zero, base_state, hyper)

    def update_fn(updates, state, params=None, **extra_args):
        if params is None:
            checks.fail("params", "given (schedule_free interpolates the params)", params)
        tree.check_structure(params, updates, "params", "updates")
        values, hyper = hp.step(state.hyperparams, extra_args)
        c, weight_sum, max_lr = _averaging_weight(values, state)
        at = params if base_params == "y" else state.z
        steps, base_state = base.update(updates, state.base_state, at, **extra_args)
        z = jax.tree.map(lambda zi, s: tree.to_dtype(zi + s, zi.dtype), state.z, steps)
        out = _interpolate(params, state.z, z, state, values, c)
        dt = state.b1.dtype
        b1_used = values["schedule_free_b1"].astype(dt)
        gain = values.complement("schedule_free_b1").astype(dt)
        new_state = ScheduleFreeState(z, b1_used, gain, weight_sum, max_lr, base_state, hyper)
        return out, new_state

    return GradientTransformationExtraArgs(init_fn, update_fn)


def _is_schedule_free(x: Any) -> bool:
    return isinstance(x, ScheduleFreeState)


def _is_masked(x: Any) -> bool:
    return isinstance(x, optax.MaskedNode)


def schedule_free_eval_params(opt_state: Any, params: Any) -> Any:
    r"""The parameters to evaluate a schedule-free optimizer at: :math:`x`, from y and z.

    .. math:: x = \bigl(y - (1 - \beta_1)\, z\bigr) / \beta_1

    with :math:`y` the current ``params`` and :math:`z`, :math:`\beta_1` read
    from the :func:`schedule_free` state found anywhere in ``opt_state`` (an
    alias's store chain, a chain, partition groups: each group's state gives
    the leaves it holds, and a leaf no schedule-free state holds is returned
    as it is). Reads the state and changes nothing; usable inside ``jit``.

    Args:
        opt_state: an optimizer state holding at least one :class:`ScheduleFreeState`.
        params: the current parameters :math:`y` (those the last update produced).

    Returns:
        :math:`x`, shaped like ``params``, each leaf in its parameter's dtype.

    Raises:
        ValueError: when ``opt_state`` holds no :class:`ScheduleFreeState`.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.schedule_free_sgd(1.0)
        >>> y = jnp.ones(2)
        >>> gx.schedule_free_eval_params(tx.init(y), y).tolist()  # before any update: y
        [1.0, 1.0]
    """
    found = [
        node
        for node in jax.tree.leaves(opt_state, is_leaf=_is_schedule_free)
        if _is_schedule_free(node)
    ]
    if not found:
        checks.fail(
            "schedule_free_eval_params' opt_state",
            "an optimizer state holding a ScheduleFreeState",
            f"a state holding none ({type(opt_state).__name__})",
        )
    x = params
    for state in found:  # each group's state holds its leaves, MaskedNode() elsewhere

        def leaf(z, y, state=state):
            return y if _is_masked(z) else _recover(jnp.asarray(y), z, state)

        x = jax.tree.map(leaf, state.z, x, is_leaf=_is_masked)
    return x


def _recover(y: jax.Array, z: jax.Array, state: ScheduleFreeState) -> jax.Array:
    dt = tree.real_dtype(jnp.promote_types(y.dtype, z.dtype))
    x = (y - tree.to_dtype(state.one_minus_b1, dt) * z) / tree.to_dtype(state.b1, dt)
    return tree.to_dtype(x, y.dtype)
