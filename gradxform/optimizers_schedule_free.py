r"""Schedule-free AdamW and SGD (Defazio et al., 2024) as :func:`gradxform.schedule_free` chains.

Notation as in :mod:`gradxform.optimizers` and :mod:`gradxform.transforms.schedule_free`:
:math:`y` the params the gradient is taken at, :math:`z` the base sequence,
:math:`x` the average to evaluate (:func:`gradxform.schedule_free_eval_params`).
Arguments and defaults are optax.contrib's; ``warmup`` says which reference's
warmup is followed (they differ by one step, see the guide).
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from gradxform import checks, schedules
from gradxform.base import GradientTransformationExtraArgs, chain, divide, identity
from gradxform.hyperparams import Hyperparams, ScalarOrSchedule
from gradxform.transforms.moments import bias_correct, ema_second_moment, sqrt_with_eps
from gradxform.transforms.scaling import decay_blocks, decay_spec, scale_by_learning_rate
from gradxform.transforms.schedule_free import schedule_free

__all__ = ["schedule_free_adamw", "schedule_free_sgd"]

_WARMUPS = ("schedulefree", "optax")
_DECAY_AT = ("y", "z")


def _optax_warmup(peak: float, steps: int) -> Any:
    """optax's ``warmup_constant_schedule(0, peak, steps)``, in its expression
    ``(0 - peak) * (1 - n / steps) + peak`` (float32 from the int32 count, as optax's), so
    that ``warmup="optax"`` rounds as optax."""

    def schedule(count):
        n = jnp.clip(count, 0, steps)
        return (0.0 - peak) * (1 - n / steps) + peak

    return schedule


def _package_warmup(peak: float, steps: int) -> Any:
    """The package's :math:`\\gamma \\min(t, W) / W` at update :math:`t` = count + 1."""
    ramp = schedules.warmup(peak, steps)
    return lambda count: ramp(jnp.minimum(count, steps) + 1)


def _rates(
    learning_rate: ScalarOrSchedule, warmup_steps: int | None, warmup: str
) -> dict[str, Any]:
    """The store entries of the step's rate and of the averaging weights' rate.

    ``"schedulefree"``: update :math:`t` (count :math:`t - 1`) uses
    :math:`\\gamma_t = \\gamma \\min(t, W) / W` for both. ``"optax"``: the step
    uses the schedule at the count (0 at the first update), the weights at
    the count plus one (optax.contrib evaluates its schedule at a step count
    that starts at 1), a second entry ``weight_learning_rate``.
    """
    checks.choice("warmup", warmup, _WARMUPS)
    if warmup_steps is not None:
        warmup_steps = checks.integer("warmup_steps", warmup_steps, minimum=1)
        if callable(learning_rate) or not checks.is_real_number(learning_rate):
            checks.fail("learning_rate", "a real number when warmup_steps is given", learning_rate)
        peak = checks.real("learning_rate", learning_rate, lower=0)
        ramp = _package_warmup if warmup == "schedulefree" else _optax_warmup
        learning_rate = ramp(peak, warmup_steps)
    if warmup == "optax" and callable(learning_rate):
        ahead = learning_rate
        return {"learning_rate": learning_rate, "weight_learning_rate": lambda n: ahead(n + 1)}
    return {"learning_rate": learning_rate}


def _wrap(hp: Hyperparams, base: Any, state_dtype: Any, decay_at: str):
    """``hp.chain(schedule_free(base, <rate handles>, ...))``."""
    checks.choice("decay_at", decay_at, _DECAY_AT)
    weights = "weight_learning_rate" if "weight_learning_rate" in hp.specs else "learning_rate"
    sf = schedule_free(
        base,
        hp[weights],
        hp["b1"],
        hp["weight_lr_power"],
        state_dtype,
        r=hp["r"],
        base_params=decay_at,
    )
    return hp.chain(sf)


def schedule_free_adamw(
    learning_rate: ScalarOrSchedule = 0.0025,
    warmup_steps: int | None = None,
    b1: ScalarOrSchedule = 0.9,
    b2: ScalarOrSchedule = 0.999,
    eps: ScalarOrSchedule = 1e-8,
    weight_decay: ScalarOrSchedule = 0.0,
    weight_lr_power: ScalarOrSchedule = 2.0,
    state_dtype: Any = None,
    *,
    r: ScalarOrSchedule = 0.0,
    warmup: str = "schedulefree",
    decay_at: str = "y",
    mask: Any = None,
) -> GradientTransformationExtraArgs:
    r"""Schedule-free AdamW: Adam's normalisation without momentum, stepping :math:`z`.

    .. math::

        v &\leftarrow \beta_2 v + (1 - \beta_2) g^2, \quad
        z \leftarrow z - \gamma_t \Bigl(\frac{g}{\sqrt{v / (1 - \beta_2^t)} + \epsilon}
        + \lambda y\Bigr), \\
        x &\leftarrow (1 - c_{t+1})\, x + c_{t+1} z, \quad
        y \leftarrow \beta_1 x + (1 - \beta_1) z

    with :math:`g` the gradient at :math:`y`, :math:`c_{t+1}` the averaging
    weight of :func:`gradxform.schedule_free` and, with ``warmup_steps``
    :math:`= W`, :math:`\gamma_t = \gamma \min(t, W) / W` at update
    :math:`t = 1, 2, \dots` (the ``schedulefree`` package's
    ``AdamWScheduleFree`` and the paper; ``warmup="optax"`` takes optax.contrib's
    steps :math:`\gamma \min(t - 1, W) / W`, whose weights still use
    :math:`\gamma \min(t, W) / W`). Without a warmup both references take the
    same steps. Evaluate at :func:`gradxform.schedule_free_eval_params`.

    Composition: ``schedule_free(chain(divide(identity(), chain(ema_second_moment(b2),
    bias_correct(b2), sqrt_with_eps(eps, None))), add_decayed_weights(weight_decay,
    mask), scale_by_learning_rate(learning_rate)), learning_rate, b1, weight_lr_power,
    r=r)``, one store holding every hyperparameter.

    Args:
        learning_rate: :math:`\gamma \ge 0` (a schedule is allowed without ``warmup_steps``).
        warmup_steps: :math:`W \ge 1`, a linear warmup, or ``None``.
        b1: :math:`\beta_1` in (0, 1), the interpolation.
        b2: :math:`\beta_2` in [0, 1).
        eps: :math:`\epsilon \ge 0`, outside the root.
        weight_decay: :math:`\lambda \ge 0`, multiplied by the learning rate.
            The number 0 leaves the decay block out (``jnp.asarray(0.0)``
            keeps it settable).
        weight_lr_power: :math:`p \ge 0`, the averaging weights' power of the learning rate.
        state_dtype: dtype of :math:`z` (default: each parameter's dtype).
        r: :math:`r \ge 0`, the package's polynomial weighting :math:`t^r` (0 in optax).
        warmup: ``"schedulefree"`` or ``"optax"``, as above.
        decay_at: ``"y"`` (both references' default) or ``"z"`` (the package's
            ``AdamWScheduleFreeReference(decay_at_z=True)``): where the decay is computed.
        mask: limits the decay to some leaves, as in :func:`gradxform.add_decayed_weights`.

    Returns:
        Schedule-free AdamW; its state is the store's chain around a
        :class:`gradxform.ScheduleFreeState` (z, v, the weights' sums).

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.schedule_free_adamw(0.1)
        >>> y = jnp.zeros(2)
        >>> u, state = tx.update(jnp.array([3.0, -0.5]), tx.init(y), y)
        >>> [round(float(v), 4) for v in u]  # the first step: -lr * sign(g), x = z = y
        [-0.1, 0.1]
    """
    specs = _rates(learning_rate, warmup_steps, warmup)
    hp = Hyperparams(
        **specs,
        b1=b1,
        b2=b2,
        eps=eps,
        **decay_spec(weight_decay),
        weight_lr_power=weight_lr_power,
        r=r,
    )
    hp.check("b2", lower=0, upper=1, upper_open=True)
    second = chain(ema_second_moment(hp["b2"]), bias_correct(hp["b2"]))
    base = chain(
        divide(identity(), chain(second, sqrt_with_eps(hp["eps"], None))),
        *decay_blocks(hp, mask),
        scale_by_learning_rate(hp["learning_rate"]),
    )
    return _wrap(hp, base, state_dtype, decay_at)


def schedule_free_sgd(
    learning_rate: ScalarOrSchedule = 1.0,
    warmup_steps: int | None = None,
    b1: ScalarOrSchedule = 0.9,
    weight_decay: ScalarOrSchedule | None = None,
    weight_lr_power: ScalarOrSchedule = 2.0,
    state_dtype: Any = None,
    *,
    r: ScalarOrSchedule = 0.0,
    warmup: str = "schedulefree",
    decay_at: str = "y",
    mask: Any = None,
) -> GradientTransformationExtraArgs:
    r"""Schedule-free SGD: plain gradient steps on :math:`z`, the params interpolate.

    .. math::

        z \leftarrow z - \gamma_t (g + \lambda y), \quad
        x \leftarrow (1 - c_{t+1})\, x + c_{t+1} z, \quad
        y \leftarrow \beta_1 x + (1 - \beta_1) z

    with :math:`\gamma_t`, ``warmup`` and :math:`c_{t+1}` as in
    :func:`schedule_free_adamw` (the ``schedulefree`` package's
    ``SGDScheduleFree``, whose ``momentum`` is :math:`\beta_1`).

    Composition: ``schedule_free(chain(add_decayed_weights(weight_decay, mask),
    scale_by_learning_rate(learning_rate)), learning_rate, b1, weight_lr_power, r=r)``
    (no decay block when ``weight_decay`` is ``None``, optax's default).

    Args:
        learning_rate: :math:`\gamma \ge 0`.
        warmup_steps: :math:`W \ge 1`, a linear warmup, or ``None``.
        b1: :math:`\beta_1` in (0, 1), the interpolation.
        weight_decay: :math:`\lambda \ge 0` or ``None``.
            The number 0 leaves the decay block out (``jnp.asarray(0.0)``
            keeps it settable).
        weight_lr_power: :math:`p \ge 0`.
        state_dtype: dtype of :math:`z` (default: each parameter's dtype).
        r: :math:`r \ge 0`, the polynomial weighting.
        warmup: ``"schedulefree"`` or ``"optax"``.
        decay_at: ``"y"`` or ``"z"``.
        mask: limits the decay to some leaves.

    Returns:
        Schedule-free SGD; its state is the store's chain around a
        :class:`gradxform.ScheduleFreeState`.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.schedule_free_sgd(0.5, b1=0.5)
        >>> y = jnp.zeros(1)
        >>> state = tx.init(y)
        >>> for _ in range(2):  # z: 0 -> 1 -> 2, x: 1 -> 1.5, y = (x + z) / 2
        ...     u, state = tx.update(jnp.array([-2.0]), state, y)
        ...     y = gx.apply_updates(y, u)
        >>> float(y[0]), float(gx.schedule_free_eval_params(state, y)[0])
        (1.75, 1.5)
    """
    specs = _rates(learning_rate, warmup_steps, warmup)
    hp = Hyperparams(
        **specs, b1=b1, **decay_spec(weight_decay), weight_lr_power=weight_lr_power, r=r
    )
    steps = decay_blocks(hp, mask)
    base = chain(*steps, scale_by_learning_rate(hp["learning_rate"]))
    return _wrap(hp, base, state_dtype, decay_at)
