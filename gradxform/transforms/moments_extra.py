r"""More moment blocks: signs, Lion's momentum, Adamax's infinity norm, AdaBelief's belief.

Lion's direction is::

    chain(lion_moment(b1, b2), scale_by_sign())

and Adamax's::

    divide(chain(ema_first_moment(b1), bias_correct(b1)), ema_infinity_moment(b2, eps))

with the hyperparameters handles of one :class:`~gradxform.hyperparams.Hyperparams`
store, as in :mod:`gradxform.transforms.moments`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import DTypeLike

from gradxform import tree
from gradxform.base import (
    EmptyState,
    GradientTransformationExtraArgs,
    chain,
    divide,
)
from gradxform.hyperparams import (
    Hyperparam,
    Hyperparams,
    HyperparamState,
    ScalarOrSchedule,
)
from gradxform.transforms.moments import (
    _root_plus,
    _unbiased,
    bias_correct,
    ema_first_moment,
)

__all__ = [
    "EmaBeliefMomentState",
    "EmaInfinityMomentState",
    "LionMomentState",
    "ScaleByBeliefState",
    "ScaleBySignState",
    "ema_belief_moment",
    "ema_infinity_moment",
    "lion_moment",
    "scale_by_adamax",
    "scale_by_belief",
    "scale_by_lion",
    "scale_by_sign",
]

_DECAY: dict[str, Any] = {"lower": 0, "upper": 1, "upper_open": True}


class ScaleBySignState(NamedTuple):
    """State of :func:`scale_by_sign` (it keeps nothing)."""


def scale_by_sign() -> GradientTransformationExtraArgs:
    r"""The elementwise sign of the updates: :math:`u \leftarrow \operatorname{sign}(u)`.

    Zero stays zero; for complex updates it is :math:`u / |u|` (``jnp.sign``).

    Returns:
        The block; its state is :class:`ScaleBySignState` (empty).

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.scale_by_sign()
        >>> u, _ = tx.update(jnp.array([-3.0, 0.0, 0.5]), tx.init(jnp.zeros(3)))
        >>> u.tolist()
        [-1.0, 0.0, 1.0]
    """

    def init_fn(params):
        del params
        return ScaleBySignState()

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        return jax.tree.map(jnp.sign, updates), state

    return GradientTransformationExtraArgs(init_fn, update_fn)


class LionMomentState(NamedTuple):
    """State of :func:`lion_moment`.

    Attributes:
        mu: the momentum :math:`m`, shaped like the params.
        hyperparams: the block's store of ``b1`` and ``b2`` (``EmptyState()``
            when both are handles).
    """

    mu: Any
    hyperparams: HyperparamState | EmptyState


def lion_moment(
    b1: ScalarOrSchedule | Hyperparam = 0.9,
    b2: ScalarOrSchedule | Hyperparam = 0.99,
    *,
    dtype: DTypeLike | None = None,
) -> GradientTransformationExtraArgs:
    r"""Lion's momentum: the output interpolates with one decay, the memory with another.

    Output :math:`c = \beta_1 m + (1 - \beta_1) g` (with the old :math:`m`),
    then :math:`m \leftarrow \beta_2 m + (1 - \beta_2) g`.

    Args:
        b1: :math:`\beta_1` in [0, 1), the output's interpolation: a number,
            a schedule or a handle.
        b2: :math:`\beta_2` in [0, 1), the momentum's decay.
        dtype: dtype of :math:`m` (default: each parameter's dtype).

    Returns:
        The block; its state is :class:`LionMomentState`.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.lion_moment(0.5, 0.75)
        >>> state = tx.init(jnp.zeros(1))
        >>> c, state = tx.update(jnp.array([4.0]), state)
        >>> float(c[0]), float(state.mu[0])  # 0.5 * 4, 0.25 * 4
        (2.0, 1.0)
    """
    hp = Hyperparams(b1=b1, b2=b2)
    for name in ("b1", "b2"):
        hp.check(name, **_DECAY).use_complement(name)

    def init_fn(params):
        return LionMomentState(tree.zeros_like(params, dtype), hp.init(params))

    def update_fn(updates, state, params=None, **extra_args):
        del params
        tree.check_structure(state.mu, updates, "Lion moment", "updates")
        values, hyper = hp.step(state.hyperparams, extra_args)
        out = tree.ema(values["b1"], values.complement("b1"), state.mu, updates)
        mu = tree.ema(values["b2"], values.complement("b2"), state.mu, updates)
        return out, LionMomentState(mu, hyper)

    return GradientTransformationExtraArgs(init_fn, update_fn)


def scale_by_lion(
    b1: ScalarOrSchedule | Hyperparam = 0.9,
    b2: ScalarOrSchedule | Hyperparam = 0.99,
    *,
    mu_dtype: DTypeLike | None = None,
) -> GradientTransformationExtraArgs:
    r"""Lion's direction :math:`\operatorname{sign}(\beta_1 m + (1 - \beta_1) g)`.

    See :func:`gradxform.lion` for the optimizer.

    Composition: ``chain(lion_moment(b1, b2), scale_by_sign())``, with one
    store holding ``b1`` and ``b2``.

    Args:
        b1: :math:`\beta_1` in [0, 1): a number, a schedule or a handle.
        b2: :math:`\beta_2` in [0, 1): a number, a schedule or a handle.
        mu_dtype: dtype of :math:`m` (default: each parameter's dtype).

    Returns:
        Lion's direction (before weight decay and the learning rate).

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.scale_by_lion()
        >>> u, _ = tx.update(jnp.array([0.5, -4.0]), tx.init(jnp.zeros(2)))
        >>> u.tolist()
        [1.0, -1.0]
    """
    hp = Hyperparams(b1=b1, b2=b2)
    return hp.chain(lion_moment(hp["b1"], hp["b2"], dtype=mu_dtype), scale_by_sign())


class EmaInfinityMomentState(NamedTuple):
    """State of :func:`ema_infinity_moment`.

    Attributes:
        nu: the decayed maximum :math:`u` of :math:`|g|` (real-valued).
        hyperparams: the block's store of ``decay`` and ``eps`` (``EmptyState()``
            when both are handles).
    """

    nu: Any
    hyperparams: HyperparamState | EmptyState


def ema_infinity_moment(
    decay: ScalarOrSchedule | Hyperparam = 0.999,
    eps: ScalarOrSchedule | Hyperparam = 1e-8,
    *,
    dtype: DTypeLike | None = None,
) -> GradientTransformationExtraArgs:
    r"""Adamax's denominator, the exponentially weighted infinity norm of the updates.

    :math:`u \leftarrow \max(|g| + \epsilon, \beta u)`, output :math:`u`
    (:math:`\epsilon` inside the maximum, as optax's ``scale_by_adamax``;
    torch adds it the same way).

    Args:
        decay: :math:`\beta` in [0, 1): a number, a schedule or a handle.
        eps: :math:`\epsilon \ge 0`: a number, a schedule or a handle.
        dtype: dtype of :math:`u` (default: each parameter's real dtype, at
            least float32, see :func:`gradxform.tree.squares_like`).

    Returns:
        The block; its state is :class:`EmaInfinityMomentState`.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.ema_infinity_moment(0.5, eps=0.0)
        >>> state = tx.init(jnp.zeros(1))
        >>> _, state = tx.update(jnp.array([-4.0]), state)
        >>> u, _ = tx.update(jnp.array([1.0]), state)
        >>> float(u[0])  # max(1, 0.5 * 4)
        2.0
    """
    hp = Hyperparams(decay=decay, eps=eps).check("decay", **_DECAY).check("eps", lower=0)

    def init_fn(params):
        return EmaInfinityMomentState(tree.squares_like(params, 0.0, dtype), hp.init(params))

    def update_fn(updates, state, params=None, **extra_args):
        del params
        tree.check_structure(state.nu, updates, "infinity moment", "updates")
        values, hyper = hp.step(state.hyperparams, extra_args)

        def leaf(u, g):
            dt = u.dtype
            magnitude = tree.to_dtype(jnp.abs(g), dt) + tree.to_dtype(values["eps"], dt)
            return jnp.maximum(magnitude, tree.to_dtype(values["decay"], dt) * u)

        nu = jax.tree.map(leaf, state.nu, updates)
        return nu, EmaInfinityMomentState(nu, hyper)

    return GradientTransformationExtraArgs(init_fn, update_fn)


def scale_by_adamax(
    b1: ScalarOrSchedule | Hyperparam = 0.9,
    b2: ScalarOrSchedule | Hyperparam = 0.999,
    eps: ScalarOrSchedule | Hyperparam = 1e-8,
    *,
    mu_dtype: DTypeLike | None = None,
    nu_dtype: DTypeLike | None = None,
) -> GradientTransformationExtraArgs:
    r"""Adamax's direction :math:`\hat m / u` (Kingma & Ba, 2015, section 7.1).

    See :func:`gradxform.adamax` for the optimizer.

    Composition: ``divide(chain(ema_first_moment(b1), bias_correct(b1)),
    ema_infinity_moment(b2, eps))``, with one store holding ``b1``, ``b2``,
    ``eps`` and the step count.

    Args:
        b1: :math:`\beta_1` in [0, 1): a number, a schedule or a handle.
        b2: :math:`\beta_2` in [0, 1), the infinity norm's decay.
        eps: :math:`\epsilon \ge 0`, added to :math:`|g|` inside the maximum.
        mu_dtype: dtype of :math:`m` (default: each parameter's dtype).
        nu_dtype: dtype of :math:`u` (default: real, at least float32).

    Returns:
        Adamax's direction (before the learning rate).

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.scale_by_adamax(eps=0.0)
        >>> u, _ = tx.update(jnp.array([0.5, -4.0]), tx.init(jnp.zeros(2)))
        >>> [round(float(x), 4) for x in u]  # the first direction is sign(g)
        [1.0, -1.0]
    """
    hp = Hyperparams(b1=b1, b2=b2, eps=eps)
    numerator = chain(ema_first_moment(hp["b1"], dtype=mu_dtype), bias_correct(hp["b1"]))
    denominator = ema_infinity_moment(hp["b2"], hp["eps"], dtype=nu_dtype)
    return hp.chain(divide(numerator, denominator))


class EmaBeliefMomentState(NamedTuple):
    """State of :func:`ema_belief_moment`.

    Attributes:
        mu: the first moment :math:`m` the prediction error is measured against.
        nu: the moment :math:`s` of the squared prediction error (real-valued).
        hyperparams: the block's store (``EmptyState()`` when all are handles).
    """

    mu: Any
    nu: Any
    hyperparams: HyperparamState | EmptyState


def ema_belief_moment(
    b1: ScalarOrSchedule | Hyperparam = 0.9,
    b2: ScalarOrSchedule | Hyperparam = 0.999,
    eps_root: ScalarOrSchedule | Hyperparam = 1e-16,
    *,
    dtype: DTypeLike | None = None,
) -> GradientTransformationExtraArgs:
    r"""AdaBelief's centred second moment: the EMA of the squared prediction error.

    :math:`m \leftarrow \beta_1 m + (1 - \beta_1) g`, then
    :math:`s \leftarrow \beta_2 s + (1 - \beta_2) |g - m|^2 + \epsilon_r`
    (the :math:`\epsilon_r` is kept in :math:`s`, as in the paper and optax),
    output :math:`s`. The block keeps its own :math:`m` (one more moment than
    AdaBelief needs when the numerator keeps another: the price of
    composing it from blocks).

    Args:
        b1: :math:`\beta_1` in [0, 1), the decay of the prediction :math:`m`.
        b2: :math:`\beta_2` in [0, 1), the decay of :math:`s`.
        eps_root: :math:`\epsilon_r \ge 0`, added to :math:`s` each update.
        dtype: dtype of :math:`m` and :math:`s` (default: :math:`m` in each
            parameter's dtype, :math:`s` as :func:`gradxform.tree.squares_like`).

    Returns:
        The block; its state is :class:`EmaBeliefMomentState`.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.ema_belief_moment(0.5, 0.5, eps_root=0.0)
        >>> s, _ = tx.update(jnp.array([4.0]), tx.init(jnp.zeros(1)))
        >>> float(s[0])  # 0.5 * (4 - 2)^2
        2.0
    """
    hp = Hyperparams(b1=b1, b2=b2, eps_root=eps_root).check("eps_root", lower=0)
    for name in ("b1", "b2"):
        hp.check(name, **_DECAY).use_complement(name)

    return _belief_block(hp, EmaBeliefMomentState, dtype, dtype, lambda values, mu, nu: nu)


def _belief_block(hp, state_type, mu_dtype, nu_dtype, output) -> GradientTransformationExtraArgs:
    """A block updating AdaBelief's ``m`` and ``s`` (state ``state_type(mu, nu, store)``)
    and emitting ``output(values, m, s)``; ``hp`` holds ``b1``, ``b2`` and ``eps_root``."""

    def init_fn(params):
        mu = tree.zeros_like(params, mu_dtype)
        return state_type(mu, tree.squares_like(params, 0.0, nu_dtype), hp.init(params))

    def update_fn(updates, state, params=None, **extra_args):
        del params
        tree.check_structure(state.nu, updates, "belief moment", "updates")
        values, hyper = hp.step(state.hyperparams, extra_args)
        mu = tree.ema(values["b1"], values.complement("b1"), state.mu, updates)
        errors = jax.tree.map(
            lambda g, m, s: tree.squared_magnitude(g - m, s), updates, mu, state.nu
        )
        nu = tree.ema(values["b2"], values.complement("b2"), state.nu, errors)
        nu = jax.tree.map(lambda s: s + tree.to_dtype(values["eps_root"], s.dtype), nu)
        return output(values, mu, nu), state_type(mu, nu, hyper)

    return GradientTransformationExtraArgs(init_fn, update_fn)


class ScaleByBeliefState(NamedTuple):
    """State of :func:`scale_by_belief`.

    Attributes:
        mu: the first moment :math:`m`, both the numerator and the prediction.
        nu: the moment :math:`s` of the squared prediction error (real-valued).
        hyperparams: the block's store (``b1``, ``b2``, ``eps``, ``eps_root`` and
            the step count).
    """

    mu: Any
    nu: Any
    hyperparams: HyperparamState | EmptyState


def scale_by_belief(
    b1: ScalarOrSchedule | Hyperparam = 0.9,
    b2: ScalarOrSchedule | Hyperparam = 0.999,
    eps: ScalarOrSchedule | Hyperparam = 1e-16,
    eps_root: ScalarOrSchedule | Hyperparam = 1e-16,
    *,
    mu_dtype: DTypeLike | None = None,
    nu_dtype: DTypeLike | None = None,
) -> GradientTransformationExtraArgs:
    r"""AdaBelief's direction :math:`\hat m / (\sqrt{\hat s} + \epsilon)` (Zhuang et al., 2020).

    See :func:`gradxform.adabelief` for the optimizer.

    One block: :func:`ema_belief_moment`'s update of :math:`m` and :math:`s`,
    then :math:`\hat m / (\sqrt{\hat s} + \epsilon)` with both bias-corrected
    (:func:`bias_correct`) and a zero denominator giving zero (:func:`divide`).
    It is ``divide(chain(ema_first_moment(b1), bias_correct(b1)),
    chain(ema_belief_moment(b1, b2, eps_root), bias_correct(b2),
    sqrt_with_eps(eps, None)))`` with the one :math:`m` the two halves would
    each keep: 8 bytes of state per float32 parameter, not 12 (the tests check
    the two are the same steps).

    Args:
        b1, b2: the decays in [0, 1): numbers, schedules or handles.
        eps: :math:`\epsilon \ge 0`, outside the root.
        eps_root: :math:`\epsilon_r \ge 0`, added to :math:`s` each update.
        mu_dtype: dtype of :math:`m` (default: each parameter's dtype).
        nu_dtype: dtype of :math:`s` (default: real, at least float32).

    Returns:
        AdaBelief's direction (before the learning rate); its state is
        :class:`ScaleByBeliefState`.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.scale_by_belief(eps=0.0, eps_root=0.0)
        >>> u, _ = tx.update(jnp.array([0.5, -4.0]), tx.init(jnp.zeros(2)))
        >>> [round(float(x), 4) for x in u]  # m_hat = g, s_hat = 0.81 g^2
        [1.1111, -1.1111]
    """
    hp = Hyperparams(b1=b1, b2=b2, eps=eps, eps_root=eps_root).use_count()
    for name in ("eps", "eps_root"):
        hp.check(name, lower=0)
    for name in ("b1", "b2"):
        hp.check(name, **_DECAY).use_complement(name)

    def direction(values, mu, nu):
        m_hat = _unbiased(mu, values["b1"], values.count)
        s_hat = _unbiased(nu, values["b2"], values.count)
        root = jax.tree.map(lambda s: _root_plus(s, values["eps"], None), s_hat)
        return tree.safe_divide(m_hat, root)

    return _belief_block(hp, ScaleByBeliefState, mu_dtype, nu_dtype, direction)
