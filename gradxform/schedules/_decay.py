"""The decays and warmups: constant, step, exponential, cosine, polynomial, ... and join."""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gradxform import checks
from gradxform.base import Schedule
from gradxform.schedules._common import (
    _cos_half_squared,
    _count,
    _dtype,
    _float,
    _increasing,
    _real,
    _real_array,
    _since,
    _steps,
)

# --- schedules ----------------------------------------------------------------------


def constant(value: float) -> Schedule:
    """The constant schedule :math:`v(t) = v`.

    Args:
        value: the value, a real number.

    Returns:
        A schedule returning ``value`` (as float32, or float64 under x64) for
        every count, shaped like the count.

    Example:
        >>> import gradxform as gx
        >>> gx.schedules.evaluate(gx.schedules.constant(2.0), 3).tolist()
        [2.0, 2.0, 2.0]
    """
    v = _real("value", value)

    def schedule(count):
        return jnp.full(jnp.shape(_count(count)), v, _dtype())

    return schedule


def step_decay(init_value: float, decay_factor: float, step_size: int) -> Schedule:
    r"""Step decay, :math:`v(t) = v_0\, \gamma^{\lfloor t / k \rfloor}` (torch's ``StepLR``).

    Step 0 uses ``init_value``; the value first changes at ``count = step_size``.

    Args:
        init_value: :math:`v_0`.
        decay_factor: :math:`\gamma > 0`, the factor applied every ``step_size`` steps.
        step_size: :math:`k \geq 1`, the number of steps between decays.

    Returns:
        The schedule, a staircase that starts at ``init_value``.

    Example:
        >>> import gradxform as gx
        >>> gx.schedules.evaluate(gx.schedules.step_decay(1.0, 0.5, 2), 5).tolist()
        [1.0, 1.0, 0.5, 0.5, 0.25]
    """
    v = _real("init_value", init_value)
    log_factor = math.log(_real("decay_factor", decay_factor, positive=True))
    k = _steps("step_size", step_size)

    def schedule(count):
        n = _count(count) // k
        return _real_array(v) * jnp.exp(_float(n) * _real_array(log_factor))

    return schedule


def piecewise_constant(
    init_value: float, boundaries: Sequence[int], scales: Sequence[float]
) -> Schedule:
    r"""Piecewise constant, :math:`v(t) = v_0 \prod_{i:\, b_i \leq t} s_i`.

    torch's ``MultiStepLR(milestones, gamma)`` is
    ``piecewise_constant(lr, milestones, [gamma] * len(milestones))``; optax's
    ``piecewise_constant_schedule(v, {b: s})`` is the same with its dict. The
    value at ``count = boundaries[i]`` is already scaled. Each plateau is the
    product computed once in double precision.

    Args:
        init_value: :math:`v_0`, the value before the first boundary.
        boundaries: the counts :math:`b_i` at which a scale applies: strictly
            increasing non-negative integers.
        scales: the factors :math:`s_i`, one per boundary.

    Returns:
        The schedule, one plateau per interval between boundaries.

    Raises:
        ValueError: if the boundaries are not increasing or the lengths differ.

    Example:
        >>> import gradxform as gx
        >>> s = gx.schedules.piecewise_constant(1.0, [2, 4], [0.5, 0.5])
        >>> gx.schedules.evaluate(s, 5).tolist()
        [1.0, 1.0, 0.5, 0.5, 0.25]
    """
    v = _real("init_value", init_value)
    bounds = _increasing("boundaries", boundaries)
    factors = [_real(f"scales[{i}]", s) for i, s in enumerate(scales)]
    if len(factors) != len(bounds):
        raise ValueError(
            f"scales must have one entry per boundary; got {len(factors)} scales for "
            f"{len(bounds)} boundaries"
        )
    levels = [v]
    for s in factors:
        levels.append(levels[-1] * s)
    levels_f64 = np.asarray(levels, np.float64)
    bounds_arr = np.asarray(bounds, np.int64)

    def schedule(count):
        c = _count(count)
        index = sum((c >= int(b)).astype(jnp.int32) for b in bounds_arr) if len(bounds) else 0
        return jnp.asarray(levels_f64, _dtype())[index]

    return schedule


def exponential_decay(
    init_value: float,
    decay_rate: float | None = None,
    transition_steps: int = 1,
    *,
    k: float | None = None,
    transition_begin: int = 0,
    staircase: bool = False,
    end_value: float | None = None,
) -> Schedule:
    r"""Exponential decay, given by a rate per ``transition_steps`` or by a constant ``k``.

    * ``decay_rate`` form: :math:`v(t) = v_0\, r^{t / T}` (optax's
      ``exponential_decay``; torch's ``ExponentialLR(gamma)`` is
      ``exponential_decay(lr, gamma)``);
    * ``k`` form: :math:`v(t) = v_0\, e^{-k t / T}`;

    with :math:`T` = ``transition_steps``, :math:`b` = ``transition_begin`` and
    :math:`t = \max(\text{count} - b, 0)`, floored to whole multiples of
    :math:`T` when ``staircase``. ``end_value`` bounds the
    value (below for decay, above for growth). Step 0 uses ``init_value``.

    Args:
        init_value: :math:`v_0`.
        decay_rate: :math:`r > 0`, the factor per ``transition_steps`` (give
            this or ``k``, not both).
        transition_steps: :math:`T \geq 1`.
        k: the decay constant of the ``exp`` form.
        transition_begin: steps to hold ``init_value`` before decaying.
        staircase: decay in whole multiples of ``transition_steps``.
        end_value: a bound the value does not pass, or None.

    Returns:
        The schedule, ``init_value`` at step 0 (and until ``transition_begin``).

    Raises:
        ValueError: unless exactly one of ``decay_rate`` and ``k`` is given.

    Example:
        >>> import gradxform as gx
        >>> s = gx.schedules.exponential_decay(1.0, 0.5, transition_steps=2)
        >>> [round(v, 4) for v in gx.schedules.evaluate(s, 5).tolist()]
        [1.0, 0.7071, 0.5, 0.3536, 0.25]
        >>> s = gx.schedules.exponential_decay(1.0, k=0.5)  # exp(-t / 2)
        >>> [round(v, 4) for v in gx.schedules.evaluate(s, 3).tolist()]
        [1.0, 0.6065, 0.3679]
    """
    v = _real("init_value", init_value)
    if (decay_rate is None) == (k is None):
        raise ValueError("exponential_decay: give exactly one of decay_rate and k")
    if decay_rate is not None:
        log_rate = math.log(_real("decay_rate", decay_rate, positive=True))
    else:
        log_rate = -_real("k", k)
    steps = _steps("transition_steps", transition_steps)
    begin = _steps("transition_begin", transition_begin, positive=False)
    end = None if end_value is None else _real("end_value", end_value)

    def schedule(count):
        p = _since(count, begin)
        x = _float(p // steps) if staircase else _float(p) / steps
        value = _real_array(v) * jnp.exp(x * _real_array(log_rate))
        if end is not None:
            value = jnp.maximum(value, end) if log_rate < 0 else jnp.minimum(value, end)
        return value

    return schedule


def inverse_time_decay(
    init_value: float, k: float, transition_steps: int = 1, *, staircase: bool = False
) -> Schedule:
    r"""The 1/t decay, :math:`v(t) = v_0 / (1 + k\, t / T)`.

    :math:`t` = ``count`` (floored to multiples of :math:`T` =
    ``transition_steps`` when ``staircase``). Step 0 uses ``init_value``.
    torch's Adagrad ``lr_decay`` is ``inverse_time_decay(lr, lr_decay)``.

    Args:
        init_value: :math:`v_0`.
        k: :math:`k \geq 0`, the decay constant.
        transition_steps: :math:`T \geq 1`.
        staircase: decay in whole multiples of ``transition_steps``.

    Returns:
        The schedule, falling from ``init_value`` towards 0 as ``1/t``.

    Example:
        >>> import gradxform as gx
        >>> s = gx.schedules.inverse_time_decay(1.0, 1.0)
        >>> [round(v, 4) for v in gx.schedules.evaluate(s, 4).tolist()]
        [1.0, 0.5, 0.3333, 0.25]
    """
    v = _real("init_value", init_value)
    kk = _real("k", k, nonnegative=True)
    steps = _steps("transition_steps", transition_steps)

    def schedule(count):
        c = _count(count)
        x = _float(c // steps) if staircase else _float(c) / steps
        return _real_array(v) / (1 + _real_array(kk) * x)

    return schedule


def cosine_decay(
    init_value: float,
    decay_steps: int,
    alpha: float = 0.0,
    *,
    exponent: float = 1.0,
    warm_restarts: bool = False,
    period_mult: int = 1,
) -> Schedule:
    r"""Cosine decay from ``init_value`` to the floor ``alpha * init_value``.

    :math:`v(t) = v_0 ((1 - \alpha)\, c(t)^p + \alpha)` with
    :math:`c(t) = (1 + \cos(\pi t / T)) / 2`: :math:`\tfrac12 v_0 (1 + \cos(\pi t / T))`
    for :math:`\alpha = 0, p = 1`. Without restarts :math:`t = \min(\text{count}, T)`:
    the value stays at the floor after ``decay_steps`` (optax's
    ``cosine_decay_schedule``; torch's ``CosineAnnealingLR(T_max, eta_min)`` for
    ``count <= T_max`` with ``alpha = eta_min / lr``). With ``warm_restarts`` the
    decay starts again from ``init_value`` after each period, the ``i``-th lasting
    :math:`T m^i` steps (SGDR; torch's ``CosineAnnealingWarmRestarts(T_0, T_mult,
    eta_min)``). Step 0 uses ``init_value``.

    Args:
        init_value: :math:`v_0`.
        decay_steps: :math:`T \geq 1`, the length of the decay (of the first
            period with restarts).
        alpha: :math:`\alpha \in [0, 1]`, the floor as a fraction of ``init_value``.
        exponent: :math:`p > 0`, applied to the cosine factor.
        warm_restarts: restart the decay at the end of each period.
        period_mult: :math:`m \geq 1`, the growth of each period over the last.

    Returns:
        The schedule, from ``init_value`` down to ``alpha * init_value``.

    Example:
        >>> import gradxform as gx
        >>> s = gx.schedules.cosine_decay(1.0, 4)
        >>> [round(v, 4) for v in gx.schedules.evaluate(s, 6).tolist()]
        [1.0, 0.8536, 0.5, 0.1464, 0.0, 0.0]
        >>> s = gx.schedules.cosine_decay(1.0, 2, warm_restarts=True, period_mult=2)
        >>> [round(v, 4) for v in gx.schedules.evaluate(s, 7).tolist()]
        [1.0, 0.5, 1.0, 0.8536, 0.5, 0.1464, 1.0]
    """
    v = _real("init_value", init_value)
    T = _steps("decay_steps", decay_steps)
    a = checks.real("alpha", alpha, lower=0, upper=1)
    p = _real("exponent", exponent, positive=True)
    m = checks.integer("period_mult", period_mult, minimum=1)

    def position(count):
        """(steps done in the current period, length of the period)."""
        c = _count(count)
        if not warm_restarts:
            return jnp.minimum(c, T), jnp.asarray(T, _dtype())
        if m == 1:
            return c % T, jnp.asarray(T, _dtype())
        # period n starts at T (m**n - 1) / (m - 1); float32 is exact enough and cannot overflow
        cf = _float(c)
        n = jnp.floor(jnp.log1p(cf * (m - 1) / T) / math.log(m))
        start = lambda n: T * (jnp.power(_real_array(m), n) - 1) / (m - 1)  # noqa: E731
        n = jnp.where(cf < start(n), n - 1, jnp.where(cf >= start(n + 1), n + 1, n))
        return cf - start(n), T * jnp.power(_real_array(m), n)

    def schedule(count):
        done, total = position(count)
        c = _cos_half_squared(done, total)
        if p != 1.0:
            c = c**p
        return _real_array(v) * ((1 - _real_array(a)) * c + _real_array(a))

    return schedule


def polynomial_decay(
    init_value: float,
    end_value: float,
    power: float,
    transition_steps: int,
    transition_begin: int = 0,
) -> Schedule:
    r"""Polynomial decay, :math:`v(t) = (v_0 - v_1) (1 - t / T)^p + v_1`.

    :math:`t = \min(\max(\text{count} - b, 0), T)` with :math:`b` =
    ``transition_begin``: constant at ``init_value`` before ``transition_begin``,
    at ``end_value`` after the decay (optax's ``polynomial_schedule``; torch's
    ``PolynomialLR(total_iters, power)`` with ``end_value = 0``). Step 0 uses
    ``init_value``.

    Args:
        init_value: :math:`v_0`.
        end_value: :math:`v_1`.
        power: :math:`p > 0`.
        transition_steps: :math:`T \geq 1`, the length of the decay.
        transition_begin: steps to hold ``init_value`` before decaying.

    Returns:
        The schedule, ``init_value`` until ``transition_begin`` and ``end_value`` after the decay.

    Example:
        >>> import gradxform as gx
        >>> s = gx.schedules.polynomial_decay(1.0, 0.0, 2.0, 4)
        >>> gx.schedules.evaluate(s, 6).tolist()
        [1.0, 0.5625, 0.25, 0.0625, 0.0, 0.0]
    """
    v0 = _real("init_value", init_value)
    v1 = _real("end_value", end_value)
    pw = _real("power", power, positive=True)
    T = _steps("transition_steps", transition_steps)
    begin = _steps("transition_begin", transition_begin, positive=False)

    def schedule(count):
        done = jnp.minimum(_since(count, begin), T)
        # v0 * r**p + v1 * (1 - r**p): two same-signed terms, no cancellation; both
        # weights come from exact integers (T - done, done), not from 1 - float.
        remaining, frac = _float(T - done) / T, _float(done) / T
        if pw == 1.0:
            w0, w1 = remaining, frac
        else:
            w0, w1 = remaining**pw, -jnp.expm1(pw * jnp.log1p(-frac))
        return _real_array(v0) * w0 + _real_array(v1) * w1

    return schedule


def linear_decay(
    init_value: float, end_value: float, transition_steps: int, transition_begin: int = 0
) -> Schedule:
    r"""Linear decay, :math:`v(t) = v_0 + (v_1 - v_0)\, t / T` until :math:`t = T`.

    :math:`v_0 (1 - t / T)` is ``linear_decay(v0, 0.0, T)``; torch's
    ``LinearLR(start_factor, end_factor, total_iters)`` is
    ``linear_decay(lr * start_factor, lr * end_factor, total_iters)``. This is
    :func:`polynomial_decay` with ``power=1``.

    Args:
        init_value: :math:`v_0`, the value at the start.
        end_value: :math:`v_1`, the value from ``transition_begin + transition_steps`` on.
        transition_steps: :math:`T \geq 1`, how many steps the interpolation takes.
        transition_begin: how long ``init_value`` is held first.

    Returns:
        The schedule, a ramp between the two values.

    Example:
        >>> import gradxform as gx
        >>> gx.schedules.evaluate(gx.schedules.linear_decay(1.0, 0.0, 4), 6).tolist()
        [1.0, 0.75, 0.5, 0.25, 0.0, 0.0]
    """
    return polynomial_decay(init_value, end_value, 1.0, transition_steps, transition_begin)


def inverse_sqrt_decay(peak_value: float, warmup_steps: int = 0) -> Schedule:
    r"""Inverse square-root decay, :math:`v_0 / \sqrt{s}`, with the Transformer's linear warmup.

    With :math:`s` = ``count + 1`` (so that step 0 is finite) and :math:`W` =
    ``warmup_steps``:

    .. math::

        v(s) = v_0 \min\left(\frac{s}{W}, \sqrt{\frac{W}{s}}\right),

    rising linearly to :math:`v_0` at :math:`s = W` then decaying as
    :math:`1/\sqrt{s}`; with :math:`W = 0`, :math:`v_0 / \sqrt{s}`.
    "Attention is all you need" uses :math:`v_0 = d_\text{model}^{-1/2} W^{-1/2}`.

    Args:
        peak_value: :math:`v_0`.
        warmup_steps: :math:`W \geq 0`.

    Returns:
        The schedule, peaking at ``peak_value`` at ``count = warmup_steps - 1``.

    Example:
        >>> import gradxform as gx
        >>> s = gx.schedules.inverse_sqrt_decay(1.0, warmup_steps=4)
        >>> [round(v, 4) for v in gx.schedules.evaluate(s, 6).tolist()]
        [0.25, 0.5, 0.75, 1.0, 0.8944, 0.8165]
    """
    v = _real("peak_value", peak_value)
    W = _steps("warmup_steps", warmup_steps, positive=False)

    def schedule(count):
        s = _float(_count(count)) + 1  # float: no int32 overflow at the top count
        if W == 0:
            return _real_array(v) * jax.lax.rsqrt(s)
        return _real_array(v) * jnp.minimum(s / W, jnp.sqrt(W / s))

    return schedule


def warmup(
    peak_value: float, warmup_steps: int, init_value: float = 0.0, *, shape: str = "linear"
) -> Schedule:
    r"""Warmup from ``init_value`` at step 0 to ``peak_value`` at ``count = warmup_steps``.

    With :math:`f = \min(t, W) / W`: ``shape="linear"`` gives
    :math:`v_0 + (v_1 - v_0) f`; ``shape="cosine"`` gives
    :math:`v_0 + (v_1 - v_0) (1 - \cos(\pi f)) / 2`. Constant at
    ``peak_value`` afterwards, so :func:`join` with a decay that starts at
    ``peak_value`` is continuous.

    Args:
        peak_value: :math:`v_1`, the value from ``count = warmup_steps`` on.
        warmup_steps: :math:`W \geq 1`.
        init_value: :math:`v_0`, the value at step 0.
        shape: ``"linear"`` or ``"cosine"``.

    Returns:
        The schedule, ``peak_value`` from ``count = warmup_steps`` on.

    Example:
        >>> import gradxform as gx
        >>> gx.schedules.evaluate(gx.schedules.warmup(1.0, 4), 6).tolist()
        [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    """
    v1 = _real("peak_value", peak_value)
    v0 = _real("init_value", init_value)
    W = _steps("warmup_steps", warmup_steps)
    checks.choice("shape", shape, ("linear", "cosine"))

    def schedule(count):
        done = jnp.minimum(_count(count), W)
        if shape == "linear":
            w0, w1 = _float(W - done) / W, _float(done) / W
        else:  # (1 + cos(pi f)) / 2 and (1 - cos(pi f)) / 2, each without cancellation
            w0, w1 = _cos_half_squared(done, W), _cos_half_squared(W - done, W)
        return _real_array(v0) * w0 + _real_array(v1) * w1

    return schedule


def join(schedules: Sequence[Schedule], boundaries: Sequence[int]) -> Schedule:
    """Runs ``schedules[0]`` until ``boundaries[0]``, then ``schedules[1]``, ...

    Schedule ``i`` is called with ``count - boundaries[i - 1]``, so each starts
    at its own step 0 (optax's ``join_schedules``; torch's ``SequentialLR``).
    The result is continuous at a boundary when the schedule that ends there
    reaches the value the next one starts with (:func:`warmup` then a decay
    from the same peak).

    Args:
        schedules: a non-empty sequence of schedules.
        boundaries: the counts at which the next schedule takes over, strictly
            increasing, one fewer than ``schedules``.

    Returns:
        The joined schedule.

    Example:
        >>> import gradxform as gx
        >>> S = gx.schedules
        >>> s = S.join([S.warmup(1.0, 2), S.linear_decay(1.0, 0.0, 4)], [2])
        >>> S.evaluate(s, 7).tolist()
        [0.0, 0.5, 1.0, 0.75, 0.5, 0.25, 0.0]
    """
    parts = list(schedules)
    if not parts or not all(callable(s) for s in parts):
        raise ValueError("schedules must be a non-empty sequence of schedules")
    bounds = _increasing("boundaries", boundaries)
    if len(bounds) != len(parts) - 1:
        raise ValueError(
            f"boundaries must have one entry fewer than schedules; got {len(bounds)} "
            f"boundaries for {len(parts)} schedules"
        )

    def schedule(count):
        c = _count(count)
        value = jnp.asarray(parts[0](c), _dtype())
        for b, part in zip(bounds, parts[1:]):
            value = jnp.where(c >= b, jnp.asarray(part(_since(c, b)), _dtype()), value)
        return value

    return schedule
