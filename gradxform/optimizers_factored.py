r"""Adafactor as chains: optax's recipe (:func:`adafactor`) and torch's (:func:`adafactor_torch`).

Notation as in :mod:`gradxform.optimizers`: :math:`g` the gradient, :math:`t =
1, 2, \dots` the update number, :math:`\eta` the learning rate, :math:`x` the
parameters, :math:`\mathrm{RMS}(a) = \sqrt{\mathrm{mean}(a^2)}` over one leaf.
Both declare their hyperparameters once, in one
:class:`~gradxform.hyperparams.Hyperparams` store. The two references differ in
more than defaults (see the guide's Adafactor section): :func:`adafactor`
takes optax's arguments and takes optax's steps bit for bit;
:func:`adafactor_torch` takes torch.optim.Adafactor's and takes its steps to
float rounding.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import DTypeLike

from gradxform import checks
from gradxform.base import GradientTransformationExtraArgs
from gradxform.hyperparams import Hyperparam, Hyperparams, ScalarOrSchedule
from gradxform.transforms.factored import (
    clip_by_block_rms,
    scale_by_factored_rms,
    scale_by_param_block_rms,
    scale_by_relative_step,
)
from gradxform.transforms.moments import ema_first_moment
from gradxform.transforms.scaling import (
    add_decayed_weights,
    decay_blocks,
    decay_spec,
    scale_by_learning_rate,
)

__all__ = ["adafactor", "adafactor_torch"]


def _subtract_decayed_weights(
    weight_decay: Hyperparam, mask: Any
) -> GradientTransformationExtraArgs:
    """``u - weight_decay * x``: :func:`add_decayed_weights` of ``-x``.

    After the sign flip the decay is subtracted; ``u + wd * (-x)`` has the bits of
    optax's ``-(u' + wd * x)`` (negation is exact). A mask function sees ``-x``.
    """
    decay = add_decayed_weights(weight_decay, mask)

    def update_fn(updates, state, params=None, **extra_args):
        if params is None:
            checks.fail("params", "given (adafactor's weight decay needs params)", params)
        return decay.update(updates, state, jax.tree.map(jnp.negative, params), **extra_args)

    return GradientTransformationExtraArgs(decay.init, update_fn)


def adafactor(
    learning_rate: ScalarOrSchedule | None = None,
    min_dim_size_to_factor: int = 128,
    decay_rate: ScalarOrSchedule = 0.8,
    decay_offset: int = 0,
    multiply_by_parameter_scale: bool = True,
    clipping_threshold: ScalarOrSchedule | None = 1.0,
    momentum: ScalarOrSchedule | None = None,
    dtype_momentum: DTypeLike | None = jnp.float32,
    weight_decay_rate: ScalarOrSchedule | None = None,
    eps: ScalarOrSchedule = 1e-30,
    factored: bool = True,
    weight_decay_mask: Any = None,
) -> GradientTransformationExtraArgs:
    r"""Adafactor (Shazeer & Stern, 2018) as optax composes it; optax's arguments and defaults.

    .. math::

        \hat v &= \text{factored } \mathrm{EMA}_{\beta_t}(g^2 + \epsilon),
        \quad \beta_t = 1 - t^{-c}, \quad u = g / \sqrt{\hat v} \\
        u &\leftarrow \eta\, \max(\mathrm{RMS}(x), 10^{-3})\,
            u / \max(1, \mathrm{RMS}(u) / d), \quad
        m \leftarrow \mu m + (1 - \mu) u \text{ (if momentum)} \\
        x &\leftarrow x - (m + \lambda x)

    The weight decay :math:`\lambda` is not multiplied by :math:`\eta` (optax's
    order). A leaf is factored over its two longest axes when the shorter of
    them has at least ``min_dim_size_to_factor`` entries: an :math:`(m, n)` leaf
    keeps :math:`m + n` second-moment numbers. The same bits as ``optax.adafactor``
    with the same arguments (tested over 200 steps, float32 and float64).

    Composition: ``chain(scale_by_factored_rms(decay_rate, eps, decay_offset),
    clip_by_block_rms(clipping_threshold), scale_by_learning_rate(learning_rate),
    scale_by_param_block_rms(1e-3), ema_first_moment(momentum), subtract
    weight_decay_rate * x)``, the optional pieces left out when off. optax flips
    the sign last; here the learning rate flips it (the same bits).

    Args:
        learning_rate: :math:`\eta \ge 0`, a number or a schedule; ``None`` (optax's
            default, no scaling) is :math:`\eta = 1`.
        min_dim_size_to_factor: an integer :math:`\ge 1`; the default 128 leaves
            smaller matrices unfactored.
        decay_rate: :math:`c \ge 0` in :math:`\beta_t = 1 - t^{-c}`.
        decay_offset: updates before the decay schedule starts (fine-tuning), :math:`\ge 0`.
        multiply_by_parameter_scale: scale each leaf's step by its parameter's RMS
            (at least 1e-3): the step is relative to the weights.
        clipping_threshold: :math:`d > 0`, the largest update RMS per leaf; ``None``: no clipping.
        momentum: :math:`\mu` in [0, 1) for an EMA of the updates (not debiased);
            ``None``: none (no extra memory).
        dtype_momentum: dtype of :math:`m` (optax's default float32; ``None``: the params').
        weight_decay_rate: :math:`\lambda \ge 0`; ``None``: none.
            The number 0 leaves the decay block out (``jnp.asarray(0.0)``
            keeps it settable).
        eps: :math:`\epsilon \ge 0`, added to :math:`g^2`.
        factored: ``False`` keeps every second moment whole.
        weight_decay_mask: limits the decay to some leaves, as in
            :func:`gradxform.add_decayed_weights` (a mask function receives :math:`-x`).

    Returns:
        Adafactor; its state holds one store and :class:`gradxform.FactoredRmsState`
        (and :math:`m` with momentum).

    Raises:
        ValueError, TypeError: for a negative learning rate, decay, eps or weight
            decay, ``momentum`` outside [0, 1), ``clipping_threshold <= 0`` or
            ``min_dim_size_to_factor < 1``.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.adafactor(0.1)
        >>> x = jnp.array([3.0, -3.0])
        >>> u, _ = tx.update(jnp.array([2.0, 0.5]), tx.init(x), x)  # -0.1 * 3 * sign(g)
        >>> [round(float(v), 4) for v in u]
        [-0.3, -0.3]
    """
    hp = Hyperparams(
        learning_rate=1.0 if learning_rate is None else learning_rate,
        decay_rate=decay_rate,
        decay_offset=decay_offset,
        eps=eps,
        **({} if clipping_threshold is None else {"clipping_threshold": clipping_threshold}),
        **({} if momentum is None else {"momentum": momentum}),
        **decay_spec(weight_decay_rate, "weight_decay_rate"),
    )
    direction = scale_by_factored_rms(
        hp["decay_rate"],
        hp["eps"],
        hp["decay_offset"],
        factored=factored,
        min_dim_size_to_factor=min_dim_size_to_factor,
    )
    steps = [direction]
    if clipping_threshold is not None:
        steps.append(clip_by_block_rms(hp["clipping_threshold"]))
    steps.append(scale_by_learning_rate(hp["learning_rate"]))
    if checks.boolean("multiply_by_parameter_scale", multiply_by_parameter_scale):
        steps.append(scale_by_param_block_rms(1e-3))
    if momentum is not None:
        steps.append(ema_first_moment(hp["momentum"], dtype=dtype_momentum))
    if "weight_decay_rate" in hp.specs:
        steps.append(_subtract_decayed_weights(hp["weight_decay_rate"], weight_decay_mask))
    return hp.chain(*steps)


def adafactor_torch(
    lr: ScalarOrSchedule = 1e-2,
    beta2_decay: float = -0.8,
    eps: tuple[float | None, float] = (None, 1e-3),
    d: ScalarOrSchedule = 1.0,
    weight_decay: ScalarOrSchedule = 0.0,
) -> GradientTransformationExtraArgs:
    r"""Adafactor as torch.optim.Adafactor (2.14) computes it; torch's arguments and defaults.

    .. math::

        \rho_t &= \min(\eta, 1/\sqrt{t}), \quad
        \hat v = \frac{R_i C_j}{\max(\mathrm{mean}_i R, \epsilon_1)}, \quad
        u = \frac{g}{\sqrt{\max(\hat v, \epsilon_1^2)}} \\
        x &\leftarrow x - \rho_t \max(\mathrm{RMS}(x), \epsilon_2)\,
            \frac{u}{\max(1, \mathrm{RMS}(u) / d)} - \eta \lambda x

    with :math:`R, C` the EMAs of the row and column means of :math:`g^2`, the
    new sample weighted :math:`t^{\tau}` (:math:`\tau` = ``beta2_decay``). Every
    leaf of rank :math:`\ge 2` is factored over its last two axes (leading axes
    a batch); others keep a full second moment. It differs from
    :func:`gradxform.adafactor` (optax) in the relative step :math:`\rho_t`, the
    weight decay (times :math:`\eta`), :math:`\epsilon_1` as a floor rather than
    added to :math:`g^2`, and which leaves are factored over which axes.

    Composition: ``chain(scale_by_factored_rms(-beta2_decay, eps[0], axes="last",
    eps_mode="clamp", min_dim_size_to_factor=1), clip_by_block_rms(d),
    scale_by_param_block_rms(eps[1]), scale_by_relative_step(lr),
    add_decayed_weights(weight_decay), scale_by_learning_rate(lr))``.

    Args:
        lr: :math:`\eta \ge 0`, the largest relative step and the weight decay's factor.
        beta2_decay: :math:`\tau \le 0`.
        eps: :math:`(\epsilon_1, \epsilon_2)`: the floor of the estimate (``None``:
            each leaf's dtype's machine epsilon) and of the parameter RMS, both :math:`\ge 0`.
        d: the clipping threshold, :math:`> 0`.
        weight_decay: :math:`\lambda \ge 0`.
            The number 0 leaves the decay block out (``jnp.asarray(0.0)``
            keeps it settable).

    Returns:
        Adafactor; its state holds one store and :class:`gradxform.FactoredRmsState`.

    Raises:
        ValueError, TypeError: for a positive ``beta2_decay``, negative rates or eps.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.adafactor_torch(0.01)
        >>> x = jnp.array([3.0, -3.0])
        >>> u, _ = tx.update(jnp.array([2.0, 0.5]), tx.init(x), x)  # -0.01 * 3 * sign(g)
        >>> [round(float(v), 4) for v in u]
        [-0.03, -0.03]
    """
    tau = checks.real("beta2_decay", beta2_decay, upper=0)
    if not isinstance(eps, tuple) or len(eps) != 2:
        checks.fail("eps", "a pair (eps1 or None, eps2)", eps, TypeError)
    eps1, eps2 = eps
    if eps1 is not None:
        checks.real("eps[0]", eps1, lower=0)
    checks.real("eps[1]", eps2, lower=0)
    hp = Hyperparams(
        learning_rate=lr,
        decay_rate=-tau,
        **({} if eps1 is None else {"eps": eps1}),
        min_scale=eps2,
        clipping_threshold=d,
        **decay_spec(weight_decay),
    )
    direction = scale_by_factored_rms(
        hp["decay_rate"],
        None if eps1 is None else hp["eps"],
        axes="last",
        eps_mode="clamp",
        min_dim_size_to_factor=1,
    )
    return hp.chain(
        direction,
        clip_by_block_rms(hp["clipping_threshold"]),
        scale_by_param_block_rms(hp["min_scale"]),
        scale_by_relative_step(hp["learning_rate"]),
        *decay_blocks(hp),
        scale_by_learning_rate(hp["learning_rate"]),
    )
