r"""More optimizers: Lion, signSGD, Adamax(W), NAdamW, AdaBelief, Yogi, RAdam, ADOPT as chains.

Notation as in :mod:`gradxform.optimizers`: :math:`g` the gradient,
:math:`t = 1, 2, \dots` the update number, :math:`\eta` the learning rate,
:math:`x` the parameters. Each optimizer declares its hyperparameters once,
in one :class:`~gradxform.hyperparams.Hyperparams` store, and hands the
blocks handles on them. Defaults are optax's, so ``gx.lion(lr)`` and
``optax.lion(lr)`` take the same steps.
"""

from __future__ import annotations

from typing import Any

from jax.typing import DTypeLike

from gradxform.base import GradientTransformationExtraArgs
from gradxform.hyperparams import Hyperparams, ScalarOrSchedule
from gradxform.transforms.adam_variants import scale_by_adopt, scale_by_radam, scale_by_yogi
from gradxform.transforms.moments import scale_by_adam
from gradxform.transforms.moments_extra import (
    scale_by_adamax,
    scale_by_belief,
    scale_by_lion,
    scale_by_sign,
)
from gradxform.transforms.scaling import decay_blocks, decay_spec, scale_by_learning_rate

__all__ = [
    "adabelief",
    "adamax",
    "adamaxw",
    "adopt",
    "lion",
    "nadamw",
    "radam",
    "sign_sgd",
    "yogi",
]


def _stepped(
    hp: Hyperparams, direction: Any, names: tuple[str, ...], *after: Any, **options: Any
) -> GradientTransformationExtraArgs:
    """``hp.chain(direction(<handles of names>, **options), *after, scale_by_learning_rate)``."""
    handles = [hp[name] for name in names]
    steps = (direction(*handles, **options), *after, scale_by_learning_rate(hp["learning_rate"]))
    return hp.chain(*steps)


def _adam_direction(b1: Any, b2: Any, eps: Any, eps_root: Any, **options: Any) -> Any:
    """:func:`gradxform.scale_by_adam` with ``eps_root`` positional."""
    return scale_by_adam(b1, b2, eps, eps_root=eps_root, **options)


def lion(
    learning_rate: ScalarOrSchedule,
    b1: ScalarOrSchedule = 0.9,
    b2: ScalarOrSchedule = 0.99,
    weight_decay: ScalarOrSchedule = 1e-3,
    *,
    mu_dtype: DTypeLike | None = None,
    mask: Any = None,
) -> GradientTransformationExtraArgs:
    r"""Lion (Chen et al., 2023, "Symbolic Discovery of Optimization Algorithms").

    .. math::

        c = \beta_1 m + (1 - \beta_1) g, \quad
        m \leftarrow \beta_2 m + (1 - \beta_2) g, \quad
        x \leftarrow x - \eta\, (\operatorname{sign}(c) + \lambda x)

    Defaults are optax's (:math:`\beta_1 = 0.9`, :math:`\beta_2 = 0.99`,
    :math:`\lambda = 10^{-3}`); the weight decay is multiplied by the
    learning rate, as in optax and torch.

    Composition: ``chain(lion_moment(b1, b2), scale_by_sign(),
    add_decayed_weights(weight_decay, mask), scale_by_learning_rate(learning_rate))``
    (the first two are :func:`gradxform.scale_by_lion`).

    Args:
        learning_rate: :math:`\eta \ge 0`, a number or a schedule.
        b1: :math:`\beta_1` in [0, 1), the interpolation of the step.
        b2: :math:`\beta_2` in [0, 1), the decay of the momentum.
        weight_decay: :math:`\lambda \ge 0`.
            The number 0 leaves the decay block out (``jnp.asarray(0.0)``
            keeps it settable).
        mu_dtype: dtype of :math:`m` (default: each parameter's dtype).
        mask: limits the decay to some leaves, as in :func:`gradxform.add_decayed_weights`.

    Returns:
        Lion; its state holds one store (four values and their complements) and :math:`m`.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.lion(0.1, weight_decay=0.25)
        >>> x = jnp.array([2.0])
        >>> u, _ = tx.update(jnp.array([-3.0]), tx.init(x), x)
        >>> round(float(u[0]), 4)  # -0.1 * (sign(-0.3) + 0.25 * 2)
        0.05
    """
    hp = Hyperparams(learning_rate=learning_rate, b1=b1, b2=b2, **decay_spec(weight_decay))
    decay = decay_blocks(hp, mask)
    return _stepped(hp, scale_by_lion, ("b1", "b2"), *decay, mu_dtype=mu_dtype)


def sign_sgd(learning_rate: ScalarOrSchedule) -> GradientTransformationExtraArgs:
    r"""signSGD (Bernstein et al., 2018): a step of fixed size along the gradient's sign.

    .. math::

        x \leftarrow x - \eta\, \operatorname{sign}(g)

    Composition: ``chain(scale_by_sign(), scale_by_learning_rate(learning_rate))``.

    Args:
        learning_rate: :math:`\eta \ge 0`, a number or a schedule.

    Returns:
        signSGD; its state holds the learning rate.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.sign_sgd(0.1)
        >>> u, _ = tx.update(jnp.array([3.0, -0.5, 0.0]), tx.init(jnp.zeros(3)))
        >>> [round(float(v), 4) for v in u]
        [-0.1, 0.1, -0.0]
    """
    hp = Hyperparams(learning_rate=learning_rate)
    return hp.chain(scale_by_sign(), scale_by_learning_rate(hp["learning_rate"]))


def adamax(
    learning_rate: ScalarOrSchedule,
    b1: ScalarOrSchedule = 0.9,
    b2: ScalarOrSchedule = 0.999,
    eps: ScalarOrSchedule = 1e-8,
    *,
    mu_dtype: DTypeLike | None = None,
    nu_dtype: DTypeLike | None = None,
) -> GradientTransformationExtraArgs:
    r"""Adamax (Kingma & Ba, 2015): Adam with the infinity norm in the denominator.

    .. math::

        m \leftarrow \beta_1 m + (1 - \beta_1) g, \quad
        u \leftarrow \max(|g| + \epsilon, \beta_2 u), \quad
        x \leftarrow x - \eta\, \frac{m}{(1 - \beta_1^t)\, u}

    Composition: ``chain(scale_by_adamax(b1, b2, eps), scale_by_learning_rate(learning_rate))``
    where :func:`gradxform.scale_by_adamax` is ``divide(chain(ema_first_moment(b1),
    bias_correct(b1)), ema_infinity_moment(b2, eps))``.

    Args:
        learning_rate: :math:`\eta \ge 0`, a number or a schedule.
        b1: :math:`\beta_1` in [0, 1).
        b2: :math:`\beta_2` in [0, 1), the decay of the infinity norm.
        eps: :math:`\epsilon \ge 0`, added to :math:`|g|`.
        mu_dtype: dtype of :math:`m` (default: each parameter's dtype).
        nu_dtype: dtype of :math:`u` (default: real, at least float32).

    Returns:
        Adamax; its state holds one store (four values, two complements, a count), m and u.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.adamax(0.1)
        >>> u, _ = tx.update(jnp.array([3.0, -0.5]), tx.init(jnp.zeros(2)))
        >>> [round(float(v), 4) for v in u]  # the first step is -lr * sign(g)
        [-0.1, 0.1]
    """
    hp = Hyperparams(learning_rate=learning_rate, b1=b1, b2=b2, eps=eps)
    dtypes = {"mu_dtype": mu_dtype, "nu_dtype": nu_dtype}
    return _stepped(hp, scale_by_adamax, ("b1", "b2", "eps"), **dtypes)


def adamaxw(
    learning_rate: ScalarOrSchedule,
    b1: ScalarOrSchedule = 0.9,
    b2: ScalarOrSchedule = 0.999,
    eps: ScalarOrSchedule = 1e-8,
    weight_decay: ScalarOrSchedule = 1e-4,
    *,
    mu_dtype: DTypeLike | None = None,
    nu_dtype: DTypeLike | None = None,
    mask: Any = None,
) -> GradientTransformationExtraArgs:
    r"""Adamax with decoupled weight decay.

    .. math::

        x \leftarrow x - \eta\, \Bigl(\frac{m}{(1 - \beta_1^t)\, u} + \lambda x\Bigr)

    with :math:`m, u` as in :func:`adamax`; :math:`\lambda` defaults to
    optax's 1e-4.

    Composition: ``chain(scale_by_adamax(b1, b2, eps), add_decayed_weights(weight_decay,
    mask), scale_by_learning_rate(learning_rate))``.

    Args:
        learning_rate: :math:`\eta \ge 0`, a number or a schedule.
        weight_decay: :math:`\lambda \ge 0`.
            The number 0 leaves the decay block out (``jnp.asarray(0.0)``
            keeps it settable).
        mask: limits the decay to some leaves, as in :func:`gradxform.add_decayed_weights`.
        b1, b2, eps, mu_dtype, nu_dtype: as in :func:`adamax`.

    Returns:
        AdamaxW; its state holds Adamax's and ``weight_decay``.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.adamaxw(0.1, weight_decay=0.5)
        >>> x = jnp.array([2.0])
        >>> u, _ = tx.update(jnp.array([3.0]), tx.init(x), x)
        >>> round(float(u[0]), 4)  # -0.1 * (1 + 0.5 * 2)
        -0.2
    """
    hp = Hyperparams(learning_rate=learning_rate, b1=b1, b2=b2, eps=eps, **decay_spec(weight_decay))
    decay = decay_blocks(hp, mask)
    dtypes = {"mu_dtype": mu_dtype, "nu_dtype": nu_dtype}
    return _stepped(hp, scale_by_adamax, ("b1", "b2", "eps"), *decay, **dtypes)


def nadamw(
    learning_rate: ScalarOrSchedule,
    b1: ScalarOrSchedule = 0.9,
    b2: ScalarOrSchedule = 0.999,
    eps: ScalarOrSchedule = 1e-8,
    weight_decay: ScalarOrSchedule = 1e-4,
    *,
    eps_root: ScalarOrSchedule = 0.0,
    mu_dtype: DTypeLike | None = None,
    nu_dtype: DTypeLike | None = None,
    mask: Any = None,
) -> GradientTransformationExtraArgs:
    r"""NAdamW: NAdam's look-ahead moment with decoupled weight decay (optax's ``nadamw``).

    .. math::

        \hat m = \frac{\beta_1 m}{1 - \beta_1^{t+1}} + \frac{(1 - \beta_1) g}{1 - \beta_1^t},
        \quad
        x \leftarrow x - \eta\, \bigl(\hat m / (\sqrt{\hat v + \epsilon_r} + \epsilon)
        + \lambda x\bigr)

    with :math:`\hat v` as in :func:`gradxform.adam`. torch's ``NAdam(...,
    decoupled_weight_decay=True)`` adds a momentum-decay schedule and is a
    different method.

    Composition: ``chain(scale_by_adam(b1, b2, eps, eps_root=..., nesterov=True),
    add_decayed_weights(weight_decay, mask), scale_by_learning_rate(learning_rate))``.

    Args:
        learning_rate: :math:`\eta \ge 0`, a number or a schedule.
        b1: :math:`\beta_1` in [0, 1), the decay of the look-ahead moment.
        b2: :math:`\beta_2` in [0, 1).
        eps: :math:`\epsilon \ge 0`, outside the root.
        weight_decay: :math:`\lambda \ge 0`.
            The number 0 leaves the decay block out (``jnp.asarray(0.0)``
            keeps it settable).
        eps_root: :math:`\epsilon_r \ge 0`, inside the root.
        mu_dtype, nu_dtype: as in :func:`gradxform.adam`.
        mask: limits the decay to some leaves, as in :func:`gradxform.add_decayed_weights`.

    Returns:
        NAdamW; its state holds NAdam's and ``weight_decay``.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.nadamw(0.1, weight_decay=0.0)
        >>> x = jnp.array([2.0])
        >>> u, _ = tx.update(jnp.array([3.0]), tx.init(x), x)
        >>> round(float(u[0]), 4)  # -0.1 * (0.9 * 0.3 / 0.19 + 0.1 * 3 / 0.1) / 3
        -0.1474
    """
    hp = Hyperparams(
        learning_rate=learning_rate,
        b1=b1,
        b2=b2,
        eps=eps,
        eps_root=eps_root,
        **decay_spec(weight_decay),
    )
    decay = decay_blocks(hp, mask)
    options = {"nesterov": True, "mu_dtype": mu_dtype, "nu_dtype": nu_dtype}
    return _stepped(hp, _adam_direction, ("b1", "b2", "eps", "eps_root"), *decay, **options)


def adabelief(
    learning_rate: ScalarOrSchedule,
    b1: ScalarOrSchedule = 0.9,
    b2: ScalarOrSchedule = 0.999,
    eps: ScalarOrSchedule = 1e-16,
    eps_root: ScalarOrSchedule = 1e-16,
    *,
    mu_dtype: DTypeLike | None = None,
    nu_dtype: DTypeLike | None = None,
) -> GradientTransformationExtraArgs:
    r"""AdaBelief (Zhuang et al., 2020): Adam whose denominator is the belief in the gradient.

    .. math::

        m \leftarrow \beta_1 m + (1 - \beta_1) g, \quad
        s \leftarrow \beta_2 s + (1 - \beta_2) (g - m)^2 + \epsilon_r, \quad
        x \leftarrow x - \eta\, \frac{m / (1 - \beta_1^t)}{\sqrt{s / (1 - \beta_2^t)} + \epsilon}

    Defaults are optax's (:math:`\epsilon = \epsilon_r = 10^{-16}`).

    Composition: ``chain(scale_by_belief(b1, b2, eps, eps_root),
    scale_by_learning_rate(learning_rate))`` where :func:`gradxform.scale_by_belief` is
    ``divide(chain(ema_first_moment(b1), bias_correct(b1)), chain(ema_belief_moment(b1, b2,
    eps_root), bias_correct(b2), sqrt_with_eps(eps, None)))`` in one block that keeps the
    one :math:`m` both halves read.

    Args:
        learning_rate: :math:`\eta \ge 0`, a number or a schedule.
        b1: :math:`\beta_1` in [0, 1).
        b2: :math:`\beta_2` in [0, 1).
        eps: :math:`\epsilon \ge 0`, outside the root.
        eps_root: :math:`\epsilon_r \ge 0`, added to :math:`s` each update.
        mu_dtype: dtype of :math:`m` (default: each parameter's dtype).
        nu_dtype: dtype of :math:`s` (default: real, at least float32).

    Returns:
        AdaBelief; its state holds :math:`m`, :math:`s` and the block's store
        (:class:`gradxform.ScaleByBeliefState`), as optax's does.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.adabelief(0.1, eps=0.0, eps_root=0.0)
        >>> u, _ = tx.update(jnp.array([3.0, -0.5]), tx.init(jnp.zeros(2)))
        >>> [round(float(v), 4) for v in u]  # -0.1 * g / (0.9 |g|)
        [-0.1111, 0.1111]
    """
    hp = Hyperparams(learning_rate=learning_rate, b1=b1, b2=b2, eps=eps, eps_root=eps_root)
    dtypes = {"mu_dtype": mu_dtype, "nu_dtype": nu_dtype}
    return _stepped(hp, scale_by_belief, ("b1", "b2", "eps", "eps_root"), **dtypes)


def radam(
    learning_rate: ScalarOrSchedule,
    b1: ScalarOrSchedule = 0.9,
    b2: ScalarOrSchedule = 0.999,
    eps: ScalarOrSchedule = 1e-8,
    eps_root: ScalarOrSchedule = 0.0,
    threshold: ScalarOrSchedule = 5.0,
    *,
    mu_dtype: DTypeLike | None = None,
    nu_dtype: DTypeLike | None = None,
) -> GradientTransformationExtraArgs:
    r"""Rectified Adam (Liu et al., 2020): momentum alone until Adam's variance estimate settles.

    .. math::

        \rho_\infty = \frac{2}{1 - \beta_2} - 1, \quad
        \rho_t = \rho_\infty - \frac{2 t \beta_2^t}{1 - \beta_2^t}, \quad
        r_t = \sqrt{\frac{(\rho_t - 4)(\rho_t - 2)\rho_\infty}
        {(\rho_\infty - 4)(\rho_\infty - 2)\rho_t}},

        x \leftarrow x - \eta\, r_t \hat m / (\sqrt{\hat v + \epsilon_r} + \epsilon)
        \text{ if } \rho_t \ge \tau, \text{ else } x - \eta\, \hat m

    with :math:`\hat m, \hat v` as in :func:`gradxform.adam` and :math:`\tau`
    the ``threshold`` (optax's 5; torch's RAdam also switches at 5).

    Composition: ``chain(scale_by_radam(b1, b2, eps, eps_root, threshold),
    scale_by_learning_rate(learning_rate))`` where :func:`gradxform.scale_by_radam` is
    ``divide(chain(ema_first_moment(b1), bias_correct(b1)), chain(ema_second_moment(b2),
    bias_correct(b2), sqrt_with_eps(eps, eps_root), rectify(b2, threshold)))``.

    Args:
        learning_rate: :math:`\eta \ge 0`, a number or a schedule.
        b1: :math:`\beta_1` in [0, 1).
        b2: :math:`\beta_2` in [0, 1).
        eps: :math:`\epsilon \ge 0`, outside the root.
        eps_root: :math:`\epsilon_r \ge 0`, inside the root.
        threshold: :math:`\tau \ge 4`.
        mu_dtype, nu_dtype: as in :func:`gradxform.adam`.

    Returns:
        RAdam; its state holds one store (six values, two complements, a count), m and v.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.radam(0.1)
        >>> u, _ = tx.update(jnp.array([3.0, -0.5]), tx.init(jnp.zeros(2)))
        >>> [round(float(v), 4) for v in u]  # the first steps are SGD with momentum
        [-0.3, 0.05]
    """
    hp = Hyperparams(
        learning_rate=learning_rate,
        b1=b1,
        b2=b2,
        eps=eps,
        eps_root=eps_root,
        threshold=threshold,
    )
    names = ("b1", "b2", "eps", "eps_root", "threshold")
    return _stepped(hp, scale_by_radam, names, mu_dtype=mu_dtype, nu_dtype=nu_dtype)


def yogi(
    learning_rate: ScalarOrSchedule,
    b1: ScalarOrSchedule = 0.9,
    b2: ScalarOrSchedule = 0.999,
    eps: ScalarOrSchedule = 1e-3,
    *,
    eps_root: ScalarOrSchedule = 0.0,
    initial_accumulator_value: float = 1e-6,
    mu_dtype: DTypeLike | None = None,
    nu_dtype: DTypeLike | None = None,
) -> GradientTransformationExtraArgs:
    r"""Yogi (Zaheer et al., 2018): Adam with an additive second moment.

    .. math::

        m \leftarrow \beta_1 m + (1 - \beta_1) g, \quad
        v \leftarrow v - (1 - \beta_2) \operatorname{sign}(v - g^2)\, g^2, \quad
        x \leftarrow x - \eta\, \frac{m / (1 - \beta_1^t)}
        {\sqrt{v / (1 - \beta_2^t) + \epsilon_r} + \epsilon}

    Defaults are optax's (:math:`\epsilon = 10^{-3}`, :math:`v_0 = 10^{-6}`);
    :math:`m_0 = 0` as in the paper, where optax starts :math:`m` at
    :math:`v_0` too (a difference of :math:`10^{-6}` in the first moment).

    Composition: ``chain(scale_by_yogi(b1, b2, eps, eps_root, initial_accumulator_value=...),
    scale_by_learning_rate(learning_rate))`` where :func:`gradxform.scale_by_yogi` is
    ``divide(chain(ema_first_moment(b1), bias_correct(b1)), chain(yogi_second_moment(b2),
    bias_correct(b2), sqrt_with_eps(eps, eps_root)))``.

    Args:
        learning_rate: :math:`\eta \ge 0`, a number or a schedule.
        b1: :math:`\beta_1` in [0, 1).
        b2: :math:`\beta_2` in [0, 1).
        eps: :math:`\epsilon \ge 0`, outside the root.
        eps_root: :math:`\epsilon_r \ge 0`, inside the root.
        initial_accumulator_value: :math:`v_0 \ge 0`.
        mu_dtype, nu_dtype: as in :func:`gradxform.adam`.

    Returns:
        Yogi; its state holds one store, m and v.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.yogi(0.1, eps=0.0, initial_accumulator_value=0.0)
        >>> u, _ = tx.update(jnp.array([3.0, -0.5]), tx.init(jnp.zeros(2)))
        >>> [round(float(v), 4) for v in u]
        [-0.1, 0.1]
    """
    hp = Hyperparams(learning_rate=learning_rate, b1=b1, b2=b2, eps=eps, eps_root=eps_root)
    options: dict[str, Any] = {"mu_dtype": mu_dtype, "nu_dtype": nu_dtype}
    options["initial_accumulator_value"] = initial_accumulator_value
    return _stepped(hp, scale_by_yogi, ("b1", "b2", "eps", "eps_root"), **options)


def adopt(
    learning_rate: ScalarOrSchedule,
    b1: ScalarOrSchedule = 0.9,
    b2: ScalarOrSchedule = 0.9999,
    eps: ScalarOrSchedule = 1e-6,
    *,
    clip_value: ScalarOrSchedule | None = lambda count: count**0.25,
    mu_dtype: DTypeLike | None = None,
    nu_dtype: DTypeLike | None = None,
) -> GradientTransformationExtraArgs:
    r"""ADOPT (Taniguchi et al., 2024): normalize by the previous second moment, then average.

    .. math::

        m \leftarrow \beta_1 m + (1 - \beta_1)
        \operatorname{clip}\bigl(g / \max(\sqrt{v}, \epsilon), c_t\bigr), \quad
        v \leftarrow \beta_2 v + (1 - \beta_2) g^2, \quad
        x \leftarrow x - \eta\, m

    with :math:`v` used *before* its update, :math:`c_t = t^{1/4}` (:math:`t`
    the updates so far) and a first update that only sets :math:`v = g^2`.
    Defaults are ``optax.contrib.adopt``'s.

    Composition: ``chain(normalize_by_previous_moment(b2, eps), [clip(clip_value)],
    ema_first_moment(b1), scale_by_learning_rate(learning_rate))`` (the first three are
    :func:`gradxform.scale_by_adopt`).

    Args:
        learning_rate: :math:`\eta \ge 0`, a number or a schedule.
        b1: :math:`\beta_1` in [0, 1).
        b2: :math:`\beta_2` in [0, 1).
        eps: :math:`\epsilon \ge 0`, the floor of :math:`\sqrt{v}`.
        clip_value: :math:`c_t \ge 0`, a number or a schedule of the count, or
            ``None`` for no clipping.
        mu_dtype: dtype of :math:`m` (default: each parameter's dtype).
        nu_dtype: dtype of :math:`v` (default: real, at least float32).

    Returns:
        ADOPT; its state holds one store, m and v.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.adopt(0.1, b1=0.5)
        >>> state = tx.init(jnp.zeros(1))
        >>> u, state = tx.update(jnp.array([2.0]), state)  # sets v = 4
        >>> u, state = tx.update(jnp.array([3.0]), state)
        >>> round(float(u[0]), 4)  # -0.1 * 0.5 * clip(3 / 2, 1)
        -0.05
    """
    specs: dict[str, Any] = {"learning_rate": learning_rate, "b1": b1, "b2": b2, "eps": eps}
    if clip_value is not None:
        specs["clip_value"] = clip_value
    hp = Hyperparams(**specs)
    clip = hp["clip_value"] if clip_value is not None else None
    options = {"clip_value": clip, "mu_dtype": mu_dtype, "nu_dtype": nu_dtype}
    return _stepped(hp, scale_by_adopt, ("b1", "b2", "eps"), **options)
