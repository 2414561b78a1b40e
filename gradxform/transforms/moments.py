"""Moment transforms: the pieces adaptive methods are composed of.

Each piece does one thing. Adam is::

    divide(
        chain(ema_first_moment(b1), bias_correct(b1)),
        chain(ema_second_moment(b2), bias_correct(b2), sqrt_with_eps(eps, eps_root)),
    )

and the order of the pieces is the algorithm: ``running_max`` before or after
``bias_correct`` is the difference between torch's and optax's AMSGrad.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform import tree
from gradxform.base import (
    EmptyState,
    GradientTransformationExtraArgs,
    Schedule,
    chain,
    divide,
    identity,
)
from gradxform.hyperparams import (
    Hyperparams,
    HyperparamState,
    check_decay,
    check_nonnegative,
    increment_count,
)

__all__ = [
    "AccumulateSquaresState",
    "BiasCorrectState",
    "EmaFirstMomentState",
    "EmaSecondMomentState",
    "RunningMaxState",
    "SqrtWithEpsState",
    "accumulate_squares",
    "bias_correct",
    "ema_first_moment",
    "ema_second_moment",
    "nesterov_first_moment",
    "running_max",
    "scale_by_adam",
    "scale_by_nadam",
    "scale_by_rms",
    "scale_by_sum_of_squares",
    "sqrt_with_eps",
]


class EmaFirstMomentState(NamedTuple):
    """State of :func:`ema_first_moment`: ``mu`` and the decay."""

    mu: Any
    hyperparams: HyperparamState


def ema_first_moment(
    decay: float | Schedule = 0.9, *, name: str = "decay", dtype=None
) -> GradientTransformationExtraArgs:
    """``m <- decay * m + (1 - decay) * g``, output ``m`` (no bias correction).

    Args:
        decay: in [0, 1), a number or a schedule, stored under ``name``.
        name: the hyperparameter's name in the state (Adam uses ``"b1"``).
        dtype: dtype of ``m`` (default: each parameter's dtype).
    """
    check_decay(name, decay)
    hp = Hyperparams(**{name: decay})

    def init_fn(params):
        return EmaFirstMomentState(tree.zeros_like(params, dtype), hp.init(params))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        tree.check_structure(state.mu, updates, "first moment", "updates")
        values, hyper = hp.step(state.hyperparams)
        mu = tree.ema(values[name], values.complement(name), state.mu, updates)
        return mu, EmaFirstMomentState(mu, hyper)

    return GradientTransformationExtraArgs(init_fn, update_fn)


class EmaSecondMomentState(NamedTuple):
    """State of :func:`ema_second_moment`: ``nu``, ``mu`` when centered, and the decay."""

    nu: Any
    mu: Any
    hyperparams: HyperparamState


def ema_second_moment(
    decay: float | Schedule = 0.999,
    *,
    name: str = "decay",
    centered: bool = False,
    initial_value: float = 0.0,
    dtype=None,
) -> GradientTransformationExtraArgs:
    """``v <- decay * v + (1 - decay) * |g|^2``, output ``v`` (real-valued).

    With ``centered=True`` it also keeps ``m``, the EMA of ``g``, and outputs
    the variance estimate ``v - |m|^2`` (centered RMSProp).

    Args:
        decay: in [0, 1), a number or a schedule, stored under ``name``.
        name: the hyperparameter's name in the state (Adam uses ``"b2"``).
        centered: output ``v - |m|^2`` instead of ``v``.
        initial_value: ``v`` before the first update (>= 0).
        dtype: dtype of ``v`` and ``m`` (default: each parameter's (real) dtype).
    """
    check_decay(name, decay)
    check_nonnegative("initial_value", initial_value)
    hp = Hyperparams(**{name: decay})

    def init_fn(params):
        nu = tree.full_like(params, initial_value, dtype, real=True)
        mu = tree.zeros_like(params, dtype) if centered else EmptyState()
        return EmaSecondMomentState(nu, mu, hp.init(params))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        tree.check_structure(state.nu, updates, "second moment", "updates")
        values, hyper = hp.step(state.hyperparams)
        decay_now, gain = values[name], values.complement(name)
        nu = tree.ema(decay_now, gain, state.nu, jax.tree.map(tree.squared_magnitude, updates))
        if not centered:
            return nu, EmaSecondMomentState(nu, state.mu, hyper)
        mu = tree.ema(decay_now, gain, state.mu, updates)
        variance = jax.tree.map(lambda n, m: n - tree.squared_magnitude(m), nu, mu)
        return variance, EmaSecondMomentState(nu, mu, hyper)

    return GradientTransformationExtraArgs(init_fn, update_fn)


class AccumulateSquaresState(NamedTuple):
    """State of :func:`accumulate_squares`: the running sum of ``|g|^2``."""

    sum_of_squares: Any


def accumulate_squares(
    initial_value: float = 0.0, *, dtype=None
) -> GradientTransformationExtraArgs:
    """``h <- h + |g|^2``, output ``h``: AdaGrad's accumulator."""
    check_nonnegative("initial_value", initial_value)

    def init_fn(params):
        return AccumulateSquaresState(tree.full_like(params, initial_value, dtype, real=True))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        tree.check_structure(state.sum_of_squares, updates, "sum of squares", "updates")
        total = jax.tree.map(
            lambda h, g: (h + tree.squared_magnitude(g)).astype(h.dtype),
            state.sum_of_squares,
            updates,
        )
        return total, AccumulateSquaresState(total)

    return GradientTransformationExtraArgs(init_fn, update_fn)


class BiasCorrectState(NamedTuple):
    """State of :func:`bias_correct`: the decay and the step count ``t``."""

    hyperparams: HyperparamState


def bias_correct(
    decay: float | Schedule = 0.9, *, name: str = "decay"
) -> GradientTransformationExtraArgs:
    """``u <- u / (1 - decay**t)`` at update ``t = 1, 2, ...``.

    Undoes the pull towards zero of an EMA started at zero. ``name`` must
    match the EMA's, so that ``set_hyperparams`` changes both together.
    """
    check_decay(name, decay)
    hp = Hyperparams(**{name: decay})

    def init_fn(params):
        return BiasCorrectState(hp.init(params))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        values, hyper = hp.step(state.hyperparams)
        correction = 1 - values[name] ** hyper.count
        out = jax.tree.map(lambda u: u / correction.astype(tree.real_dtype(u.dtype)), updates)
        return out, BiasCorrectState(hyper)

    return GradientTransformationExtraArgs(init_fn, update_fn)


def nesterov_first_moment(
    decay: float | Schedule = 0.9, *, name: str = "decay", dtype=None
) -> GradientTransformationExtraArgs:
    """NAdam's bias-corrected look-ahead moment (Dozat, 2016).

    ``m <- decay * m + (1 - decay) * g``, output
    ``decay * m / (1 - decay**(t+1)) + (1 - decay) * g / (1 - decay**t)``.
    State: :class:`EmaFirstMomentState`.
    """
    check_decay(name, decay)
    hp = Hyperparams(**{name: decay})

    def init_fn(params):
        return EmaFirstMomentState(tree.zeros_like(params, dtype), hp.init(params))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        tree.check_structure(state.mu, updates, "first moment", "updates")
        values, hyper = hp.step(state.hyperparams)
        b, gain = values[name], values.complement(name)
        mu = tree.ema(b, gain, state.mu, updates)
        t = hyper.count
        next_t = increment_count(t)
        now, ahead = 1 - b**t, 1 - b**next_t

        def leaf(m, g):
            dt = tree.real_dtype(m.dtype)
            return b.astype(dt) * (m / ahead.astype(dt)) + gain.astype(dt) * (
                g / now.astype(tree.real_dtype(g.dtype))
            )

        return jax.tree.map(leaf, mu, updates), EmaFirstMomentState(mu, hyper)

    return GradientTransformationExtraArgs(init_fn, update_fn)


class RunningMaxState(NamedTuple):
    """State of :func:`running_max`: the largest input seen so far, elementwise."""

    maximum: Any


def running_max() -> GradientTransformationExtraArgs:
    """``u_max <- max(u_max, u)``, output ``u_max`` (AMSGrad). Starts at 0."""

    def init_fn(params):
        return RunningMaxState(tree.zeros_like(params, real=True))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        tree.check_structure(state.maximum, updates, "running maximum", "updates")
        maximum = jax.tree.map(
            lambda a, u: jnp.maximum(a, u).astype(a.dtype), state.maximum, updates
        )
        return maximum, RunningMaxState(maximum)

    return GradientTransformationExtraArgs(init_fn, update_fn)


class SqrtWithEpsState(NamedTuple):
    """State of :func:`sqrt_with_eps`: ``eps`` and ``eps_root``."""

    hyperparams: HyperparamState


def sqrt_with_eps(
    eps: float | Schedule = 1e-8, eps_root: float | Schedule = 0.0
) -> GradientTransformationExtraArgs:
    """``u <- sqrt(u + eps_root) + eps``: the denominator of adaptive methods.

    ``eps`` outside the root is torch's and Adam's convention; ``eps_root``
    inside is optax's RMSProp and AdaGrad convention (and keeps the derivative
    of ``sqrt`` finite at zero, for meta-learning).
    """
    check_nonnegative("eps", eps)
    check_nonnegative("eps_root", eps_root)
    hp = Hyperparams(eps=eps, eps_root=eps_root)

    def init_fn(params):
        return SqrtWithEpsState(hp.init(params))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        values, hyper = hp.step(state.hyperparams)

        def leaf(u):
            dt = tree.real_dtype(u.dtype)
            return jnp.sqrt(u + values["eps_root"].astype(dt)) + values["eps"].astype(dt)

        return jax.tree.map(leaf, updates), SqrtWithEpsState(hyper)

    return GradientTransformationExtraArgs(init_fn, update_fn)


def scale_by_rms(
    decay: float | Schedule = 0.9,
    eps: float | Schedule = 1e-8,
    *,
    eps_in_sqrt: bool = True,
    centered: bool = False,
    initial_scale: float = 0.0,
    dtype=None,
) -> GradientTransformationExtraArgs:
    """``u <- g / (sqrt(v) + eps)`` with ``v`` the decayed mean of ``|g|^2`` (RMSProp).

    ``eps_in_sqrt=True`` gives ``g / sqrt(v + eps)`` (optax's default);
    ``False`` gives torch's ``g / (sqrt(v) + eps)``. ``centered=True`` uses
    ``v - |m|^2``, the variance. Composition::

        divide(identity(),
               chain(ema_second_moment(decay, centered=..., initial_value=initial_scale),
                     sqrt_with_eps(eps) or sqrt_with_eps(0, eps_root=eps)))
    """
    root = sqrt_with_eps(0.0, eps_root=eps) if eps_in_sqrt else sqrt_with_eps(eps)
    second = ema_second_moment(decay, centered=centered, initial_value=initial_scale, dtype=dtype)
    return divide(identity(), chain(second, root))


def scale_by_sum_of_squares(
    initial_accumulator_value: float = 0.0,
    eps: float | Schedule = 1e-7,
    *,
    eps_in_sqrt: bool = False,
    dtype=None,
) -> GradientTransformationExtraArgs:
    """``u <- g / (sqrt(h) + eps)`` with ``h`` the sum of all ``|g|^2`` so far (AdaGrad).

    ``eps_in_sqrt=True`` gives ``g / sqrt(h + eps)`` (optax's convention).
    Composition::

        divide(identity(), chain(accumulate_squares(initial), sqrt_with_eps(...)))
    """
    root = sqrt_with_eps(0.0, eps_root=eps) if eps_in_sqrt else sqrt_with_eps(eps)
    return divide(
        identity(), chain(accumulate_squares(initial_accumulator_value, dtype=dtype), root)
    )


def scale_by_adam(
    b1: float | Schedule = 0.9,
    b2: float | Schedule = 0.999,
    eps: float | Schedule = 1e-8,
    *,
    eps_root: float | Schedule = 0.0,
    amsgrad: bool = False,
    mu_dtype=None,
    nu_dtype=None,
) -> GradientTransformationExtraArgs:
    """Adam's direction ``m_hat / (sqrt(v_hat + eps_root) + eps)``; see :func:`gradxform.adam`.

    With ``amsgrad=True`` the bias-corrected ``v_hat`` passes through
    :func:`running_max` first (optax's AMSGrad).
    """
    numerator = chain(ema_first_moment(b1, name="b1", dtype=mu_dtype), bias_correct(b1, name="b1"))
    second = [ema_second_moment(b2, name="b2", dtype=nu_dtype), bias_correct(b2, name="b2")]
    if amsgrad:
        second.append(running_max())
    return divide(numerator, chain(*second, sqrt_with_eps(eps, eps_root)))


def scale_by_nadam(
    b1: float | Schedule = 0.9,
    b2: float | Schedule = 0.999,
    eps: float | Schedule = 1e-8,
    *,
    eps_root: float | Schedule = 0.0,
    mu_dtype=None,
    nu_dtype=None,
) -> GradientTransformationExtraArgs:
    """NAdam's direction: Adam with :func:`nesterov_first_moment`; see :func:`gradxform.nadam`."""
    denominator = chain(
        ema_second_moment(b2, name="b2", dtype=nu_dtype),
        bias_correct(b2, name="b2"),
        sqrt_with_eps(eps, eps_root),
    )
    return divide(nesterov_first_moment(b1, name="b1", dtype=mu_dtype), denominator)
