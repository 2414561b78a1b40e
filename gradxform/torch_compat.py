"""Presets with torch.optim's defaults and update order.

Each function takes torch's argument names and defaults and returns a
gradxform chain that reproduces the matching ``torch.optim`` class step for
step (tested against recorded torch trajectories). The state uses gradxform's
hyperparameter names (``learning_rate``, ``b1``, ``b2``, ``decay``, ...), one
store per preset. The differences from the optax-style defaults of
:mod:`gradxform.optimizers`:

=================  ==============================  ====================================
torch.optim        gradxform equivalent            what differs from the gx default
=================  ==============================  ====================================
SGD                ``sgd`` (same semantics)        ``weight_decay`` is L2, added to g
Adagrad            ``adagrad(lr, 0.0, 1e-10,       eps outside the root, h_0 = 0,
                   eps_in_sqrt=False)``            ``lr_decay`` is ``lr / (1 + t k)``
RMSprop            ``rmsprop(lr, 0.99, 1e-8,       ``alpha=0.99``, eps outside the root
                   eps_in_sqrt=False)``
Adam               ``adam``                        ``weight_decay`` is L2 (before the
                                                   moments); AMSGrad takes the max
                                                   *before* bias correction
AdamW              ``adamw(..., weight_decay=      default decay 1e-2 (optax: 1e-4)
                   1e-2)``
=================  ==============================  ====================================
"""

from __future__ import annotations

import numbers
from typing import Any

from gradxform import checks, schedules
from gradxform.base import GradientTransformationExtraArgs, chain, divide
from gradxform.hyperparams import Hyperparams, ScalarOrSchedule
from gradxform.transforms.moments import (
    bias_correct,
    ema_first_moment,
    ema_second_moment,
    running_max,
    scale_by_rms,
    scale_by_sum_of_squares,
    sqrt_with_eps,
)
from gradxform.transforms.momentum import scale_by_momentum
from gradxform.transforms.scaling import (
    add_decayed_weights,
    decay_blocks,
    scale_by_learning_rate,
)

__all__ = ["adagrad", "adam", "adamw", "rmsprop", "sgd"]


def _nonzero(**specs: Any) -> dict[str, Any]:
    """The keyword arguments other than the number 0 (torch's "off")."""
    return {k: v for k, v in specs.items() if not (isinstance(v, numbers.Real) and v == 0)}


def sgd(
    lr: float = 1e-3,
    momentum: float = 0.0,
    dampening: float = 0.0,
    weight_decay: float = 0.0,
    nesterov: bool = False,
) -> GradientTransformationExtraArgs:
    r"""``torch.optim.SGD``.

    :math:`g \leftarrow g + \lambda x`; :math:`b \leftarrow \mu b + (1 - d) g`
    (:math:`b = g` at the first step);
    :math:`x \leftarrow x - \eta\, (g + \mu b \text{ if nesterov else } b)`.

    Composition: ``chain([add_decayed_weights(weight_decay)],
    [scale_by_momentum(momentum, nesterov=..., dampening=...)],
    scale_by_learning_rate(lr))``.

    Args:
        lr: the learning rate :math:`\eta`.
        momentum: :math:`\mu` (0: no velocity).
        dampening: :math:`d`.
        weight_decay: :math:`\lambda`, L2 added to the gradient.
        nesterov: Nesterov momentum.

    Returns:
        The SGD preset.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.torch_compat.sgd(lr=0.1, momentum=0.9)
        >>> u, _ = tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))
        >>> round(float(u[0]), 6)
        -0.2
    """
    with_momentum = bool(momentum or nesterov)
    specs = _nonzero(weight_decay=weight_decay, dampening=dampening if with_momentum else 0)
    if with_momentum:
        specs["momentum"] = momentum
    hp = Hyperparams(learning_rate=lr, **specs)
    parts = decay_blocks(hp)
    if with_momentum:
        damp = hp["dampening"] if "dampening" in specs else None
        parts.append(scale_by_momentum(hp["momentum"], nesterov=nesterov, dampening=damp))
    return hp.chain(*parts, scale_by_learning_rate(hp["learning_rate"]))


def adagrad(
    lr: float = 1e-2,
    lr_decay: float = 0.0,
    weight_decay: float = 0.0,
    initial_accumulator_value: float = 0.0,
    eps: float = 1e-10,
) -> GradientTransformationExtraArgs:
    r"""``torch.optim.Adagrad``.

    :math:`g \leftarrow g + \lambda x`; :math:`h \leftarrow h + g^2`;
    :math:`x \leftarrow x - \eta / (1 + (t - 1) k)\; g / (\sqrt{h} + \epsilon)`.

    Composition: ``chain([add_decayed_weights(weight_decay)],
    scale_by_sum_of_squares(initial_accumulator_value, eps),
    scale_by_learning_rate(lr or inverse_time_decay(lr, lr_decay)))``.

    Args:
        lr: the learning rate :math:`\eta`.
        lr_decay: :math:`k \ge 0`.
        weight_decay: :math:`\lambda`, L2 added to the gradient.
        initial_accumulator_value: :math:`h_0 \ge 0`.
        eps: :math:`\epsilon`, outside the root.

    Returns:
        The Adagrad preset.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.torch_compat.adagrad(lr=0.5)
        >>> u, _ = tx.update(jnp.array([4.0]), tx.init(jnp.zeros(1)))
        >>> float(u[0])
        -0.5
    """
    lr_decay = checks.real("lr_decay", lr_decay, lower=0)
    learning_rate: ScalarOrSchedule = lr
    if lr_decay:
        learning_rate = schedules.inverse_time_decay(checks.real("lr", lr, lower=0), lr_decay)
    hp = Hyperparams(learning_rate=learning_rate, eps=eps, **_nonzero(weight_decay=weight_decay))
    return hp.chain(
        *decay_blocks(hp),
        scale_by_sum_of_squares(initial_accumulator_value, hp["eps"], eps_in_sqrt=False),
        scale_by_learning_rate(hp["learning_rate"]),
    )


def rmsprop(
    lr: float = 1e-2,
    alpha: float = 0.99,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    momentum: float = 0.0,
    centered: bool = False,
) -> GradientTransformationExtraArgs:
    r"""``torch.optim.RMSprop``.

    :math:`g \leftarrow g + \lambda x`; :math:`v \leftarrow \alpha v + (1 - \alpha) g^2`;
    :math:`d = g / (\sqrt{v} + \epsilon)` (centered: :math:`\sqrt{v - m^2}`);
    with momentum :math:`b \leftarrow \mu b + d`, :math:`x \leftarrow x - \eta b`,
    else :math:`x \leftarrow x - \eta d`. :math:`\alpha` is stored as ``decay``.

    Composition: ``chain([add_decayed_weights(weight_decay)],
    scale_by_rms(alpha, eps, eps_in_sqrt=False, centered=...),
    [scale_by_momentum(momentum)], scale_by_learning_rate(lr))``.

    Args:
        lr: the learning rate :math:`\eta`.
        alpha: the decay :math:`\alpha` in [0, 1).
        eps: :math:`\epsilon`, outside the root.
        weight_decay: :math:`\lambda`, L2 added to the gradient.
        momentum: :math:`\mu` (0: no velocity).
        centered: divide by the root of the variance estimate.

    Returns:
        The RMSprop preset.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.torch_compat.rmsprop(lr=0.01, alpha=0.75, eps=0.0)
        >>> u, _ = tx.update(jnp.array([-2.0]), tx.init(jnp.zeros(1)))
        >>> round(float(u[0]), 6)
        0.02
    """
    specs = _nonzero(weight_decay=weight_decay, momentum=momentum)
    hp = Hyperparams(learning_rate=lr, decay=alpha, eps=eps, **specs)
    rms = scale_by_rms(hp["decay"], hp["eps"], eps_in_sqrt=False, centered=centered)
    parts = [*decay_blocks(hp), rms]
    if "momentum" in specs:
        parts.append(scale_by_momentum(hp["momentum"]))
    return hp.chain(*parts, scale_by_learning_rate(hp["learning_rate"]))


def _adam(
    lr: float, betas: tuple[float, float], eps: float, amsgrad: bool, decay: dict[str, float]
) -> tuple[Hyperparams, GradientTransformationExtraArgs]:
    """The store and torch's Adam direction (AMSGrad: the max of the *uncorrected* moments)."""
    b1, b2 = betas
    hp = Hyperparams(learning_rate=lr, b1=b1, b2=b2, eps=eps, **decay)
    numerator = chain(ema_first_moment(hp["b1"]), bias_correct(hp["b1"]))
    second = [ema_second_moment(hp["b2"])]
    if amsgrad:
        second.append(running_max())
    second += [bias_correct(hp["b2"]), sqrt_with_eps(hp["eps"], None)]
    return hp, divide(numerator, chain(*second))


def adam(
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    amsgrad: bool = False,
) -> GradientTransformationExtraArgs:
    r"""``torch.optim.Adam``: L2 ``weight_decay`` added to the gradient; AMSGrad as torch.

    :math:`g \leftarrow g + \lambda x`, then Adam's step
    :math:`x \leftarrow x - \eta\, \hat m / (\sqrt{\hat v} + \epsilon)`; with
    ``amsgrad`` the running maximum of the uncorrected :math:`v` is corrected
    and used.

    Composition: ``chain([add_decayed_weights(weight_decay)],
    divide(chain(ema_first_moment(b1), bias_correct(b1)),
    chain(ema_second_moment(b2), [running_max()], bias_correct(b2),
    sqrt_with_eps(eps))), scale_by_learning_rate(lr))``.

    Args:
        lr: the learning rate :math:`\eta`.
        betas: :math:`(\beta_1, \beta_2)`, stored as ``b1`` and ``b2``.
        eps: :math:`\epsilon`, outside the root.
        weight_decay: :math:`\lambda`, L2 added to the gradient.
        amsgrad: torch's AMSGrad.

    Returns:
        The Adam preset.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.torch_compat.adam(lr=0.1)
        >>> u, _ = tx.update(jnp.array([3.0]), tx.init(jnp.zeros(1)))
        >>> round(float(u[0]), 4)
        -0.1
    """
    hp, direction = _adam(lr, betas, eps, amsgrad, _nonzero(weight_decay=weight_decay))
    return hp.chain(*decay_blocks(hp), direction, scale_by_learning_rate(hp["learning_rate"]))


def adamw(
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 1e-2,
    amsgrad: bool = False,
) -> GradientTransformationExtraArgs:
    r"""``torch.optim.AdamW``: :math:`x \leftarrow x (1 - \eta \lambda) - \eta\, d_{\text{adam}}`.

    Composition: ``chain(<torch_compat.adam's direction>,
    add_decayed_weights(weight_decay), scale_by_learning_rate(lr))``.

    Args:
        lr: the learning rate :math:`\eta`.
        betas: :math:`(\beta_1, \beta_2)`, stored as ``b1`` and ``b2``.
        eps: :math:`\epsilon`, outside the root.
        weight_decay: :math:`\lambda`, decoupled.
        amsgrad: torch's AMSGrad.

    Returns:
        The AdamW preset.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.torch_compat.adamw(lr=0.1, weight_decay=0.5)
        >>> x = jnp.array([2.0])
        >>> u, _ = tx.update(jnp.array([3.0]), tx.init(x), x)
        >>> round(float(u[0]), 4)
        -0.2
    """
    hp, direction = _adam(lr, betas, eps, amsgrad, {"weight_decay": weight_decay})
    decay = add_decayed_weights(hp["weight_decay"])
    return hp.chain(direction, decay, scale_by_learning_rate(hp["learning_rate"]))
