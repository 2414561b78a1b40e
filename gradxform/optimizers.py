"""Optimizers: nothing but chains of transforms, each with its formula.

Notation: ``g`` the gradient, ``t = 1, 2, ...`` the update number, ``lr`` the
learning rate (a number or a schedule), ``x`` the parameters. Every optimizer
returns an ``optax.GradientTransformationExtraArgs``; apply its updates with
:func:`gradxform.apply_updates`.

Where the lecture's code differs (CS231n lecture 8):

* RMSProp is written ``grad_squared += decay_rate * grad_squared + ...``:
  ``+=`` would add the decayed average to itself and grow without bound. The
  update is an assignment, ``v = decay * v + (1 - decay) * g*g``
  (:func:`rmsprop`).
* The bias-corrected Adam snippet computes ``first_unbias`` and
  ``second_unbias`` and then steps with the *biased* moments. Adam steps with
  the corrected ones (:func:`adam`); the lecture's last line is exactly Adam
  without :func:`gradxform.bias_correct`.
* The lecture's AdaGrad and Adam put ``1e-7`` outside the square root; optax
  puts AdaGrad's and RMSProp's eps inside. Both are ``eps_in_sqrt`` options.
"""

from __future__ import annotations

import numbers

from gradxform.base import GradientTransformationExtraArgs, Schedule, chain
from gradxform.hyperparams import check_nonnegative
from gradxform.transforms.moments import (
    scale_by_adam,
    scale_by_nadam,
    scale_by_rms,
    scale_by_sum_of_squares,
)
from gradxform.transforms.momentum import scale_by_momentum
from gradxform.transforms.scaling import add_decayed_weights, scale_by_learning_rate

__all__ = [
    "adagrad",
    "adam",
    "adamw",
    "amsgrad",
    "nadam",
    "rmsprop",
    "sgd",
    "sgd_velocity",
]


def _is_zero(x) -> bool:
    return isinstance(x, numbers.Real) and x == 0


def sgd(
    learning_rate: float | Schedule,
    momentum: float | Schedule = 0.0,
    *,
    nesterov: bool = False,
    dampening: float | Schedule = 0.0,
    weight_decay: float | Schedule | None = None,
    dtype=None,
) -> GradientTransformationExtraArgs:
    """Stochastic gradient descent, with heavy-ball or Nesterov momentum.

    ``v <- momentum * v + (1 - dampening) * g``, ``x <- x - lr * v``
    (Nesterov: ``x <- x - lr * (g + momentum * v)``); ``v = g`` at the first
    update, as in torch.optim.SGD. With ``momentum=0`` (the default) and no
    Nesterov, no velocity is kept: ``x <- x - lr * g``.

    Composition: ``chain([add_decayed_weights(weight_decay)],
    [scale_by_momentum(momentum, nesterov=..., dampening=...)],
    scale_by_learning_rate(lr))``. ``weight_decay`` here is torch's coupled L2
    term ``g + weight_decay * x``.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.sgd(0.1, momentum=0.9)
        >>> x = jnp.array([1.0, -2.0])
        >>> state = tx.init(x)
        >>> for _ in range(2):
        ...     updates, state = tx.update(2 * x, state)  # gradient of |x|^2
        ...     x = gx.apply_updates(x, updates)
        >>> [round(float(v), 5) for v in x]
        [0.46, -0.92]
    """
    parts = []
    if weight_decay is not None:
        parts.append(add_decayed_weights(weight_decay))
    if nesterov or not _is_zero(momentum) or not _is_zero(dampening):
        parts.append(
            scale_by_momentum(momentum, nesterov=nesterov, dampening=dampening, dtype=dtype)
        )
    parts.append(scale_by_learning_rate(learning_rate))
    return chain(*parts)


def sgd_velocity(
    learning_rate: float | Schedule,
    momentum: float | Schedule = 0.9,
    *,
    nesterov: bool = False,
    dtype=None,
) -> GradientTransformationExtraArgs:
    """SGD+Momentum in the lecture's second formulation.

    ``v <- momentum * v - lr * g``, ``x <- x + v``.

    Composition: ``chain(scale_by_learning_rate(lr), scale_by_momentum(momentum))``
    -- :func:`sgd`'s two pieces in the other order. With a constant learning
    rate both give the same iterates (``v_velocity = -lr * v_sgd``). When the
    learning rate changes they differ: here a new rate only scales new
    gradients and the velocity keeps the old rates' contributions, while in
    :func:`sgd` the whole velocity is rescaled by the new rate at once. After a
    step decay from ``lr`` to ``lr/10`` at update ``k``, :func:`sgd`'s step
    drops tenfold at ``k``; this form's step decays geometrically, by
    ``momentum`` per update, towards the new size.
    """
    return chain(
        scale_by_learning_rate(learning_rate),
        scale_by_momentum(momentum, nesterov=nesterov, dtype=dtype),
    )


def adagrad(
    learning_rate: float | Schedule,
    initial_accumulator_value: float = 0.1,
    eps: float | Schedule = 1e-7,
    *,
    eps_in_sqrt: bool = True,
    dtype=None,
) -> GradientTransformationExtraArgs:
    """AdaGrad (Duchi et al., 2011).

    ``h <- h + g*g``, ``x <- x - lr * g / sqrt(h + eps)``, or with
    ``eps_in_sqrt=False`` (the lecture's and torch's form)
    ``x <- x - lr * g / (sqrt(h) + eps)``. Defaults are optax's
    (``h_0 = 0.1``, eps inside); the lecture's code is
    ``adagrad(lr, 0.0, 1e-7, eps_in_sqrt=False)``; torch's is
    :func:`gradxform.torch_compat.adagrad`.

    Composition: ``chain(scale_by_sum_of_squares(h_0, eps, eps_in_sqrt=...),
    scale_by_learning_rate(lr))``.
    """
    return chain(
        scale_by_sum_of_squares(
            initial_accumulator_value, eps, eps_in_sqrt=eps_in_sqrt, dtype=dtype
        ),
        scale_by_learning_rate(learning_rate),
    )


def rmsprop(
    learning_rate: float | Schedule,
    decay: float | Schedule = 0.9,
    eps: float | Schedule = 1e-8,
    *,
    eps_in_sqrt: bool = True,
    initial_scale: float = 0.0,
    centered: bool = False,
    momentum: float | Schedule | None = None,
    nesterov: bool = False,
    dtype=None,
) -> GradientTransformationExtraArgs:
    """RMSProp (Tieleman & Hinton, 2012).

    ``v <- decay * v + (1 - decay) * g*g`` (an assignment: the lecture's
    ``+=`` is a slip), ``x <- x - lr * g / sqrt(v + eps)``; with
    ``eps_in_sqrt=False`` ``g / (sqrt(v) + eps)`` (the lecture's, torch's).
    ``centered=True`` divides by ``sqrt(v - m*m)`` with ``m`` the EMA of
    ``g``; ``momentum`` adds a velocity on the preconditioned gradient.
    Defaults are optax's; torch's are :func:`gradxform.torch_compat.rmsprop`.

    Composition: ``chain(scale_by_rms(decay, eps, ...), [scale_by_momentum(momentum)],
    scale_by_learning_rate(lr))``.
    """
    parts = [
        scale_by_rms(
            decay,
            eps,
            eps_in_sqrt=eps_in_sqrt,
            centered=centered,
            initial_scale=initial_scale,
            dtype=dtype,
        )
    ]
    if momentum is not None:
        parts.append(scale_by_momentum(momentum, nesterov=nesterov, dtype=dtype))
    parts.append(scale_by_learning_rate(learning_rate))
    return chain(*parts)


def adam(
    learning_rate: float | Schedule,
    b1: float | Schedule = 0.9,
    b2: float | Schedule = 0.999,
    eps: float | Schedule = 1e-8,
    *,
    eps_root: float | Schedule = 0.0,
    mu_dtype=None,
    nu_dtype=None,
) -> GradientTransformationExtraArgs:
    """Adam with bias correction (Kingma & Ba, 2015).

    ``m <- b1 m + (1 - b1) g``, ``v <- b2 v + (1 - b2) g*g``,
    ``m_hat = m / (1 - b1**t)``, ``v_hat = v / (1 - b2**t)``,
    ``x <- x - lr * m_hat / (sqrt(v_hat + eps_root) + eps)``.

    Composition: ``chain(scale_by_adam(b1, b2, eps, eps_root=...),
    scale_by_learning_rate(lr))`` where :func:`gradxform.scale_by_adam` is
    ``divide(chain(ema_first_moment(b1), bias_correct(b1)),
    chain(ema_second_moment(b2), bias_correct(b2), sqrt_with_eps(eps, eps_root)))``.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.adam(0.1)
        >>> updates, state = tx.update(jnp.array([3.0, -0.5]), tx.init(jnp.zeros(2)))
        >>> [round(float(u), 4) for u in updates]  # the first step is about -lr * sign(g)
        [-0.1, 0.1]
    """
    return chain(
        scale_by_adam(b1, b2, eps, eps_root=eps_root, mu_dtype=mu_dtype, nu_dtype=nu_dtype),
        scale_by_learning_rate(learning_rate),
    )


def adamw(
    learning_rate: float | Schedule,
    b1: float | Schedule = 0.9,
    b2: float | Schedule = 0.999,
    eps: float | Schedule = 1e-8,
    weight_decay: float | Schedule = 1e-4,
    *,
    eps_root: float | Schedule = 0.0,
    mu_dtype=None,
    nu_dtype=None,
    mask=None,
) -> GradientTransformationExtraArgs:
    """Adam with decoupled weight decay (Loshchilov & Hutter, 2019).

    ``x <- x - lr * (m_hat / (sqrt(v_hat + eps_root) + eps) + weight_decay * x)``.
    Default ``weight_decay`` is optax's 1e-4 (torch's is 1e-2); ``mask`` (a
    pytree of bools or a function of the params) limits the decay to some
    leaves, as in :func:`gradxform.add_decayed_weights`.

    Composition: ``chain(scale_by_adam(...), add_decayed_weights(weight_decay),
    scale_by_learning_rate(lr))``.
    """
    check_nonnegative("weight_decay", weight_decay)
    return chain(
        scale_by_adam(b1, b2, eps, eps_root=eps_root, mu_dtype=mu_dtype, nu_dtype=nu_dtype),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )


def amsgrad(
    learning_rate: float | Schedule,
    b1: float | Schedule = 0.9,
    b2: float | Schedule = 0.999,
    eps: float | Schedule = 1e-8,
    *,
    eps_root: float | Schedule = 0.0,
    mu_dtype=None,
    nu_dtype=None,
) -> GradientTransformationExtraArgs:
    """AMSGrad (Reddi et al., 2018): Adam whose denominator never shrinks.

    ``v_max <- max(v_max, v_hat)``, ``x <- x - lr * m_hat / (sqrt(v_max + eps_root) + eps)``
    (optax's form; torch takes the maximum before bias correction, see
    :func:`gradxform.torch_compat.adam`).

    Composition: ``chain(scale_by_adam(..., amsgrad=True), scale_by_learning_rate(lr))``,
    the denominator being ``chain(ema_second_moment(b2), bias_correct(b2),
    running_max(), sqrt_with_eps(eps, eps_root))``.
    """
    return chain(
        scale_by_adam(
            b1, b2, eps, eps_root=eps_root, amsgrad=True, mu_dtype=mu_dtype, nu_dtype=nu_dtype
        ),
        scale_by_learning_rate(learning_rate),
    )


def nadam(
    learning_rate: float | Schedule,
    b1: float | Schedule = 0.9,
    b2: float | Schedule = 0.999,
    eps: float | Schedule = 1e-8,
    *,
    eps_root: float | Schedule = 0.0,
    mu_dtype=None,
    nu_dtype=None,
) -> GradientTransformationExtraArgs:
    """NAdam (Dozat, 2016): Adam with a Nesterov look-ahead first moment.

    ``m_hat = b1 m / (1 - b1**(t+1)) + (1 - b1) g / (1 - b1**t)``, the rest as
    :func:`adam`. This is optax's ``nadam``; torch's NAdam adds a momentum
    decay schedule and is a different method.

    Composition: ``chain(scale_by_nadam(b1, b2, eps), scale_by_learning_rate(lr))``
    with :func:`gradxform.nesterov_first_moment` as the numerator.
    """
    return chain(
        scale_by_nadam(b1, b2, eps, eps_root=eps_root, mu_dtype=mu_dtype, nu_dtype=nu_dtype),
        scale_by_learning_rate(learning_rate),
    )
