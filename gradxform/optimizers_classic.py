r"""LAMB, LARS, Adadelta, Rprop and torch's NAdam as chains of named blocks.

Notation as in :mod:`gradxform.optimizers`: :math:`g` the gradient,
:math:`t = 1, 2, \dots` the update number, :math:`\eta` the learning rate,
:math:`x` the parameters. Each optimizer declares its hyperparameters once,
in one :class:`~gradxform.hyperparams.Hyperparams` store. Defaults are
optax's (``gx.lamb(lr)`` and ``optax.lamb(lr)`` take the same steps), except
where optax's alias does something else than its method (Adadelta's missing
learning rate, Rprop's late step: see each alias); :func:`nadam_momentum_decay`
has no optax counterpart and takes torch's defaults.
"""

from __future__ import annotations

from typing import Any

from jax.typing import DTypeLike

from gradxform import checks
from gradxform.base import GradientTransformationExtraArgs, chain, divide
from gradxform.hyperparams import Hyperparams, ScalarOrSchedule
from gradxform.transforms.classic_extra import (
    _rprop_bounds,
    momentum_decay_first_moment,
    scale_by_adadelta,
    scale_by_rprop,
)
from gradxform.transforms.moments import (
    bias_correct,
    ema_second_moment,
    scale_by_adam,
    sqrt_with_eps,
)
from gradxform.transforms.momentum import scale_by_momentum
from gradxform.transforms.partition import masked
from gradxform.transforms.scaling import decay_blocks, decay_spec, scale_by_learning_rate
from gradxform.transforms.trust_ratio import scale_by_trust_ratio

__all__ = ["adadelta", "lamb", "lars", "nadam_momentum_decay", "rprop"]


def _where(mask: Any, block: GradientTransformationExtraArgs) -> list[Any]:
    """``block`` on the leaves ``mask`` selects; optax's bool masks: ``True`` (or ``None``)
    every leaf, ``False`` none."""
    if mask is False:
        return []
    return [block if mask is None or mask is True else masked(block, mask)]


def _trust_ratio(hp: Hyperparams, eps: str) -> GradientTransformationExtraArgs:
    """The store's trust ratio block, its eps under the name ``eps``."""
    return scale_by_trust_ratio(hp["min_norm"], hp["trust_coefficient"], hp[eps])


def lamb(
    learning_rate: ScalarOrSchedule,
    b1: ScalarOrSchedule = 0.9,
    b2: ScalarOrSchedule = 0.999,
    eps: ScalarOrSchedule = 1e-6,
    eps_root: ScalarOrSchedule = 0.0,
    weight_decay: ScalarOrSchedule = 0.0,
    mask: Any = None,
    *,
    min_norm: ScalarOrSchedule = 0.0,
    trust_coefficient: ScalarOrSchedule = 1.0,
    trust_eps: ScalarOrSchedule = 0.0,
    mu_dtype: DTypeLike | None = None,
    nu_dtype: DTypeLike | None = None,
) -> GradientTransformationExtraArgs:
    r"""LAMB (You et al., 2020): AdamW's step rescaled per leaf to the leaf's norm.

    .. math::

        r = \frac{\hat m}{\sqrt{\hat v + \epsilon_r} + \epsilon} + \lambda x, \quad
        x \leftarrow x - \eta\, \frac{c\, \|x\|}{\|r\| + \epsilon_t}\, r

    with :math:`\hat m, \hat v` as in :func:`gradxform.adam` and the norms
    of whole leaves (a batched 3-D leaf gets one ratio, as in optax; the
    ratio is 1 where either norm is 0, see :func:`gradxform.scale_by_trust_ratio`).
    Defaults are optax's (:math:`\epsilon = 10^{-6}`, :math:`c = 1`).

    Composition: ``chain(scale_by_adam(b1, b2, eps, eps_root=eps_root),
    add_decayed_weights(weight_decay, mask), scale_by_trust_ratio(min_norm,
    trust_coefficient, trust_eps), scale_by_learning_rate(learning_rate))``.

    Args:
        learning_rate: :math:`\eta \ge 0`, a number or a schedule.
        b1: :math:`\beta_1` in [0, 1).
        b2: :math:`\beta_2` in [0, 1).
        eps: :math:`\epsilon \ge 0`, outside the root.
        eps_root: :math:`\epsilon_r \ge 0`, inside the root.
        weight_decay: :math:`\lambda \ge 0`.
            The number 0 leaves the decay block out (``jnp.asarray(0.0)``
            keeps it settable).
        mask: limits the decay to some leaves, as in :func:`gradxform.add_decayed_weights`.
        min_norm: floor :math:`\ge 0` of both norms.
        trust_coefficient: :math:`c \ge 0`.
        trust_eps: :math:`\epsilon_t \ge 0`, added to :math:`\|r\|`.
        mu_dtype, nu_dtype: as in :func:`gradxform.adam`.

    Returns:
        LAMB; its state holds one store (nine values, two complements, a count), m and v.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.lamb(0.1)
        >>> x = jnp.array([3.0, 4.0])
        >>> u, _ = tx.update(jnp.array([1.0, -1.0]), tx.init(x), x)
        >>> [round(float(v), 4) for v in u]  # -0.1 * 5 * r / ||r||, r = sign(g)
        [-0.3536, 0.3536]
    """
    hp = Hyperparams(
        learning_rate=learning_rate,
        b1=b1,
        b2=b2,
        eps=eps,
        eps_root=eps_root,
        **decay_spec(weight_decay),
        min_norm=min_norm,
        trust_coefficient=trust_coefficient,
        trust_eps=trust_eps,
    )
    adam = scale_by_adam(
        hp["b1"], hp["b2"], hp["eps"], eps_root=hp["eps_root"], mu_dtype=mu_dtype, nu_dtype=nu_dtype
    )
    return hp.chain(
        adam,
        *decay_blocks(hp, mask),
        _trust_ratio(hp, "trust_eps"),
        scale_by_learning_rate(hp["learning_rate"]),
    )


def lars(
    learning_rate: ScalarOrSchedule,
    weight_decay: ScalarOrSchedule = 0.0,
    weight_decay_mask: Any = None,
    trust_coefficient: ScalarOrSchedule = 0.001,
    eps: ScalarOrSchedule = 0.0,
    trust_ratio_mask: Any = None,
    momentum: ScalarOrSchedule = 0.9,
    nesterov: bool = False,
    *,
    min_norm: ScalarOrSchedule = 0.0,
    mu_dtype: DTypeLike | None = None,
) -> GradientTransformationExtraArgs:
    r"""LARS (You et al., 2017): SGD with momentum, each leaf's step scaled to its norm.

    .. math::

        r = g + \lambda x, \quad
        v \leftarrow \rho v - \eta\, \frac{c\, \|x\|}{\|r\| + \epsilon}\, r, \quad
        x \leftarrow x + v

    (or :math:`x \leftarrow x + \rho v - \eta \dots` with ``nesterov``), the
    norms of whole leaves as in :func:`lamb`. The momentum acts after the
    learning rate, as in optax's ``lars`` (heavy-ball in velocity form, see
    :func:`gradxform.sgd_velocity`). Defaults are optax's (:math:`c = 10^{-3}`).

    Composition: ``chain([masked](add_decayed_weights(weight_decay), weight_decay_mask),
    [masked](scale_by_trust_ratio(min_norm, trust_coefficient, eps), trust_ratio_mask),
    scale_by_learning_rate(learning_rate), scale_by_momentum(momentum, nesterov=...))``.

    Args:
        learning_rate: :math:`\eta \ge 0`, a number or a schedule.
        weight_decay: :math:`\lambda \ge 0`, added to the gradient before the ratio.
            The number 0 leaves the decay block out (``jnp.asarray(0.0)``
            keeps it settable).
        weight_decay_mask: limits the decay to some leaves (``None`` or ``True``:
            all, ``False``: none), in the forms :func:`gradxform.masked` takes.
        trust_coefficient: :math:`c \ge 0`.
        eps: :math:`\epsilon \ge 0`, added to :math:`\|r\|`.
        trust_ratio_mask: limits the ratio to some leaves (``None`` or ``True``:
            all, ``False``: none), in the forms :func:`gradxform.masked` takes.
        momentum: :math:`\rho` in [0, 1).
        nesterov: Nesterov's look-ahead form of the momentum.
        min_norm: floor :math:`\ge 0` of both norms.
        mu_dtype: dtype of the velocity (default: each parameter's dtype).

    Returns:
        LARS; its state holds one store (six values), and the velocity.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.lars(0.1, trust_coefficient=1.0)
        >>> x = jnp.array([3.0, 4.0])
        >>> u, _ = tx.update(jnp.array([0.0, 2.0]), tx.init(x), x)
        >>> [round(float(v), 4) for v in u]  # -0.1 * 5 * g / ||g||
        [0.0, -0.5]
    """
    hp = Hyperparams(
        learning_rate=learning_rate,
        **decay_spec(weight_decay),
        min_norm=min_norm,
        trust_coefficient=trust_coefficient,
        eps=eps,
        momentum=momentum,
    )
    return hp.chain(
        *(block for decay in decay_blocks(hp) for block in _where(weight_decay_mask, decay)),
        *_where(trust_ratio_mask, _trust_ratio(hp, "eps")),
        scale_by_learning_rate(hp["learning_rate"]),
        scale_by_momentum(hp["momentum"], nesterov=nesterov, dtype=mu_dtype),
    )


def adadelta(
    learning_rate: ScalarOrSchedule = 1.0,
    rho: ScalarOrSchedule = 0.9,
    eps: ScalarOrSchedule = 1e-6,
    weight_decay: ScalarOrSchedule = 0.0,
    mask: Any = None,
    *,
    dtype: DTypeLike | None = None,
) -> GradientTransformationExtraArgs:
    r"""Adadelta (Zeiler, 2012): steps in the units of the parameters, without a learning rate.

    .. math::

        r = g + \lambda x, \quad
        E[r^2] \leftarrow \rho E[r^2] + (1 - \rho) r^2, \quad
        \Delta = \frac{\sqrt{E[\Delta^2] + \epsilon}}{\sqrt{E[r^2] + \epsilon}}\, r, \quad
        E[\Delta^2] \leftarrow \rho E[\Delta^2] + (1 - \rho) \Delta^2, \quad
        x \leftarrow x - \eta \Delta

    :math:`\eta = 1` is the method of the paper and torch's default. optax's
    ``adadelta`` defaults to ``learning_rate=None``, which skips its
    learning-rate step and with it the sign flip (it steps *up* the
    gradient); with a learning rate given, the two are the same (tested
    bitwise). The weight decay is L2, added to the gradient, as in optax and torch.

    Composition: ``chain(add_decayed_weights(weight_decay, mask),
    scale_by_adadelta(rho, eps), scale_by_learning_rate(learning_rate))``.

    Args:
        learning_rate: :math:`\eta \ge 0`, a number or a schedule.
        rho: :math:`\rho` in [0, 1).
        eps: :math:`\epsilon \ge 0`, inside both roots.
        weight_decay: :math:`\lambda \ge 0`.
            The number 0 leaves the decay block out (``jnp.asarray(0.0)``
            keeps it settable).
        mask: limits the decay to some leaves, as in :func:`gradxform.add_decayed_weights`.
        dtype: dtype of both means (default: real, at least float32).

    Returns:
        Adadelta; its state holds one store (four values, a complement) and both means.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.adadelta(rho=0.5, eps=1.0)
        >>> x = jnp.zeros(1)
        >>> u, _ = tx.update(jnp.array([2.0]), tx.init(x), x)
        >>> round(float(u[0]), 4)  # -sqrt(1) / sqrt(0.5 * 4 + 1) * 2
        -1.1547
    """
    hp = Hyperparams(learning_rate=learning_rate, rho=rho, eps=eps, **decay_spec(weight_decay))
    direction = scale_by_adadelta(hp["rho"], hp["eps"], dtype=dtype)
    return hp.chain(*decay_blocks(hp, mask), direction, scale_by_learning_rate(hp["learning_rate"]))


def rprop(
    learning_rate: float,
    eta_minus: ScalarOrSchedule = 0.5,
    eta_plus: ScalarOrSchedule = 1.2,
    min_step_size: ScalarOrSchedule = 1e-6,
    max_step_size: ScalarOrSchedule = 50.0,
    *,
    lagged: bool = False,
) -> GradientTransformationExtraArgs:
    r"""Rprop (Riedmiller & Braun, 1993) as torch's ``Rprop``: sign steps of adapted sizes.

    With :math:`s = \operatorname{sign}(g)\operatorname{sign}(g_{\text{prev}})`
    elementwise, each element's step size :math:`\delta` (starting at the
    learning rate) grows by :math:`\eta_+` while the sign holds and shrinks by
    :math:`\eta_-` when it changes, within :math:`[\delta_{\min}, \delta_{\max}]`:

    .. math::

        x \leftarrow x - \delta \operatorname{sign}(g) \ \text{ if } s \ge 0,
        \quad x \text{ unchanged (and } g_{\text{prev}} \leftarrow 0) \text{ if } s < 0

    The default follows torch and the iRprop- of Igel & Hüsken (2003).
    ``lagged=True`` reproduces ``optax.rprop`` (0.2.8) bitwise: optax outputs
    the *previous* update's step (zero at the first update; optax pull request
    1725), and leaves a step size whose factor is 1 unclipped where torch
    clips it (this only matters for a learning rate outside the bounds).

    Composition: ``chain(scale_by_rprop(learning_rate, eta_minus, eta_plus,
    min_step_size, max_step_size), scale_by_learning_rate(step_scale))`` with
    ``step_scale`` 1: the adapted step sizes are Rprop's learning rates (held in
    the block's state); the store's ``step_scale`` multiplies them (0 freezes
    the parameters without recompiling).

    Args:
        learning_rate: :math:`\delta_0 > 0`, the initial step size (a number).
        eta_minus: :math:`\eta_-` in (0, 1).
        eta_plus: :math:`\eta_+ > 1`.
        min_step_size: :math:`\delta_{\min} \ge 0`.
        max_step_size: :math:`\delta_{\max} \ge \delta_{\min}`.
        lagged: optax 0.2.8's one-update-late step.

    Returns:
        Rprop; its state holds one store, the step sizes and the previous signs.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.rprop(0.1)
        >>> u, _ = tx.update(jnp.array([3.0, -0.5]), tx.init(jnp.zeros(2)))
        >>> [round(float(v), 4) for v in u]
        [-0.1, 0.1]
    """
    checks.real("learning_rate", learning_rate, lower=0, lower_open=True)
    _rprop_bounds(min_step_size, max_step_size)
    hp = Hyperparams(
        eta_minus=eta_minus,
        eta_plus=eta_plus,
        min_step_size=min_step_size,
        max_step_size=max_step_size,
        step_scale=1.0,
    )
    bounds = (hp["min_step_size"], hp["max_step_size"])
    direction = scale_by_rprop(
        learning_rate, hp["eta_minus"], hp["eta_plus"], *bounds, lagged=lagged
    )
    return hp.chain(direction, scale_by_learning_rate(hp["step_scale"]))


def nadam_momentum_decay(
    learning_rate: ScalarOrSchedule = 2e-3,
    b1: ScalarOrSchedule = 0.9,
    b2: ScalarOrSchedule = 0.999,
    eps: ScalarOrSchedule = 1e-8,
    weight_decay: ScalarOrSchedule = 0.0,
    momentum_decay: ScalarOrSchedule = 4e-3,
    *,
    decoupled_weight_decay: bool = False,
    mu_dtype: DTypeLike | None = None,
    nu_dtype: DTypeLike | None = None,
) -> GradientTransformationExtraArgs:
    r"""NAdam with Dozat's momentum schedule, as torch's ``NAdam`` (defaults torch's).

    With :math:`\mu_t = \beta_1 (1 - \tfrac12\, 0.96^{t \psi})` and
    :math:`\Pi_t = \prod_{i \le t} \mu_i`:

    .. math::

        m \leftarrow \beta_1 m + (1 - \beta_1) g, \quad
        \hat v = \frac{v}{1 - \beta_2^t}, \quad
        x \leftarrow x - \eta\, \frac{\frac{1 - \mu_t}{1 - \Pi_t}\, g
        + \frac{\mu_{t+1}}{1 - \Pi_t \mu_{t+1}}\, m}{\sqrt{\hat v} + \epsilon}

    :func:`gradxform.nadam` and :func:`gradxform.nadamw` are optax's NAdam
    (no schedule: :math:`\mu_t = \beta_1`); this one follows torch and the
    paper's schedule (:math:`\psi` = 4e-3). ``weight_decay`` is L2 (added to
    :math:`g`), or decoupled (:math:`+\lambda x` after the direction, torch's
    ``decoupled_weight_decay=True``).

    Composition: ``chain([add_decayed_weights(weight_decay)],
    divide(momentum_decay_first_moment(b1, momentum_decay),
    chain(ema_second_moment(b2), bias_correct(b2), sqrt_with_eps(eps, None))),
    [add_decayed_weights(weight_decay)], scale_by_learning_rate(learning_rate))``.

    Args:
        learning_rate: :math:`\eta \ge 0`, a number or a schedule.
        b1: :math:`\beta_1` in [0, 1).
        b2: :math:`\beta_2` in [0, 1).
        eps: :math:`\epsilon \ge 0`, outside the root.
        weight_decay: :math:`\lambda \ge 0`.
            The number 0 leaves the decay block out (``jnp.asarray(0.0)``
            keeps it settable).
        momentum_decay: :math:`\psi \ge 0`.
        decoupled_weight_decay: decay after the direction instead of L2.
        mu_dtype, nu_dtype: as in :func:`gradxform.adam`.

    Returns:
        NAdam with momentum decay; its state holds one store, m, :math:`\Pi_t` and v.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.nadam_momentum_decay(0.1)
        >>> x = jnp.zeros(2)
        >>> u, _ = tx.update(jnp.array([3.0, -0.5]), tx.init(x), x)
        >>> [round(float(v), 4) for v in u]  # -0.1 * (1 + 0.1 * mu_2 / (1 - mu_1 mu_2)) sign(g)
        [-0.1056, 0.1056]
    """
    hp = Hyperparams(
        learning_rate=learning_rate,
        b1=b1,
        b2=b2,
        eps=eps,
        **decay_spec(weight_decay),
        momentum_decay=momentum_decay,
    )
    numerator = momentum_decay_first_moment(hp["b1"], hp["momentum_decay"], dtype=mu_dtype)
    second = ema_second_moment(hp["b2"], dtype=nu_dtype)
    denominator = chain(second, bias_correct(hp["b2"]), sqrt_with_eps(hp["eps"], None))
    direction, decay = divide(numerator, denominator), decay_blocks(hp)
    decoupled = checks.boolean("decoupled_weight_decay", decoupled_weight_decay)
    steps = [direction, *decay] if decoupled else [*decay, direction]
    return hp.chain(*steps, scale_by_learning_rate(hp["learning_rate"]))
