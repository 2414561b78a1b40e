r"""Moment transforms: the pieces adaptive methods are composed of.

Each piece does one thing. Adam's direction is::

    divide(
        chain(ema_first_moment(b1), bias_correct(b1)),
        chain(ema_second_moment(b2), bias_correct(b2), sqrt_with_eps(eps, eps_root)),
    )

with ``b1``, ``b2``, ``eps`` and ``eps_root`` handles of one
:class:`~gradxform.hyperparams.Hyperparams` store (see
:mod:`gradxform.hyperparams`), and the order of the pieces is the algorithm:
``running_max`` before or after ``bias_correct`` is the difference between
torch's and optax's AMSGrad.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import DTypeLike

from gradxform import checks, tree
from gradxform.base import (
    EmptyState,
    GradientTransformationExtraArgs,
    chain,
    divide,
    identity,
)
from gradxform.hyperparams import (
    Hyperparam,
    Hyperparams,
    HyperparamState,
    ScalarOrSchedule,
    Values,
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

_DECAY: dict[str, Any] = {"lower": 0, "upper": 1, "upper_open": True}


def _decay_store(decay: ScalarOrSchedule | Hyperparam) -> Hyperparams:
    """The store of a moment block: ``decay`` in [0, 1), its complement read."""
    return Hyperparams(decay=decay).check("decay", **_DECAY).use_complement("decay")


class EmaFirstMomentState(NamedTuple):
    """State of :func:`ema_first_moment` and :func:`nesterov_first_moment`.

    Attributes:
        mu: the moment :math:`m`, shaped like the params.
        hyperparams: the block's store (``EmptyState()`` when the decay is a handle).
    """

    mu: Any
    hyperparams: HyperparamState | EmptyState


def _first_moment(
    decay: ScalarOrSchedule | Hyperparam,
    dtype: DTypeLike | None,
    output: Callable[[Values, Any, Any], Any],
    *,
    count: bool = False,
) -> GradientTransformationExtraArgs:
    """``m <- decay * m + (1 - decay) * g``; the block returns ``output(values, m, g)``."""
    hp = _decay_store(decay)
    if count:
        hp.use_count()

    def init_fn(params):
        return EmaFirstMomentState(tree.zeros_like(params, dtype), hp.init(params))

    def update_fn(updates, state, params=None, **extra_args):
        del params
        tree.check_structure(state.mu, updates, "first moment", "updates")
        values, hyper = hp.step(state.hyperparams, extra_args)
        mu = tree.ema(values["decay"], values.complement("decay"), state.mu, updates)
        return output(values, mu, updates), EmaFirstMomentState(mu, hyper)

    return GradientTransformationExtraArgs(init_fn, update_fn)


def ema_first_moment(
    decay: ScalarOrSchedule | Hyperparam = 0.9, *, dtype: DTypeLike | None = None
) -> GradientTransformationExtraArgs:
    r"""The exponential moving average of the updates, without bias correction.

    :math:`m \leftarrow \beta m + (1 - \beta) g`, output :math:`m`.

    Args:
        decay: :math:`\beta` in [0, 1): a number, a schedule, or a handle of a
            store (then the value is read from it).
        dtype: dtype of :math:`m` (default: each parameter's dtype).

    Returns:
        The block; its state is :class:`EmaFirstMomentState`.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.ema_first_moment(0.5)
        >>> m, state = tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))
        >>> float(m[0])
        1.0
    """
    return _first_moment(decay, dtype, lambda values, mu, updates: mu)


def nesterov_first_moment(
    decay: ScalarOrSchedule | Hyperparam = 0.9, *, dtype: DTypeLike | None = None
) -> GradientTransformationExtraArgs:
    r"""NAdam's bias-corrected look-ahead moment (Dozat, 2016).

    :math:`m \leftarrow \beta m + (1 - \beta) g`, output
    :math:`\beta m / (1 - \beta^{t+1}) + (1 - \beta) g / (1 - \beta^t)` at
    update :math:`t = 1, 2, \dots`

    Args:
        decay: :math:`\beta` in [0, 1): a number, a schedule or a handle.
        dtype: dtype of :math:`m` (default: each parameter's dtype).

    Returns:
        The block; like :func:`ema_first_moment` it keeps :math:`m` in an
        :class:`EmaFirstMomentState`.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.nesterov_first_moment(0.5)
        >>> out, _ = tx.update(jnp.array([3.0]), tx.init(jnp.zeros(1)))
        >>> float(out[0])  # 0.5 * 1.5 / 0.75 + 0.5 * 3 / 0.5
        4.0
    """

    def look_ahead(values, mu, updates):
        b, gain, t = values["decay"], values.complement("decay"), values.count
        now, ahead = 1 - b**t, 1 - b ** increment_count(t)

        def leaf(m, g):
            dt = tree.real_dtype(m.dtype)
            return tree.to_dtype(b, dt) * (m / tree.to_dtype(ahead, dt)) + tree.to_dtype(
                gain, dt
            ) * (g / tree.to_dtype(now, tree.real_dtype(g.dtype)))

        return jax.tree.map(leaf, mu, updates)

    return _first_moment(decay, dtype, look_ahead, count=True)


class EmaSecondMomentState(NamedTuple):
    """State of :func:`ema_second_moment`.

    Attributes:
        nu: the moment :math:`v` of :math:`|g|^2` (real-valued).
        mu: the moment :math:`m` of :math:`g` when centered, else ``EmptyState()``.
        hyperparams: the block's store (``EmptyState()`` when the decay is a handle).
    """

    nu: Any
    mu: Any
    hyperparams: HyperparamState | EmptyState


def ema_second_moment(
    decay: ScalarOrSchedule | Hyperparam = 0.999,
    *,
    centered: bool = False,
    initial_value: float = 0.0,
    dtype: DTypeLike | None = None,
) -> GradientTransformationExtraArgs:
    r"""The exponential moving average of :math:`|g|^2`, or the variance estimate.

    :math:`v \leftarrow \beta v + (1 - \beta) |g|^2`, output :math:`v`. With
    ``centered=True`` it also keeps :math:`m \leftarrow \beta m + (1 - \beta) g`
    and outputs :math:`v - |m|^2` (centered RMSProp).

    Args:
        decay: :math:`\beta` in [0, 1): a number, a schedule or a handle.
        centered: output :math:`v - |m|^2` instead of :math:`v`.
        initial_value: :math:`v` before the first update (>= 0).
        dtype: dtype of :math:`v` and :math:`m` (default: :math:`m` in each
            parameter's dtype, :math:`v` in its real dtype and at least float32,
            see :func:`gradxform.tree.squares_like`).

    Returns:
        The block; its state is :class:`EmaSecondMomentState`.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.ema_second_moment(0.5)
        >>> v, _ = tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))
        >>> float(v[0])
        2.0
    """
    initial_value = checks.real("initial_value", initial_value, lower=0)
    hp = _decay_store(decay)

    def init_fn(params):
        nu = tree.squares_like(params, initial_value, dtype)
        mu = tree.zeros_like(params, dtype) if centered else EmptyState()
        return EmaSecondMomentState(nu, mu, hp.init(params))

    def update_fn(updates, state, params=None, **extra_args):
        del params
        tree.check_structure(state.nu, updates, "second moment", "updates")
        values, hyper = hp.step(state.hyperparams, extra_args)
        decay_now, gain = values["decay"], values.complement("decay")
        squares = jax.tree.map(tree.squared_magnitude, updates, state.nu)
        nu = tree.ema(decay_now, gain, state.nu, squares)
        if not centered:
            return nu, EmaSecondMomentState(nu, state.mu, hyper)
        mu = tree.ema(decay_now, gain, state.mu, updates)
        variance = jax.tree.map(lambda n, m: n - tree.squared_magnitude(m, n), nu, mu)
        return variance, EmaSecondMomentState(nu, mu, hyper)

    return GradientTransformationExtraArgs(init_fn, update_fn)


class AccumulateSquaresState(NamedTuple):
    """State of :func:`accumulate_squares`.

    Attributes:
        sum_of_squares: the running sum :math:`h` of :math:`|g|^2`.
    """

    sum_of_squares: Any


def accumulate_squares(
    initial_value: float = 0.0, *, dtype: DTypeLike | None = None
) -> GradientTransformationExtraArgs:
    r"""AdaGrad's accumulator: :math:`h \leftarrow h + |g|^2`, output :math:`h`.

    Args:
        initial_value: :math:`h` before the first update (>= 0).
        dtype: dtype of :math:`h` (default: each parameter's real dtype, at
            least float32, see :func:`gradxform.tree.squares_like`).

    Returns:
        The block; its state is :class:`AccumulateSquaresState`.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.accumulate_squares(0.5)
        >>> h, _ = tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))
        >>> float(h[0])
        4.5
    """
    initial_value = checks.real("initial_value", initial_value, lower=0)

    def init_fn(params):
        return AccumulateSquaresState(tree.squares_like(params, initial_value, dtype))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        tree.check_structure(state.sum_of_squares, updates, "sum of squares", "updates")
        total = jax.tree.map(
            lambda h, g: tree.to_dtype(h + tree.squared_magnitude(g, h), h.dtype),
            state.sum_of_squares,
            updates,
        )
        return total, AccumulateSquaresState(total)

    return GradientTransformationExtraArgs(init_fn, update_fn)


class BiasCorrectState(NamedTuple):
    """State of :func:`bias_correct`.

    Attributes:
        hyperparams: the block's store (``EmptyState()`` when the decay is a
            handle; the step count is then the handle's store's).
    """

    hyperparams: HyperparamState | EmptyState


def bias_correct(decay: ScalarOrSchedule | Hyperparam = 0.9) -> GradientTransformationExtraArgs:
    r"""Undoes the pull towards zero of an EMA started at zero.

    :math:`u \leftarrow u / (1 - \beta^t)` at update :math:`t = 1, 2, \dots`
    Give it the same handle as the EMA it corrects, so that both read one
    value (as :func:`scale_by_adam` does).

    Args:
        decay: :math:`\beta` in [0, 1): a number, a schedule or a handle.

    Returns:
        The block; its state is :class:`BiasCorrectState`.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.bias_correct(0.5)
        >>> u, _ = tx.update(jnp.array([1.0]), tx.init(jnp.zeros(1)))
        >>> float(u[0])  # 1 / (1 - 0.5)
        2.0
    """
    hp = Hyperparams(decay=decay).check("decay", **_DECAY).use_count()

    def apply(updates, values, params):
        return _unbiased(updates, values["decay"], values.count)

    return hp.transform(apply, BiasCorrectState)


def _unbiased(moment: Any, decay: Any, count: Any) -> Any:
    """``moment / (1 - decay^count)`` leaf by leaf: :func:`bias_correct`'s step, for blocks
    that keep a moment and correct it themselves (:func:`gradxform.scale_by_belief`)."""
    correction = 1 - decay**count
    return jax.tree.map(lambda u: u / tree.to_dtype(correction, tree.real_dtype(u.dtype)), moment)


class RunningMaxState(NamedTuple):
    """State of :func:`running_max`.

    Attributes:
        maximum: the largest input seen so far, elementwise (starts at 0).
    """

    maximum: Any


def running_max() -> GradientTransformationExtraArgs:
    r"""AMSGrad's maximum: :math:`\hat u \leftarrow \max(\hat u, u)`, output :math:`\hat u`.

    Returns:
        The block; its state is :class:`RunningMaxState` (zeros at first, in
        the dtype of :func:`gradxform.tree.squares_like`).

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.running_max()
        >>> state = tx.init(jnp.zeros(2))
        >>> _, state = tx.update(jnp.array([3.0, 1.0]), state)
        >>> out, _ = tx.update(jnp.array([2.0, 4.0]), state)
        >>> out.tolist()
        [3.0, 4.0]
    """

    def init_fn(params):
        return RunningMaxState(tree.squares_like(params, 0.0))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        tree.check_structure(state.maximum, updates, "running maximum", "updates")
        maximum = jax.tree.map(
            lambda a, u: tree.to_dtype(jnp.maximum(a, u), a.dtype), state.maximum, updates
        )
        return maximum, RunningMaxState(maximum)

    return GradientTransformationExtraArgs(init_fn, update_fn)


class SqrtWithEpsState(NamedTuple):
    """State of :func:`sqrt_with_eps`.

    Attributes:
        hyperparams: the block's store of ``eps`` and ``eps_root`` (``EmptyState()``
            when both are handles or absent).
    """

    hyperparams: HyperparamState | EmptyState


def sqrt_with_eps(
    eps: ScalarOrSchedule | Hyperparam | None = 1e-8,
    eps_root: ScalarOrSchedule | Hyperparam | None = 0.0,
) -> GradientTransformationExtraArgs:
    r"""The denominator of adaptive methods: :math:`u \leftarrow \sqrt{u + \epsilon_r} + \epsilon`.

    ``eps`` outside the root is torch's and Adam's convention; ``eps_root``
    inside is optax's RMSProp and AdaGrad convention (and keeps the
    derivative of the root finite at zero, for meta-learning).

    Args:
        eps: :math:`\epsilon \ge 0`, or ``None`` to add nothing (not stored).
        eps_root: :math:`\epsilon_r \ge 0`, or ``None`` to add nothing (not stored).

    Returns:
        The block; its state is :class:`SqrtWithEpsState`.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.sqrt_with_eps(0.5, eps_root=5.0)
        >>> u, _ = tx.update(jnp.array([4.0]), tx.init(jnp.zeros(1)))
        >>> float(u[0])  # sqrt(4 + 5) + 0.5
        3.5
    """
    specs = {name: v for name, v in (("eps", eps), ("eps_root", eps_root)) if v is not None}
    hp = Hyperparams(**specs)
    for name in specs:
        hp.check(name, lower=0)

    def apply(updates, values, params):
        eps, eps_root = (values[name] if name in specs else None for name in ("eps", "eps_root"))
        return jax.tree.map(lambda u: _root_plus(u, eps, eps_root), updates)

    return hp.transform(apply, SqrtWithEpsState)


def _root_plus(u: jax.Array, eps: Any, eps_root: Any) -> jax.Array:
    """``sqrt(u + eps_root) + eps`` of one leaf (a ``None`` term left out):
    :func:`sqrt_with_eps`'s step, for blocks that build their denominator themselves
    (:func:`gradxform.scale_by_belief`)."""
    dt = tree.real_dtype(u.dtype)
    root = jnp.sqrt(u if eps_root is None else u + tree.to_dtype(eps_root, dt))
    return root if eps is None else root + tree.to_dtype(eps, dt)


def _root(eps: Hyperparam, eps_in_sqrt: bool) -> GradientTransformationExtraArgs:
    return sqrt_with_eps(None, eps) if eps_in_sqrt else sqrt_with_eps(eps, None)


def scale_by_rms(
    decay: ScalarOrSchedule | Hyperparam = 0.9,
    eps: ScalarOrSchedule | Hyperparam = 1e-8,
    *,
    eps_in_sqrt: bool = True,
    centered: bool = False,
    initial_scale: float = 0.0,
    dtype: DTypeLike | None = None,
) -> GradientTransformationExtraArgs:
    r"""RMSProp's direction: :math:`g` over the root of the decayed mean of :math:`|g|^2`.

    :math:`v \leftarrow \beta v + (1 - \beta) |g|^2`, output
    :math:`g / \sqrt{v + \epsilon}` (``eps_in_sqrt=True``, optax's default) or
    :math:`g / (\sqrt{v} + \epsilon)` (torch's). ``centered=True`` uses the
    variance :math:`v - |m|^2` in place of :math:`v`.

    Composition: ``divide(identity(), chain(ema_second_moment(decay, ...),
    sqrt_with_eps(None, eps) or sqrt_with_eps(eps, None)))``, with one store
    holding ``decay`` and ``eps``.

    Args:
        decay: :math:`\beta` in [0, 1): a number, a schedule or a handle.
        eps: :math:`\epsilon \ge 0`: a number, a schedule or a handle.
        eps_in_sqrt: put :math:`\epsilon` inside the root.
        centered: divide by the root of the variance estimate.
        initial_scale: :math:`v` before the first update (>= 0).
        dtype: dtype of the moments (default: the first in each parameter's
            dtype, the second as :func:`gradxform.tree.squares_like` gives).

    Returns:
        RMSProp's direction (before the learning rate).

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.scale_by_rms(0.75, eps=0.0)
        >>> u, _ = tx.update(jnp.array([-2.0]), tx.init(jnp.zeros(1)))
        >>> float(u[0])  # -2 / sqrt(0.25 * 4)
        -2.0
    """
    hp = Hyperparams(decay=decay, eps=eps)
    second = ema_second_moment(
        hp["decay"], centered=centered, initial_value=initial_scale, dtype=dtype
    )
    # v >= 0, so the root is at least eps or its root (centered: v - m^2 may round below 0)
    positive_if = None if centered else hp["eps"]
    root = _root(hp["eps"], eps_in_sqrt)
    return hp.chain(divide(identity(), chain(second, root), positive_if=positive_if))


def scale_by_sum_of_squares(
    initial_accumulator_value: float = 0.0,
    eps: ScalarOrSchedule | Hyperparam = 1e-7,
    *,
    eps_in_sqrt: bool = False,
    dtype: DTypeLike | None = None,
) -> GradientTransformationExtraArgs:
    r"""AdaGrad's direction: :math:`g` over the root of the sum of all :math:`|g|^2`.

    :math:`h \leftarrow h + |g|^2`, output :math:`g / (\sqrt{h} + \epsilon)`,
    or :math:`g / \sqrt{h + \epsilon}` with ``eps_in_sqrt=True`` (optax's).

    Composition: ``divide(identity(), chain(accumulate_squares(h_0),
    sqrt_with_eps(eps, None) or sqrt_with_eps(None, eps)))``.

    Args:
        initial_accumulator_value: :math:`h_0 \ge 0`.
        eps: :math:`\epsilon \ge 0`: a number, a schedule or a handle.
        eps_in_sqrt: put :math:`\epsilon` inside the root.
        dtype: dtype of :math:`h` (default: as :func:`gradxform.tree.squares_like`
            gives: real, at least float32).

    Returns:
        AdaGrad's direction (before the learning rate).

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.scale_by_sum_of_squares(0.0, eps=0.0)
        >>> u, _ = tx.update(jnp.array([-3.0]), tx.init(jnp.zeros(1)))
        >>> float(u[0])
        -1.0
    """
    hp = Hyperparams(eps=eps)
    accumulate = accumulate_squares(initial_accumulator_value, dtype=dtype)
    denominator = chain(accumulate, _root(hp["eps"], eps_in_sqrt))  # the sum >= 0
    return hp.chain(divide(identity(), denominator, positive_if=hp["eps"]))


def scale_by_adam(
    b1: ScalarOrSchedule | Hyperparam = 0.9,
    b2: ScalarOrSchedule | Hyperparam = 0.999,
    eps: ScalarOrSchedule | Hyperparam = 1e-8,
    *,
    eps_root: ScalarOrSchedule | Hyperparam = 0.0,
    amsgrad: bool = False,
    nesterov: bool = False,
    mu_dtype: DTypeLike | None = None,
    nu_dtype: DTypeLike | None = None,
) -> GradientTransformationExtraArgs:
    r"""Adam's direction :math:`\hat m / (\sqrt{\hat v + \epsilon_r} + \epsilon)`.

    See :func:`gradxform.adam` for the optimizer.

    :math:`\hat m = m / (1 - \beta_1^t)` and :math:`\hat v = v / (1 - \beta_2^t)`
    with :math:`m, v` the EMAs of :math:`g` and :math:`|g|^2`.

    Composition: ``divide(chain(ema_first_moment(b1), bias_correct(b1)),
    chain(ema_second_moment(b2), bias_correct(b2), [running_max()],
    sqrt_with_eps(eps, eps_root)))``, with one store holding ``b1``, ``b2``,
    ``eps``, ``eps_root`` and the step count; ``nesterov=True`` replaces the
    numerator by :func:`nesterov_first_moment` (b1).

    Args:
        b1: :math:`\beta_1` in [0, 1): a number, a schedule or a handle.
        b2: :math:`\beta_2` in [0, 1): a number, a schedule or a handle.
        eps: :math:`\epsilon \ge 0`, added outside the root.
        eps_root: :math:`\epsilon_r \ge 0`, added inside the root.
        amsgrad: divide by the running maximum of :math:`\hat v` (optax's AMSGrad).
        nesterov: use the look-ahead first moment (NAdam).
        mu_dtype: dtype of :math:`m` (default: each parameter's dtype).
        nu_dtype: dtype of :math:`v` (default: each parameter's real dtype, at
            least float32, see :func:`gradxform.tree.squares_like`).

    Returns:
        Adam's direction (before the learning rate).

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.scale_by_adam()
        >>> u, _ = tx.update(jnp.array([0.5, -4.0]), tx.init(jnp.zeros(2)))
        >>> [round(float(x), 4) for x in u]  # the first direction is about sign(g)
        [1.0, -1.0]
    """
    hp = Hyperparams(b1=b1, b2=b2, eps=eps, eps_root=eps_root)
    if nesterov:
        numerator = nesterov_first_moment(hp["b1"], dtype=mu_dtype)
    else:
        numerator = chain(ema_first_moment(hp["b1"], dtype=mu_dtype), bias_correct(hp["b1"]))
    second = [ema_second_moment(hp["b2"], dtype=nu_dtype), bias_correct(hp["b2"])]
    if amsgrad:
        second.append(running_max())
    root = sqrt_with_eps(hp["eps"], hp["eps_root"])  # >= eps
    return hp.chain(divide(numerator, chain(*second, root), positive_if=hp["eps"]))


def scale_by_nadam(
    b1: ScalarOrSchedule | Hyperparam = 0.9,
    b2: ScalarOrSchedule | Hyperparam = 0.999,
    eps: ScalarOrSchedule | Hyperparam = 1e-8,
    *,
    eps_root: ScalarOrSchedule | Hyperparam = 0.0,
    mu_dtype: DTypeLike | None = None,
    nu_dtype: DTypeLike | None = None,
) -> GradientTransformationExtraArgs:
    r"""NAdam's direction; see :func:`gradxform.nadam`.

    :math:`\hat m = \beta_1 m / (1 - \beta_1^{t+1}) + (1 - \beta_1) g / (1 - \beta_1^t)`
    over Adam's denominator.

    Composition: ``scale_by_adam(b1, b2, eps, eps_root=eps_root, nesterov=True)``.

    Args:
        b1, b2, eps, eps_root, mu_dtype, nu_dtype: as in :func:`scale_by_adam`.

    Returns:
        NAdam's direction (before the learning rate).

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.scale_by_nadam(b1=0.5, b2=0.5, eps=0.0)
        >>> u, _ = tx.update(jnp.array([3.0]), tx.init(jnp.zeros(1)))
        >>> float(u[0])  # (0.5 * 1.5 / 0.75 + 0.5 * 3 / 0.5) / 3
        1.3333333730697632
    """
    return scale_by_adam(
        b1, b2, eps, eps_root=eps_root, nesterov=True, mu_dtype=mu_dtype, nu_dtype=nu_dtype
    )
