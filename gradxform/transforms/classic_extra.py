r"""Adadelta's unit-correcting ratio, Rprop's sign-adapted step sizes, NAdam's momentum decay.

Adadelta's direction is one block, :func:`scale_by_adadelta`; Rprop's is
:func:`scale_by_rprop`; torch's NAdam (Dozat's momentum schedule) is::

    divide(momentum_decay_first_moment(b1, momentum_decay),
           chain(ema_second_moment(b2), bias_correct(b2), sqrt_with_eps(eps, None)))

with the hyperparameters handles of one :class:`~gradxform.hyperparams.Hyperparams`
store, as in :mod:`gradxform.transforms.moments`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import DTypeLike

from gradxform import checks, tree
from gradxform.base import EmptyState, GradientTransformationExtraArgs
from gradxform.hyperparams import Hyperparam, Hyperparams, HyperparamState, ScalarOrSchedule

__all__ = [
    "MomentumDecayFirstMomentState",
    "ScaleByAdadeltaState",
    "ScaleByRpropLaggedState",
    "ScaleByRpropState",
    "momentum_decay_first_moment",
    "scale_by_adadelta",
    "scale_by_rprop",
]

_DECAY: dict[str, Any] = {"lower": 0, "upper": 1, "upper_open": True}


class ScaleByAdadeltaState(NamedTuple):
    """State of :func:`scale_by_adadelta`.

    Attributes:
        e_g: :math:`E[g^2]`, the decayed mean of the squared updates it is given
            (real, at least float32).
        e_x: :math:`E[\\Delta^2]`, the decayed mean of its own squared outputs.
        hyperparams: the block's store of ``rho`` and ``eps`` (``EmptyState()``
            when both are handles).
    """

    e_g: Any
    e_x: Any
    hyperparams: HyperparamState | EmptyState


def scale_by_adadelta(
    rho: ScalarOrSchedule | Hyperparam = 0.9,
    eps: ScalarOrSchedule | Hyperparam = 1e-6,
    *,
    dtype: DTypeLike | None = None,
) -> GradientTransformationExtraArgs:
    r"""Adadelta's direction (Zeiler, 2012): the gradient in the units of past steps.

    .. math::

        E[g^2] \leftarrow \rho E[g^2] + (1 - \rho) |g|^2, \quad
        \Delta = \frac{\sqrt{E[\Delta^2] + \epsilon}}{\sqrt{E[g^2] + \epsilon}}\, g, \quad
        E[\Delta^2] \leftarrow \rho E[\Delta^2] + (1 - \rho) |\Delta|^2

    output :math:`\Delta` (with the old :math:`E[\Delta^2]`), the same
    expression and order as optax's ``scale_by_adadelta`` and torch's
    ``Adadelta``. See :func:`gradxform.adadelta`.

    Args:
        rho: :math:`\rho` in [0, 1), the decay of both means.
        eps: :math:`\epsilon \ge 0`, inside both roots.
        dtype: dtype of both means (default: each parameter's real dtype, at
            least float32, see :func:`gradxform.tree.squares_like`).

    Returns:
        The block; its state is :class:`ScaleByAdadeltaState`.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.scale_by_adadelta(rho=0.5, eps=1.0)
        >>> u, _ = tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))
        >>> float(u[0])  # sqrt(0 + 1) / sqrt(0.5 * 4 + 1) * 2
        1.154700517654419
    """
    hp = Hyperparams(rho=rho, eps=eps).check("rho", **_DECAY).use_complement("rho")
    hp.check("eps", lower=0)

    def init_fn(params):
        e_g, e_x = (tree.squares_like(params, 0.0, dtype) for _ in range(2))  # own buffers
        return ScaleByAdadeltaState(e_g, e_x, hp.init(params))

    def update_fn(updates, state, params=None, **extra_args):
        del params
        tree.check_structure(state.e_g, updates, "Adadelta's E[g^2]", "updates")
        values, hyper = hp.step(state.hyperparams, extra_args)
        rho, one_minus_rho = values["rho"], values.complement("rho")
        squares = jax.tree.map(tree.squared_magnitude, updates, state.e_g)
        e_g = tree.ema(rho, one_minus_rho, state.e_g, squares)

        def leaf(g, eg, ex):
            eps = tree.to_dtype(values["eps"], eg.dtype)
            return jnp.sqrt(ex + eps) / jnp.sqrt(eg + eps) * g

        steps = jax.tree.map(leaf, updates, e_g, state.e_x)
        squares = jax.tree.map(tree.squared_magnitude, steps, state.e_x)
        e_x = tree.ema(rho, one_minus_rho, state.e_x, squares)
        return tree.cast(steps, updates), ScaleByAdadeltaState(e_g, e_x, hyper)

    return GradientTransformationExtraArgs(init_fn, update_fn)


class ScaleByRpropState(NamedTuple):
    """State of :func:`scale_by_rprop`.

    Attributes:
        step_sizes: each element's step size :math:`\\delta` (in the params' dtypes).
        previous_sign: the sign of the previous update it was given, 0 where
            that update changed sign (and before the first).
        hyperparams: the block's store of ``eta_minus``, ``eta_plus``,
            ``min_step_size`` and ``max_step_size``.
    """

    step_sizes: Any
    previous_sign: Any
    hyperparams: HyperparamState | EmptyState


class ScaleByRpropLaggedState(NamedTuple):
    """State of :func:`scale_by_rprop` with ``lagged=True`` (optax's form).

    Attributes:
        step_sizes: each element's step size :math:`\\delta` (in the params' dtypes).
        previous_step: the signed step :math:`\\delta \\operatorname{sign}(g)` of
            the previous update, 0 where that update changed sign (and before the
            first): the next update's output, as optax's ``prev_updates``. One array
            holds both what the next update emits and the sign it compares, so the
            output reads one old array, as optax's does (two made XLA copy both).
        hyperparams: the block's store of ``eta_minus``, ``eta_plus``,
            ``min_step_size`` and ``max_step_size``.
    """

    step_sizes: Any
    previous_step: Any
    hyperparams: HyperparamState | EmptyState


def _rprop_bounds(min_step_size: Any, max_step_size: Any) -> None:
    """``min_step_size <= max_step_size`` when both are numbers (build time)."""
    if checks.is_real_number(min_step_size) and checks.is_real_number(max_step_size):
        if min_step_size > max_step_size:
            checks.fail("max_step_size", f">= min_step_size ({min_step_size!r})", max_step_size)


def _rprop_leaf(values: Any, lagged: bool, g: jax.Array, step: jax.Array, previous: jax.Array):
    """One leaf of :func:`scale_by_rprop`: ``(output, new step sizes, new previous signs)``
    (lagged: the new signed steps)."""
    dt = step.dtype
    v = {k: tree.to_dtype(values[k], dt) for k in values}
    grad = tree.to_dtype(g, dt)
    sign = jnp.sign(grad)
    # lagged (optax's form): the product with the signed step, as optax compares them (a
    # product that underflows to 0 counts as no sign; one sign op, not three, per kernel)
    agree = grad * previous if lagged else sign * previous
    factor = jnp.where(agree > 0, v["eta_plus"], v["eta_minus"])
    grown = jnp.clip(step * factor, v["min_step_size"], v["max_step_size"])
    held = step if lagged else jnp.clip(step, v["min_step_size"], v["max_step_size"])
    new_step = jnp.where(agree == 0, held, grown)  # torch clips a factor of 1 too, optax not
    kept = jnp.where(agree < 0, jnp.zeros_like(previous), sign)
    emitted = previous if lagged else new_step * kept
    out = jnp.where(agree < 0, jnp.zeros_like(emitted), emitted)
    return tree.to_dtype(out, g.dtype), new_step, new_step * kept if lagged else kept


def scale_by_rprop(
    initial_step_size: float = 0.01,
    eta_minus: ScalarOrSchedule | Hyperparam = 0.5,
    eta_plus: ScalarOrSchedule | Hyperparam = 1.2,
    min_step_size: ScalarOrSchedule | Hyperparam = 1e-6,
    max_step_size: ScalarOrSchedule | Hyperparam = 50.0,
    *,
    lagged: bool = False,
) -> GradientTransformationExtraArgs:
    r"""Rprop's direction (Riedmiller & Braun, 1993; iRprop- of Igel & Hüsken, 2003).

    With :math:`s = \operatorname{sign}(g) \operatorname{sign}(g_{\text{prev}})`
    elementwise:

    .. math::

        \delta \leftarrow \operatorname{clip}\bigl(\delta \cdot
        (\eta_+ \text{ if } s > 0,\ \eta_- \text{ if } s < 0,\ 1 \text{ else}),
        \delta_{\min}, \delta_{\max}\bigr), \quad
        g_{\text{prev}} \leftarrow (0 \text{ if } s < 0 \text{ else } g), \quad
        \text{output } \delta \operatorname{sign}(g_{\text{prev}})

    as torch's ``Rprop``. ``lagged=True`` is optax 0.2.8's ``scale_by_rprop``:
    the *previous* update's output (zero at the first; optax pull request
    1725), and a step size whose factor is 1 left unclipped. That form keeps
    the signed step instead of the sign (:class:`ScaleByRpropLaggedState`) and
    compares it with :math:`g` by their product, as optax does, so a product
    that underflows to 0 counts as no previous sign.

    Args:
        initial_step_size: :math:`\delta_0 > 0`, every element's first step size
            (the optimizer's learning rate; a number, fixed when built).
        eta_minus: :math:`\eta_-` in (0, 1), the factor after a sign change.
        eta_plus: :math:`\eta_+ > 1`, the factor while the sign holds.
        min_step_size: :math:`\delta_{\min} \ge 0`.
        max_step_size: :math:`\delta_{\max} \ge \delta_{\min}`.
        lagged: optax's one-update-late output (see above).

    Returns:
        The block; its state is :class:`ScaleByRpropState`
        (:class:`ScaleByRpropLaggedState` with ``lagged=True``). Its ``init``
        raises ``TypeError`` for complex params.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.scale_by_rprop(0.1)
        >>> state = tx.init(jnp.zeros(2))
        >>> u, state = tx.update(jnp.array([3.0, -2.0]), state)
        >>> u, state = tx.update(jnp.array([1.0, 5.0]), state)
        >>> [round(float(v), 4) for v in u]  # 0.1 * 1.2 kept; 0.1 * 0.5, no step
        [0.12, 0.0]
    """
    step0 = checks.real("initial_step_size", initial_step_size, lower=0, lower_open=True)
    lagged = checks.boolean("lagged", lagged)
    hp = Hyperparams(
        eta_minus=eta_minus,
        eta_plus=eta_plus,
        min_step_size=min_step_size,
        max_step_size=max_step_size,
    )
    hp.check("eta_minus", lower=0, upper=1, lower_open=True, upper_open=True)
    hp.check("eta_plus", lower=1, lower_open=True)
    hp.check("min_step_size", lower=0).check("max_step_size", lower=0)
    _rprop_bounds(min_step_size, max_step_size)

    state_type = ScaleByRpropLaggedState if lagged else ScaleByRpropState

    def init_fn(params):
        tree.check_real_floating(params, "params")
        step_sizes = jax.tree.map(lambda x: jnp.full_like(x, step0), params)
        return state_type(step_sizes, tree.zeros_like(params), hp.init(params))

    def update_fn(updates, state, params=None, **extra_args):
        del params
        tree.check_structure(state.step_sizes, updates, "Rprop's step sizes", "updates")
        values, hyper = hp.step(state.hyperparams, extra_args)

        leaves, treedef = jax.tree.flatten(updates)
        steps = treedef.flatten_up_to(state.step_sizes)
        previous = treedef.flatten_up_to(state.previous_step if lagged else state.previous_sign)
        triples = [_rprop_leaf(values, lagged, *args) for args in zip(leaves, steps, previous)]
        out, step_sizes, previous = (treedef.unflatten([t[i] for t in triples]) for i in range(3))
        return out, state_type(step_sizes, previous, hyper)

    return GradientTransformationExtraArgs(init_fn, update_fn)


class MomentumDecayFirstMomentState(NamedTuple):
    """State of :func:`momentum_decay_first_moment`.

    Attributes:
        mu: the first moment :math:`m`, shaped like the params.
        mu_product: :math:`\\prod_{i \\le t} \\mu_i`, a scalar (float64 when a
            parameter is float64, else float32).
        hyperparams: the block's store of ``b1`` and ``momentum_decay``.
    """

    mu: Any
    mu_product: jax.Array
    hyperparams: HyperparamState | EmptyState


def _scalar_dtype(params: Any) -> np.dtype:
    """float64 when a leaf is float64 or complex128, else float32 (the stores' rule)."""
    wide = (np.dtype("float64"), np.dtype("complex128"))
    leaves = jax.tree.leaves(params)
    return np.dtype("float64" if any(jnp.dtype(x.dtype) in wide for x in leaves) else "float32")


def momentum_decay_first_moment(
    b1: ScalarOrSchedule | Hyperparam = 0.9,
    momentum_decay: ScalarOrSchedule | Hyperparam = 4e-3,
    *,
    dtype: DTypeLike | None = None,
) -> GradientTransformationExtraArgs:
    r"""NAdam's numerator with Dozat's momentum schedule (torch's ``NAdam``).

    With :math:`\mu_t = \beta_1 (1 - \tfrac12\, 0.96^{t \psi})` and
    :math:`\Pi_t = \prod_{i \le t} \mu_i`:

    .. math::

        m \leftarrow \beta_1 m + (1 - \beta_1) g, \quad
        \text{output } \frac{1 - \mu_t}{1 - \Pi_t}\, g
        + \frac{\mu_{t+1}}{1 - \Pi_t \mu_{t+1}}\, m

    :math:`\psi` is ``momentum_decay`` (torch's 4e-3, Dozat's 1/250).
    As :math:`\psi \to 0`, :math:`\mu_t \to \beta_1 / 2`; this is not optax's
    ``nadam`` (:func:`gradxform.nesterov_first_moment`), which has no schedule.

    Args:
        b1: :math:`\beta_1` in [0, 1), the decay of :math:`m` and the scale of :math:`\mu_t`.
        momentum_decay: :math:`\psi \ge 0`.
        dtype: dtype of :math:`m` (default: each parameter's dtype).

    Returns:
        The block; its state is :class:`MomentumDecayFirstMomentState`.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.momentum_decay_first_moment(0.5, momentum_decay=0.0)
        >>> u, _ = tx.update(jnp.array([4.0]), tx.init(jnp.zeros(1)))
        >>> round(float(u[0]), 6)  # mu = 0.25: 0.75 / 0.75 * 4 + 0.25 / (1 - 0.0625) * 2
        4.533333
    """
    hp = Hyperparams(b1=b1, momentum_decay=momentum_decay)
    hp.check("b1", **_DECAY).use_complement("b1").check("momentum_decay", lower=0).use_count()

    def init_fn(params):
        product = jnp.ones([], _scalar_dtype(params))
        return MomentumDecayFirstMomentState(
            tree.zeros_like(params, dtype), product, hp.init(params)
        )

    def update_fn(updates, state, params=None, **extra_args):
        del params
        tree.check_structure(state.mu, updates, "first moment", "updates")
        values, hyper = hp.step(state.hyperparams, extra_args)
        dt = state.mu_product.dtype
        b1, psi = tree.to_dtype(values["b1"], dt), tree.to_dtype(values["momentum_decay"], dt)
        t = values.count.astype(dt)
        mu_now = b1 * (1 - 0.5 * jnp.asarray(0.96, dt) ** (t * psi))
        mu_next = b1 * (1 - 0.5 * jnp.asarray(0.96, dt) ** ((t + 1) * psi))
        product = state.mu_product * mu_now
        gain_g = (1 - mu_now) / (1 - product)
        gain_m = mu_next / (1 - product * mu_next)
        mu = tree.ema(values["b1"], values.complement("b1"), state.mu, updates)
        out = jax.tree.map(
            lambda g, m: (
                tree.to_dtype(gain_g, tree.real_dtype(m.dtype)) * g
                + tree.to_dtype(gain_m, tree.real_dtype(m.dtype)) * m
            ),
            updates,
            mu,
        )
        return out, MomentumDecayFirstMomentState(mu, product, hyper)

    return GradientTransformationExtraArgs(init_fn, update_fn)
