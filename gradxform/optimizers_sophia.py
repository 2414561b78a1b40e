r"""Sophia (Liu et al., 2023): a clipped, diagonally preconditioned momentum step.

Notation as in :mod:`gradxform.optimizers`: :math:`g` the gradient,
:math:`t = 1, 2, \dots` the update number, :math:`\eta` the learning rate,
:math:`x` the parameters. The hyperparameters live in one
:class:`~gradxform.hyperparams.Hyperparams` store; the blocks are in
:mod:`gradxform.transforms.sophia`.
"""

from __future__ import annotations

from typing import Any

import jax
from jax.typing import DTypeLike

from gradxform.base import GradientTransformationExtraArgs
from gradxform.hyperparams import Hyperparams, ScalarOrSchedule
from gradxform.transforms.scaling import decay_blocks, decay_spec, scale_by_learning_rate
from gradxform.transforms.sophia import scale_by_sophia

__all__ = ["sophia"]


def sophia(
    learning_rate: ScalarOrSchedule,
    b1: ScalarOrSchedule = 0.965,
    b2: ScalarOrSchedule = 0.99,
    gamma: ScalarOrSchedule = 0.01,
    eps: ScalarOrSchedule = 1e-8,
    weight_decay: ScalarOrSchedule = 1e-4,
    update_period: int = 10,
    *,
    estimator: str = "hutchinson",
    clip_threshold: ScalarOrSchedule | None = 1.0,
    form: str = "max",
    bias_correction: bool = False,
    delayed: bool = False,
    seed: int | jax.Array = 0,
    mask: Any = None,
    mu_dtype: DTypeLike | None = None,
    nu_dtype: DTypeLike | None = None,
) -> GradientTransformationExtraArgs:
    r"""Sophia (Liu et al., 2023, "Sophia: A Scalable Stochastic Second-order Optimizer").

    .. math::

        m \leftarrow \beta_1 m + (1 - \beta_1) g, \qquad
        h \leftarrow \beta_2 h + (1 - \beta_2) \hat h \ \text{ if } (t - 1) \bmod k = 0,

        x \leftarrow x - \eta \left(\operatorname{clip}\!\left(
        \frac{m}{\max(\gamma h, \epsilon)}, c\right) + \lambda x\right)

    with :math:`\hat h` an estimate of the Hessian's diagonal at :math:`x`
    and :math:`\operatorname{clip}` elementwise to :math:`[-c, c]`: the
    paper's Algorithm 3 (no bias correction, :math:`m_0 = h_0 = 0`, the
    refresh at :math:`t = 1, k + 1, \dots` used by the same update). The
    estimate is, by precedence, the extra argument ``hessian_diag`` of
    ``update`` (e.g. the caller's Gauss-Newton-Bartlett estimate, read only
    at refreshes), or the ``estimator``'s, computed inside the update only
    at refreshes:

    * ``"hutchinson"`` (Sophia-H): ``u * (H u)`` for a random sign vector
      ``u``, from the extra argument ``value_fn(params, ...) -> loss`` (or
      ``obj_fn``, optax's name);
    * ``"gnb"`` (Sophia-G): ``B * g_s * g_s`` with ``g_s`` the gradient of
      the mean cross-entropy at labels drawn from the model's softmax, from
      the extra argument ``logits_fn(params, ...) -> logits``.

    References disagree in three places; the options reproduce each:

    * ``optax.contrib.sophia`` bias-corrects :math:`m` and divides by
      :math:`h` from before the refresh: ``bias_correction=True,
      delayed=True`` takes its steps (same defaults otherwise).
    * The authors' SophiaG divides by :math:`\rho\, B h + 10^{-15}` with
      :math:`h` the EMA of :math:`g_s^2` (the batch size :math:`B` in the
      step, not in the estimate): ``form="sum"``, ``gamma`` = :math:`\rho`,
      ``eps=1e-15`` with the ``"gnb"`` estimate (:math:`B` inside it).
      SophiaG takes its first refresh after the first :math:`k` updates
      (:math:`h = 0` before: sign steps), this refresh at the first update.

    Composition: ``chain(scale_by_sophia(b1, b2, gamma, eps, clip_threshold,
    update_period), add_decayed_weights(weight_decay, mask),
    scale_by_learning_rate(learning_rate))``; the direction is
    ``chain(divide(ema_first_moment(b1), chain(ema_hessian_diagonal(b2, k),
    curvature_floor(gamma, eps))), clip(c))``.

    Args:
        learning_rate: :math:`\eta \ge 0`, a number or a schedule.
        b1: :math:`\beta_1` in [0, 1), the gradient EMA's decay.
        b2: :math:`\beta_2` in [0, 1), the Hessian-diagonal EMA's decay (per refresh).
        gamma: :math:`\gamma \ge 0` (SophiaG's :math:`\rho`).
        eps: :math:`\epsilon \ge 0`.
        weight_decay: :math:`\lambda \ge 0`, decoupled and multiplied by :math:`\eta`.
            The number 0 leaves the decay block out (``jnp.asarray(0.0)``
            keeps it settable).
        update_period: :math:`k \ge 1`, updates between Hessian refreshes.
        estimator: ``"hutchinson"`` or ``"gnb"``.
        clip_threshold: :math:`c \ge 0`, or None for no clipping.
        form: ``"max"`` (:math:`\max(\gamma h, \epsilon)`) or ``"sum"``
            (:math:`\gamma h + \epsilon`).
        bias_correction: divide :math:`m` by :math:`1 - \beta_1^t`.
        delayed: divide by :math:`h` from before this update's refresh.
        seed: the estimator's first PRNG key (an integer or a key).
        mask: limits the decay to some leaves, as in :func:`gradxform.add_decayed_weights`.
        mu_dtype: dtype of :math:`m` (default: each parameter's dtype).
        nu_dtype: dtype of :math:`h` (default: the real dtype, at least float32).

    Returns:
        Sophia; its ``update`` takes ``value_fn``, ``logits_fn`` or ``hessian_diag``.

    Example:
        >>> import gradxform as gx, jax, jax.numpy as jnp
        >>> loss = lambda x: jnp.sum(x**4) / 12  # g = x**3 / 3, diag(H) = x**2
        >>> tx = gx.sophia(0.1, gamma=2.0, weight_decay=0.0)
        >>> x = jnp.array([1.0, -2.0])
        >>> u, state = tx.update(jax.grad(loss)(x), tx.init(x), x, value_fn=loss)
        >>> [round(float(v), 4) for v in u]  # -0.1 * clip(0.035 g / (2 * 0.01 x**2), 1)
        [-0.0583, 0.1]
    """
    hp = Hyperparams(
        learning_rate=learning_rate, b1=b1, b2=b2, gamma=gamma, eps=eps, **decay_spec(weight_decay)
    )
    direction = scale_by_sophia(
        hp["b1"],
        hp["b2"],
        hp["gamma"],
        hp["eps"],
        clip_threshold,
        update_period,
        estimator=estimator,
        seed=seed,
        form=form,
        bias_correction=bias_correction,
        delayed=delayed,
        mu_dtype=mu_dtype,
        nu_dtype=nu_dtype,
    )
    return hp.chain(direction, *decay_blocks(hp, mask), scale_by_learning_rate(hp["learning_rate"]))
