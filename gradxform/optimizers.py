r"""Optimizers: short chains of named blocks, each with its formula.

Notation: :math:`g` the gradient, :math:`t = 1, 2, \dots` the update number,
:math:`\eta` the learning rate (a number or a schedule), :math:`x` the
parameters. Every optimizer returns an ``optax.GradientTransformationExtraArgs``;
apply its updates with :func:`gradxform.apply_updates`.

Each optimizer declares its hyperparameters once, in one
:class:`~gradxform.hyperparams.Hyperparams` store, and hands the blocks
handles on them: the state holds each name once, readable and settable with
:func:`gradxform.get_hyperparams`, :func:`gradxform.set_hyperparams` and
``optax.tree_utils.tree_get`` / ``tree_set``, plus one step count when an
update reads it.
"""

from __future__ import annotations

import numbers
from typing import Any

from jax.typing import DTypeLike

from gradxform.base import GradientTransformationExtraArgs
from gradxform.hyperparams import Hyperparams, ScalarOrSchedule
from gradxform.transforms.moments import scale_by_adam, scale_by_rms, scale_by_sum_of_squares
from gradxform.transforms.momentum import scale_by_momentum
from gradxform.transforms.scaling import decay_blocks, decay_spec, scale_by_learning_rate

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


def _given(**specs: Any) -> dict[str, Any]:
    """The keyword arguments that are not ``None``."""
    return {name: spec for name, spec in specs.items() if spec is not None}


def sgd(
    learning_rate: ScalarOrSchedule,
    momentum: ScalarOrSchedule = 0.0,
    *,
    nesterov: bool = False,
    dampening: ScalarOrSchedule | None = None,
    weight_decay: ScalarOrSchedule | None = None,
    dtype: DTypeLike | None = None,
) -> GradientTransformationExtraArgs:
    r"""Stochastic gradient descent, with heavy-ball or Nesterov momentum.

    .. math::

        v \leftarrow \rho v + (1 - d)\, g, \qquad x \leftarrow x - \eta v

    (Nesterov: :math:`x \leftarrow x - \eta (g + \rho v)`), with :math:`v = g`
    at the first update, as in ``torch.optim.SGD``. With ``momentum=0`` (the
    default), no Nesterov and no dampening, no velocity is kept:
    :math:`x \leftarrow x - \eta g`. ``weight_decay`` is torch's coupled L2
    term, :math:`g + \lambda x`.

    Composition: ``chain([add_decayed_weights(weight_decay)],
    [scale_by_momentum(momentum, nesterov=..., dampening=...)],
    scale_by_learning_rate(learning_rate))``.

    Args:
        learning_rate: :math:`\eta \ge 0`, a number or a schedule.
        momentum: :math:`\rho` in [0, 1).
        nesterov: use Nesterov's look-ahead form.
        dampening: :math:`d` in [0, 1], or ``None`` for none.
        weight_decay: :math:`\lambda \ge 0`; ``None`` or the number 0: no decay block (an
            array, e.g. ``jnp.asarray(0.0)``, keeps it settable).
        dtype: dtype of the velocity (default: each parameter's dtype).

    Returns:
        SGD; its state is a :class:`~gradxform.HyperparamChainState` (the store,
        then the blocks' states).

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
    with_momentum = nesterov or dampening is not None or not _is_zero(momentum)
    hp = Hyperparams(
        learning_rate=learning_rate,
        **decay_spec(weight_decay),
        **_given(dampening=dampening),
        **({"momentum": momentum} if with_momentum else {}),
    )
    parts = decay_blocks(hp)
    if with_momentum:
        damp = hp["dampening"] if dampening is not None else None
        parts.append(
            scale_by_momentum(hp["momentum"], nesterov=nesterov, dampening=damp, dtype=dtype)
        )
    return hp.chain(*parts, scale_by_learning_rate(hp["learning_rate"]))


def _is_zero(x: Any) -> bool:
    return isinstance(x, numbers.Real) and x == 0


def sgd_velocity(
    learning_rate: ScalarOrSchedule,
    momentum: ScalarOrSchedule = 0.9,
    *,
    nesterov: bool = False,
    dtype: DTypeLike | None = None,
) -> GradientTransformationExtraArgs:
    r"""SGD with momentum in velocity form: the learning rate enters the velocity.

    .. math::

        v \leftarrow \rho v - \eta g, \qquad x \leftarrow x + v

    :func:`sgd`'s two blocks in the other order. With a constant learning
    rate both give the same iterates (:math:`v_{\text{velocity}} = -\eta
    v_{\text{sgd}}`). When the rate changes they differ: here a new rate only
    scales new gradients and the velocity keeps the old rates'
    contributions, so after a step decay from :math:`\eta` to
    :math:`\eta/10` the step shrinks geometrically, by :math:`\rho` per
    update, where :func:`sgd`'s drops tenfold at once.

    Composition: ``chain(scale_by_learning_rate(learning_rate),
    scale_by_momentum(momentum, nesterov=...))``.

    Args:
        learning_rate: :math:`\eta \ge 0`, a number or a schedule.
        momentum: :math:`\rho` in [0, 1).
        nesterov: use Nesterov's look-ahead form.
        dtype: dtype of the velocity (default: each parameter's dtype).

    Returns:
        SGD in velocity form; its state is a :class:`~gradxform.HyperparamChainState`.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.sgd_velocity(0.1, momentum=0.9)
        >>> x = jnp.array([1.0, -2.0])
        >>> state = tx.init(x)
        >>> for _ in range(2):
        ...     updates, state = tx.update(2 * x, state)
        ...     x = gx.apply_updates(x, updates)
        >>> [round(float(v), 5) for v in x]  # the same iterates as sgd(0.1, 0.9)
        [0.46, -0.92]
    """
    hp = Hyperparams(learning_rate=learning_rate, momentum=momentum)
    return hp.chain(
        scale_by_learning_rate(hp["learning_rate"]),
        scale_by_momentum(hp["momentum"], nesterov=nesterov, dtype=dtype),
    )


def adagrad(
    learning_rate: ScalarOrSchedule,
    initial_accumulator_value: float = 0.1,
    eps: ScalarOrSchedule = 1e-7,
    *,
    eps_in_sqrt: bool = True,
    dtype: DTypeLike | None = None,
) -> GradientTransformationExtraArgs:
    r"""AdaGrad (Duchi et al., 2011).

    .. math::

        h \leftarrow h + g^2, \qquad x \leftarrow x - \eta\, g / \sqrt{h + \epsilon}

    or :math:`x \leftarrow x - \eta\, g / (\sqrt{h} + \epsilon)` with
    ``eps_in_sqrt=False`` (torch's form). Defaults are optax's
    (:math:`h_0 = 0.1`, eps inside); torch's are
    :func:`gradxform.torch_compat.adagrad`.

    Composition: ``chain(scale_by_sum_of_squares(h_0, eps, eps_in_sqrt=...),
    scale_by_learning_rate(learning_rate))``.

    Args:
        learning_rate: :math:`\eta \ge 0`, a number or a schedule.
        initial_accumulator_value: :math:`h_0 \ge 0`.
        eps: :math:`\epsilon \ge 0`.
        eps_in_sqrt: put :math:`\epsilon` inside the root.
        dtype: dtype of :math:`h` (default: each parameter's real dtype, at least
            float32; see :func:`gradxform.tree.squares_like`).

    Returns:
        AdaGrad; its state holds one store and the sums of squares.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.adagrad(0.5, initial_accumulator_value=0.0, eps=0.0)
        >>> u, _ = tx.update(jnp.array([4.0]), tx.init(jnp.zeros(1)))
        >>> float(u[0])  # -0.5 * 4 / sqrt(16)
        -0.5
    """
    hp = Hyperparams(learning_rate=learning_rate, eps=eps)
    return hp.chain(
        scale_by_sum_of_squares(
            initial_accumulator_value, hp["eps"], eps_in_sqrt=eps_in_sqrt, dtype=dtype
        ),
        scale_by_learning_rate(hp["learning_rate"]),
    )


def rmsprop(
    learning_rate: ScalarOrSchedule,
    decay: ScalarOrSchedule = 0.9,
    eps: ScalarOrSchedule = 1e-8,
    *,
    eps_in_sqrt: bool = True,
    initial_scale: float = 0.0,
    centered: bool = False,
    momentum: ScalarOrSchedule | None = None,
    nesterov: bool = False,
    dtype: DTypeLike | None = None,
) -> GradientTransformationExtraArgs:
    r"""RMSProp (Tieleman & Hinton, 2012).

    .. math::

        v \leftarrow \beta v + (1 - \beta)\, g^2, \qquad
        x \leftarrow x - \eta\, g / \sqrt{v + \epsilon}

    or :math:`g / (\sqrt{v} + \epsilon)` with ``eps_in_sqrt=False`` (torch's).
    ``centered=True`` divides by :math:`\sqrt{v - m^2}` with :math:`m` the EMA
    of :math:`g`; ``momentum`` adds a velocity on the preconditioned gradient.
    Defaults are optax's; torch's are :func:`gradxform.torch_compat.rmsprop`.

    Composition: ``chain(scale_by_rms(decay, eps, ...),
    [scale_by_momentum(momentum)], scale_by_learning_rate(learning_rate))``.

    Args:
        learning_rate: :math:`\eta \ge 0`, a number or a schedule.
        decay: :math:`\beta` in [0, 1).
        eps: :math:`\epsilon \ge 0`.
        eps_in_sqrt: put :math:`\epsilon` inside the root.
        initial_scale: :math:`v` before the first update (>= 0).
        centered: divide by the root of the variance estimate.
        momentum: :math:`\rho` in [0, 1), or ``None`` for no velocity.
        nesterov: Nesterov's form of the momentum.
        dtype: dtype of the moments (default: each parameter's dtype).

    Returns:
        RMSProp; its state holds one store and the moments (and velocity).

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.rmsprop(0.1, decay=0.75, eps=0.0)
        >>> u, _ = tx.update(jnp.array([-2.0]), tx.init(jnp.zeros(1)))
        >>> round(float(u[0]), 6)  # -0.1 * (-2) / sqrt(0.25 * 4)
        0.2
    """
    hp = Hyperparams(learning_rate=learning_rate, decay=decay, eps=eps, **_given(momentum=momentum))
    options: dict[str, Any] = {
        "eps_in_sqrt": eps_in_sqrt,
        "centered": centered,
        "initial_scale": initial_scale,
    }
    parts = [scale_by_rms(hp["decay"], hp["eps"], **options, dtype=dtype)]
    if momentum is not None:
        parts.append(scale_by_momentum(hp["momentum"], nesterov=nesterov, dtype=dtype))
    return hp.chain(*parts, scale_by_learning_rate(hp["learning_rate"]))


def _adam_chain(hp: Hyperparams, *decay: Any, **options: Any) -> GradientTransformationExtraArgs:
    """``hp.chain(scale_by_adam(<hp's handles>, **options), *decay, scale_by_learning_rate)``."""
    direction = scale_by_adam(hp["b1"], hp["b2"], hp["eps"], eps_root=hp["eps_root"], **options)
    return hp.chain(direction, *decay, scale_by_learning_rate(hp["learning_rate"]))


def adam(
    learning_rate: ScalarOrSchedule,
    b1: ScalarOrSchedule = 0.9,
    b2: ScalarOrSchedule = 0.999,
    eps: ScalarOrSchedule = 1e-8,
    *,
    eps_root: ScalarOrSchedule = 0.0,
    amsgrad: bool = False,
    nesterov: bool = False,
    mu_dtype: DTypeLike | None = None,
    nu_dtype: DTypeLike | None = None,
) -> GradientTransformationExtraArgs:
    r"""Adam with bias correction (Kingma & Ba, 2015).

    .. math::

        m \leftarrow \beta_1 m + (1 - \beta_1) g, \quad
        v \leftarrow \beta_2 v + (1 - \beta_2) g^2, \quad
        \hat m = \frac{m}{1 - \beta_1^t}, \quad \hat v = \frac{v}{1 - \beta_2^t},

        x \leftarrow x - \eta\, \hat m / (\sqrt{\hat v + \epsilon_r} + \epsilon)

    ``amsgrad=True`` divides by the running maximum of :math:`\hat v`
    (:func:`amsgrad`); ``nesterov=True`` uses the look-ahead moment
    (:func:`nadam`).

    Composition: ``chain(scale_by_adam(b1, b2, eps, eps_root=...),
    scale_by_learning_rate(learning_rate))`` where :func:`gradxform.scale_by_adam` is
    ``divide(chain(ema_first_moment(b1), bias_correct(b1)),
    chain(ema_second_moment(b2), bias_correct(b2), sqrt_with_eps(eps, eps_root)))``;
    one store holds the five hyperparameters and the step count.

    Args:
        learning_rate: :math:`\eta \ge 0`, a number or a schedule.
        b1: :math:`\beta_1` in [0, 1).
        b2: :math:`\beta_2` in [0, 1).
        eps: :math:`\epsilon \ge 0`, outside the root.
        eps_root: :math:`\epsilon_r \ge 0`, inside the root.
        amsgrad: divide by the running maximum of :math:`\hat v`.
        nesterov: use Nesterov's look-ahead first moment.
        mu_dtype: dtype of :math:`m` (default: each parameter's dtype).
        nu_dtype: dtype of :math:`v` (default: each parameter's real dtype, at
            least float32; see :func:`gradxform.tree.squares_like`).

    Returns:
        Adam; its state holds one store (five values, two complements, a count), m and v.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.adam(0.1)
        >>> updates, state = tx.update(jnp.array([3.0, -0.5]), tx.init(jnp.zeros(2)))
        >>> [round(float(u), 4) for u in updates]  # the first step is about -lr * sign(g)
        [-0.1, 0.1]
    """
    hp = Hyperparams(learning_rate=learning_rate, b1=b1, b2=b2, eps=eps, eps_root=eps_root)
    return _adam_chain(hp, amsgrad=amsgrad, nesterov=nesterov, mu_dtype=mu_dtype, nu_dtype=nu_dtype)


def adamw(
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
    r"""Adam with decoupled weight decay (Loshchilov & Hutter, 2019).

    .. math::

        x \leftarrow x - \eta\, \bigl(\hat m / (\sqrt{\hat v + \epsilon_r} + \epsilon)
        + \lambda x\bigr)

    with :math:`\hat m, \hat v` as in :func:`adam`. The default
    :math:`\lambda` is optax's 1e-4 (torch's is 1e-2).

    Composition: ``chain(scale_by_adam(b1, b2, eps, eps_root=...),
    add_decayed_weights(weight_decay, mask), scale_by_learning_rate(learning_rate))``.

    Args:
        learning_rate: :math:`\eta \ge 0`, a number or a schedule.
        weight_decay: :math:`\lambda \ge 0`.
            The number 0 leaves the decay block out (``jnp.asarray(0.0)``
            keeps it settable).
        mask: limits the decay to some leaves: a pytree of bools or a function
            of the params, as in :func:`gradxform.add_decayed_weights`.
        b1, b2, eps, eps_root, mu_dtype, nu_dtype: as in :func:`adam`.

    Returns:
        AdamW; its state holds Adam's and ``weight_decay``.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.adamw(0.1, weight_decay=0.5)
        >>> x = jnp.array([2.0])
        >>> u, _ = tx.update(jnp.array([3.0]), tx.init(x), x)
        >>> round(float(u[0]), 4)  # -0.1 * (1 + 0.5 * 2)
        -0.2
    """
    hp = Hyperparams(
        learning_rate=learning_rate,
        b1=b1,
        b2=b2,
        eps=eps,
        eps_root=eps_root,
        **decay_spec(weight_decay),
    )
    return _adam_chain(hp, *decay_blocks(hp, mask), mu_dtype=mu_dtype, nu_dtype=nu_dtype)


def amsgrad(
    learning_rate: ScalarOrSchedule, *args: Any, **kwargs: Any
) -> GradientTransformationExtraArgs:
    r"""AMSGrad (Reddi et al., 2018): Adam whose denominator never shrinks.

    .. math::

        \hat v_{\max} \leftarrow \max(\hat v_{\max}, \hat v), \qquad
        x \leftarrow x - \eta\, \hat m / (\sqrt{\hat v_{\max} + \epsilon_r} + \epsilon)

    This is optax's form; torch takes the maximum before the bias correction
    (:func:`gradxform.torch_compat.adam` with ``amsgrad=True``).

    Composition: ``adam(learning_rate, ..., amsgrad=True)``, whose denominator is
    ``chain(ema_second_moment(b2), bias_correct(b2), running_max(),
    sqrt_with_eps(eps, eps_root))``.

    Args:
        learning_rate: :math:`\eta \ge 0`, a number or a schedule.
        *args: ``b1``, ``b2`` (the decay of the moment whose maximum is kept),
            ``eps``, as in :func:`adam`.
        **kwargs: the other keywords of :func:`adam` (``eps_root``, ``mu_dtype``,
            ``nu_dtype``); ``amsgrad`` is True.

    Returns:
        AMSGrad; Adam's state and the running maximum.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.amsgrad(0.1)
        >>> u, _ = tx.update(jnp.array([3.0, -0.5]), tx.init(jnp.zeros(2)))
        >>> [round(float(x), 4) for x in u]
        [-0.1, 0.1]
    """
    return adam(learning_rate, *args, amsgrad=True, **kwargs)


def nadam(
    learning_rate: ScalarOrSchedule, *args: Any, **kwargs: Any
) -> GradientTransformationExtraArgs:
    r"""NAdam (Dozat, 2016): Adam with a Nesterov look-ahead first moment.

    .. math::

        \hat m = \frac{\beta_1 m}{1 - \beta_1^{t+1}} + \frac{(1 - \beta_1) g}{1 - \beta_1^t}

    and the rest as :func:`adam`. This is optax's ``nadam``; torch's NAdam
    adds a momentum decay schedule and is a different method.

    Composition: ``adam(learning_rate, ..., nesterov=True)``, whose numerator is
    :func:`gradxform.nesterov_first_moment` (b1).

    Args:
        learning_rate: :math:`\eta \ge 0`, a number or a schedule.
        *args: ``b1`` (the decay of the look-ahead moment), ``b2``, ``eps``, as
            in :func:`adam`.
        **kwargs: :func:`adam`'s ``eps_root``, ``mu_dtype`` and ``nu_dtype``;
            ``nesterov`` is True.

    Returns:
        NAdam; its state is Adam's.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.nadam(0.1)
        >>> u, _ = tx.update(jnp.array([3.0]), tx.init(jnp.zeros(1)))
        >>> round(float(u[0]), 4)  # -0.1 * (0.9 * 0.3 / 0.19 + 0.1 * 3 / 0.1) / 3
        -0.1474
    """
    return adam(learning_rate, *args, nesterov=True, **kwargs)
