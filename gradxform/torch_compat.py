"""Presets with torch.optim's defaults and update order.

Each function takes torch's argument names and defaults and returns a
gradxform chain that reproduces the matching ``torch.optim`` class step for
step (tested against recorded torch trajectories). The differences from the
optax-style defaults of :mod:`gradxform.optimizers`:

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

from gradxform import schedules
from gradxform.base import GradientTransformationExtraArgs, chain, divide
from gradxform.hyperparams import check_nonnegative
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
from gradxform.transforms.scaling import add_decayed_weights, scale_by_learning_rate

__all__ = ["adagrad", "adam", "adamw", "rmsprop", "sgd"]


def _l2(weight_decay: float) -> list:
    check_nonnegative("weight_decay", weight_decay)
    return [add_decayed_weights(weight_decay)] if weight_decay else []


def sgd(
    lr: float = 1e-3,
    momentum: float = 0.0,
    dampening: float = 0.0,
    weight_decay: float = 0.0,
    nesterov: bool = False,
) -> GradientTransformationExtraArgs:
    """``torch.optim.SGD``: ``g += wd x``; ``b = mu b + (1 - dampening) g`` (``b = g`` first);
    ``x -= lr (g + mu b if nesterov else b)``."""
    parts = _l2(weight_decay)
    if momentum or nesterov:
        parts.append(scale_by_momentum(momentum, nesterov=nesterov, dampening=dampening))
    return chain(*parts, scale_by_learning_rate(lr))


def adagrad(
    lr: float = 1e-2,
    lr_decay: float = 0.0,
    weight_decay: float = 0.0,
    initial_accumulator_value: float = 0.0,
    eps: float = 1e-10,
) -> GradientTransformationExtraArgs:
    """``torch.optim.Adagrad``: ``g += wd x``; ``h += g*g``;
    ``x -= lr / (1 + (t - 1) lr_decay) * g / (sqrt(h) + eps)``."""
    check_nonnegative("lr", lr)
    check_nonnegative("lr_decay", lr_decay)
    learning_rate = schedules.inverse_time_decay(lr, lr_decay) if lr_decay else lr
    return chain(
        *_l2(weight_decay),
        scale_by_sum_of_squares(initial_accumulator_value, eps, eps_in_sqrt=False),
        scale_by_learning_rate(learning_rate),
    )


def rmsprop(
    lr: float = 1e-2,
    alpha: float = 0.99,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    momentum: float = 0.0,
    centered: bool = False,
) -> GradientTransformationExtraArgs:
    """``torch.optim.RMSprop``: ``g += wd x``; ``v = alpha v + (1 - alpha) g*g``;
    ``d = g / (sqrt(v [- m*m if centered]) + eps)``; with momentum ``b = mu b + d``,
    ``x -= lr b``, else ``x -= lr d``."""
    parts = [*_l2(weight_decay), scale_by_rms(alpha, eps, eps_in_sqrt=False, centered=centered)]
    if momentum:
        parts.append(scale_by_momentum(momentum))
    return chain(*parts, scale_by_learning_rate(lr))


def _adam_direction(betas, eps, amsgrad):
    b1, b2 = betas
    numerator = chain(ema_first_moment(b1, name="b1"), bias_correct(b1, name="b1"))
    second = [ema_second_moment(b2, name="b2")]
    if amsgrad:
        second.append(running_max())  # torch: max of the *uncorrected* moments
    second += [bias_correct(b2, name="b2"), sqrt_with_eps(eps)]
    return divide(numerator, chain(*second))


def adam(
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    amsgrad: bool = False,
) -> GradientTransformationExtraArgs:
    """``torch.optim.Adam``: L2 ``weight_decay`` added to the gradient; AMSGrad as torch."""
    return chain(
        *_l2(weight_decay), _adam_direction(betas, eps, amsgrad), scale_by_learning_rate(lr)
    )


def adamw(
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 1e-2,
    amsgrad: bool = False,
) -> GradientTransformationExtraArgs:
    """``torch.optim.AdamW``: ``x <- x (1 - lr wd) - lr * adam_direction``."""
    check_nonnegative("weight_decay", weight_decay)
    return chain(
        _adam_direction(betas, eps, amsgrad),
        add_decayed_weights(weight_decay),
        scale_by_learning_rate(lr),
    )
