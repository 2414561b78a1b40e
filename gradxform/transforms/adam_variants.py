r"""Adam's variants as blocks: Yogi's additive moment, RAdam's rectification, ADOPT's ordering.

Each replaces one piece of Adam's ``divide(numerator, denominator)`` (see
:mod:`gradxform.transforms.moments`): Yogi the second moment's update, RAdam a
factor on the denominator, ADOPT the order (normalize by the moment before it
sees the update, then take the momentum).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import DTypeLike

from gradxform import checks, tree
from gradxform.base import EmptyState, GradientTransformationExtraArgs, chain, divide
from gradxform.hyperparams import Hyperparam, Hyperparams, HyperparamState, ScalarOrSchedule
from gradxform.transforms.clipping import clip
from gradxform.transforms.moments import (
    bias_correct,
    ema_first_moment,
    ema_second_moment,
    sqrt_with_eps,
)

__all__ = [
    "NormalizeByPreviousMomentState",
    "RectifyState",
    "YogiSecondMomentState",
    "normalize_by_previous_moment",
    "rectify",
    "scale_by_adopt",
    "scale_by_radam",
    "scale_by_yogi",
    "yogi_second_moment",
]

_DECAY: dict[str, Any] = {"lower": 0, "upper": 1, "upper_open": True}


class RectifyState(NamedTuple):
    """State of :func:`rectify`.

    Attributes:
        hyperparams: the block's store of ``threshold`` (and ``decay`` unless a handle).
    """

    hyperparams: HyperparamState | EmptyState


def rectify(
    decay: ScalarOrSchedule | Hyperparam = 0.999, threshold: ScalarOrSchedule | Hyperparam = 5.0
) -> GradientTransformationExtraArgs:
    r"""RAdam's rectification of Adam's denominator (Liu et al., 2020).

    With :math:`\rho_\infty = 2 / (1 - \beta) - 1` and
    :math:`\rho_t = \rho_\infty - 2 t \beta^t / (1 - \beta^t)` at update
    :math:`t`: where :math:`\rho_t \ge` ``threshold`` the output is
    :math:`u / r_t` with :math:`r_t^2 = (\rho_t - 4)(\rho_t - 2)\rho_\infty /
    ((\rho_\infty - 4)(\rho_\infty - 2)\rho_t)`,
    else 1 (so that a ``divide`` by it leaves the momentum alone, RAdam's
    warm-up). Put it after the root of Adam's denominator.

    Args:
        decay: :math:`\beta` in [0, 1), the second moment's decay: a number,
            a schedule or a handle.
        threshold: the :math:`\rho_t` from which the adaptive step is used (>= 4).

    Returns:
        The block; its state is :class:`RectifyState`.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.rectify(0.999)
        >>> u, _ = tx.update(jnp.array([3.0]), tx.init(jnp.zeros(1)))
        >>> float(u[0])  # rho_1 = 1 < 5: no adaptive step yet
        1.0
    """
    hp = Hyperparams(decay=decay, threshold=threshold).check("decay", **_DECAY)
    hp.check("threshold", lower=4).use_complement("decay").use_count()

    def apply(updates, values, params):
        b, t = values["decay"], values.count
        rho_inf = 2 / values.complement("decay") - 1
        power = b**t
        rho = rho_inf - 2 * t * power / (1 - power)
        ratio = (rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho)
        r = jnp.sqrt(jnp.where(rho >= values["threshold"], ratio, 1))
        on = rho >= values["threshold"]

        def leaf(u):
            dt = tree.real_dtype(u.dtype)
            return jnp.where(on, u / tree.to_dtype(r, dt), jnp.ones_like(u))

        return jax.tree.map(leaf, updates)

    return hp.transform(apply, RectifyState)


def scale_by_radam(
    b1: ScalarOrSchedule | Hyperparam = 0.9,
    b2: ScalarOrSchedule | Hyperparam = 0.999,
    eps: ScalarOrSchedule | Hyperparam = 1e-8,
    eps_root: ScalarOrSchedule | Hyperparam = 0.0,
    threshold: ScalarOrSchedule | Hyperparam = 5.0,
    *,
    mu_dtype: DTypeLike | None = None,
    nu_dtype: DTypeLike | None = None,
) -> GradientTransformationExtraArgs:
    r"""RAdam's direction: Adam's, rectified by :math:`r_t`, or momentum alone.

    :math:`r_t \hat m / (\sqrt{\hat v + \epsilon_r} + \epsilon)` once
    :math:`\rho_t \ge` ``threshold`` (see :func:`rectify`), :math:`\hat m` before.

    See :func:`gradxform.radam` for the optimizer.

    Composition: ``divide(chain(ema_first_moment(b1), bias_correct(b1)),
    chain(ema_second_moment(b2), bias_correct(b2), sqrt_with_eps(eps, eps_root),
    rectify(b2, threshold)))``, with one store holding the five values and the
    step count.

    Args:
        b1, b2, eps, eps_root: as in :func:`scale_by_adam`.
        threshold: the :math:`\rho_t` from which the adaptive step is used (>= 4).
        mu_dtype, nu_dtype: as in :func:`scale_by_adam`.

    Returns:
        RAdam's direction (before the learning rate).

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.scale_by_radam()
        >>> u, _ = tx.update(jnp.array([0.5, -4.0]), tx.init(jnp.zeros(2)))
        >>> [round(float(x), 4) for x in u]  # the first steps are momentum alone: m_hat = g
        [0.5, -4.0]
    """
    hp = Hyperparams(b1=b1, b2=b2, eps=eps, eps_root=eps_root, threshold=threshold)
    numerator = chain(ema_first_moment(hp["b1"], dtype=mu_dtype), bias_correct(hp["b1"]))
    denominator = chain(
        ema_second_moment(hp["b2"], dtype=nu_dtype),
        bias_correct(hp["b2"]),
        sqrt_with_eps(hp["eps"], hp["eps_root"]),
        rectify(hp["b2"], hp["threshold"]),
    )  # the root is >= eps; rectify divides it by r_t > 0, or gives 1
    return hp.chain(divide(numerator, denominator, positive_if=hp["eps"]))


class YogiSecondMomentState(NamedTuple):
    """State of :func:`yogi_second_moment`.

    Attributes:
        nu: the second moment :math:`v` (real-valued).
        hyperparams: the block's store (``EmptyState()`` when the decay is a handle).
    """

    nu: Any
    hyperparams: HyperparamState | EmptyState


def yogi_second_moment(
    decay: ScalarOrSchedule | Hyperparam = 0.999,
    *,
    initial_value: float = 1e-6,
    dtype: DTypeLike | None = None,
) -> GradientTransformationExtraArgs:
    r"""Yogi's additive second moment (Zaheer et al., 2018).

    :math:`v \leftarrow v - (1 - \beta) \operatorname{sign}(v - |g|^2) |g|^2`,
    output :math:`v`: it moves towards :math:`|g|^2` by a step proportional to
    :math:`|g|^2` instead of to the gap (Adam's EMA), so it grows fast and
    shrinks slowly.

    Args:
        decay: :math:`\beta` in [0, 1): a number, a schedule or a handle.
        initial_value: :math:`v_0 \ge 0` (optax's default 1e-6).
        dtype: dtype of :math:`v` (default: real, at least float32).

    Returns:
        The block; its state is :class:`YogiSecondMomentState`.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.yogi_second_moment(0.5, initial_value=1.0)
        >>> v, _ = tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))
        >>> float(v[0])  # 1 + 0.5 * 4
        3.0
    """
    initial_value = checks.real("initial_value", initial_value, lower=0)
    hp = Hyperparams(decay=decay).check("decay", **_DECAY).use_complement("decay")

    def init_fn(params):
        return YogiSecondMomentState(
            tree.squares_like(params, initial_value, dtype), hp.init(params)
        )

    def update_fn(updates, state, params=None, **extra_args):
        del params
        tree.check_structure(state.nu, updates, "Yogi moment", "updates")
        values, hyper = hp.step(state.hyperparams, extra_args)

        def leaf(v, g):
            square = tree.squared_magnitude(g, v)
            gain = tree.to_dtype(values.complement("decay"), v.dtype)
            return tree.to_dtype(v - gain * jnp.sign(v - square) * square, v.dtype)

        nu = jax.tree.map(leaf, state.nu, updates)
        return nu, YogiSecondMomentState(nu, hyper)

    return GradientTransformationExtraArgs(init_fn, update_fn)


def scale_by_yogi(
    b1: ScalarOrSchedule | Hyperparam = 0.9,
    b2: ScalarOrSchedule | Hyperparam = 0.999,
    eps: ScalarOrSchedule | Hyperparam = 1e-3,
    eps_root: ScalarOrSchedule | Hyperparam = 0.0,
    *,
    initial_accumulator_value: float = 1e-6,
    mu_dtype: DTypeLike | None = None,
    nu_dtype: DTypeLike | None = None,
) -> GradientTransformationExtraArgs:
    r"""Yogi's direction :math:`\hat m / (\sqrt{\hat v + \epsilon_r} + \epsilon)`.

    See :func:`gradxform.yogi` for the optimizer. :math:`m` starts at 0 (the
    paper's); optax starts it at ``initial_accumulator_value`` too.

    Composition: ``divide(chain(ema_first_moment(b1), bias_correct(b1)),
    chain(yogi_second_moment(b2, initial_value=...), bias_correct(b2),
    sqrt_with_eps(eps, eps_root)))``, with one store holding the four values
    and the step count.

    Args:
        b1, b2: the decays in [0, 1): numbers, schedules or handles.
        eps: :math:`\epsilon \ge 0`, outside the root.
        eps_root: :math:`\epsilon_r \ge 0`, inside the root.
        initial_accumulator_value: :math:`v_0 \ge 0`.
        mu_dtype: dtype of :math:`m` (default: each parameter's dtype).
        nu_dtype: dtype of :math:`v` (default: real, at least float32).

    Returns:
        Yogi's direction (before the learning rate).

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.scale_by_yogi(eps=0.0, initial_accumulator_value=0.0)
        >>> u, _ = tx.update(jnp.array([0.5, -4.0]), tx.init(jnp.zeros(2)))
        >>> [round(float(x), 4) for x in u]  # the first direction is sign(g)
        [1.0, -1.0]
    """
    hp = Hyperparams(b1=b1, b2=b2, eps=eps, eps_root=eps_root)
    numerator = chain(ema_first_moment(hp["b1"], dtype=mu_dtype), bias_correct(hp["b1"]))
    second = yogi_second_moment(hp["b2"], initial_value=initial_accumulator_value, dtype=nu_dtype)
    denominator = chain(second, bias_correct(hp["b2"]), sqrt_with_eps(hp["eps"], hp["eps_root"]))
    return hp.chain(divide(numerator, denominator, positive_if=hp["eps"]))  # Yogi keeps v >= 0


class NormalizeByPreviousMomentState(NamedTuple):
    """State of :func:`normalize_by_previous_moment`.

    Attributes:
        nu: the second moment :math:`v` of the updates so far (real-valued).
        hyperparams: the block's store (``EmptyState()`` when all are handles).
    """

    nu: Any
    hyperparams: HyperparamState | EmptyState


def normalize_by_previous_moment(
    decay: ScalarOrSchedule | Hyperparam = 0.9999,
    eps: ScalarOrSchedule | Hyperparam = 1e-6,
    *,
    dtype: DTypeLike | None = None,
) -> GradientTransformationExtraArgs:
    r"""ADOPT's ordering: divide by the second moment *before* it sees this update.

    Output :math:`g / \max(\sqrt{v}, \epsilon)` with the previous :math:`v`,
    then :math:`v \leftarrow \beta v + (1 - \beta) |g|^2`. The first update
    only sets :math:`v = |g|^2` and outputs 0 (Taniguchi et al., 2024).

    Args:
        decay: :math:`\beta` in [0, 1): a number, a schedule or a handle.
        eps: :math:`\epsilon \ge 0`, the floor of :math:`\sqrt{v}`.
        dtype: dtype of :math:`v` (default: real, at least float32).

    Returns:
        The block; its state is :class:`NormalizeByPreviousMomentState`.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.normalize_by_previous_moment(0.5)
        >>> state = tx.init(jnp.zeros(1))
        >>> u, state = tx.update(jnp.array([2.0]), state)
        >>> float(u[0]), float(state.nu[0])  # the first update sets v = 4
        (0.0, 4.0)
        >>> u, state = tx.update(jnp.array([3.0]), state)
        >>> float(u[0])  # 3 / sqrt(4)
        1.5
    """
    hp = Hyperparams(decay=decay, eps=eps).check("decay", **_DECAY).check("eps", lower=0)
    hp.use_complement("decay").use_count()

    def init_fn(params):
        return NormalizeByPreviousMomentState(
            tree.squares_like(params, 0.0, dtype), hp.init(params)
        )

    def update_fn(updates, state, params=None, **extra_args):
        del params
        tree.check_structure(state.nu, updates, "second moment", "updates")
        values, hyper = hp.step(state.hyperparams, extra_args)
        first = values.count == 1
        decay_now = jnp.where(first, 0, values["decay"])
        gain = jnp.where(first, 1, values.complement("decay"))

        def leaf(g, v):
            dt = tree.real_dtype(g.dtype)
            floor = jnp.maximum(jnp.sqrt(tree.to_dtype(v, dt)), tree.to_dtype(values["eps"], dt))
            return jnp.where(first, jnp.zeros_like(g), g / floor)

        out = jax.tree.map(leaf, updates, state.nu)
        squares = jax.tree.map(tree.squared_magnitude, updates, state.nu)
        nu = tree.ema(decay_now, gain, state.nu, squares)
        return out, NormalizeByPreviousMomentState(nu, hyper)

    return GradientTransformationExtraArgs(init_fn, update_fn)


def _quarter_power(count: jax.Array) -> jax.Array:
    """ADOPT's default clipping bound, :math:`t^{1/4}` at update :math:`t + 1`."""
    return count**0.25


def scale_by_adopt(
    b1: ScalarOrSchedule | Hyperparam = 0.9,
    b2: ScalarOrSchedule | Hyperparam = 0.9999,
    eps: ScalarOrSchedule | Hyperparam = 1e-6,
    *,
    clip_value: ScalarOrSchedule | Hyperparam | None = _quarter_power,
    mu_dtype: DTypeLike | None = None,
    nu_dtype: DTypeLike | None = None,
) -> GradientTransformationExtraArgs:
    r"""ADOPT's direction (Taniguchi et al., 2024): momentum of pre-normalized updates.

    :math:`m \leftarrow \beta_1 m + (1 - \beta_1)\operatorname{clip}(g / \max(\sqrt{v}, \epsilon),
    c_t)`, output :math:`m`, with :math:`v` the second moment *before* this update
    and :math:`c_t = t^{1/4}` (:math:`t` = updates so far). See :func:`gradxform.adopt`.

    Composition: ``chain(normalize_by_previous_moment(b2, eps), [clip(clip_value)],
    ema_first_moment(b1))``, with one store holding ``b1``, ``b2``, ``eps``, the
    clipping bound (a schedule of the count) and the count.

    Args:
        b1, b2: the decays in [0, 1): numbers, schedules or handles.
        eps: :math:`\epsilon \ge 0`, the floor of :math:`\sqrt{v}`.
        clip_value: the bound :math:`c_t \ge 0` (a number or a schedule), or
            ``None`` for no clipping.
        mu_dtype: dtype of :math:`m` (default: each parameter's dtype).
        nu_dtype: dtype of :math:`v` (default: real, at least float32).

    Returns:
        ADOPT's direction (before the learning rate).

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.scale_by_adopt()
        >>> state = tx.init(jnp.zeros(2))
        >>> u, state = tx.update(jnp.array([0.5, -4.0]), state)
        >>> u.tolist()  # the first update only measures v
        [0.0, 0.0]
    """
    specs: dict[str, Any] = {"b1": b1, "b2": b2, "eps": eps}
    if clip_value is not None:
        specs["clip_value"] = clip_value
    hp = Hyperparams(**specs)
    parts = [normalize_by_previous_moment(hp["b2"], hp["eps"], dtype=nu_dtype)]
    if clip_value is not None:
        parts.append(clip(hp["clip_value"]))
    parts.append(ema_first_moment(hp["b1"], dtype=mu_dtype))
    return hp.chain(*parts)
