"""Cycles and one-call recipes: one_cycle (and its momentum), cyclic, warmup_cosine."""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from gradxform import checks
from gradxform.base import Schedule
from gradxform.schedules._common import (
    _cos_half_squared,
    _count,
    _dtype,
    _float,
    _real,
    _real_array,
    _steps,
)
from gradxform.schedules._decay import warmup

# --- one cycle ------------------------------------------------------------------------


def _phase_weights(c: jax.Array, start: float, end: float, cosine: bool):
    """The weights of a phase's two ends at integer count ``c``, for ``start < c <= end``.

    ``done = c - start`` and ``rest = end - c`` are each exact to an ulp (the
    integer parts are subtracted as integers, the fractions once), so neither
    weight cancels near its zero: the cosine weights are ``cos**2`` of half
    the angle on the side where it is large and ``sin**2`` of the other half
    where it is small.
    """
    low, high = math.floor(start), math.floor(end)
    done = _float(c - low) - _real_array(start - low)
    rest = _float(high - c) + _real_array(end - high)
    total = _real_array(end - start)
    if not cosine:
        return rest / total, done / total
    half = jnp.pi / (2 * total)
    w_start = jnp.where(done <= rest, jnp.cos(half * done) ** 2, jnp.sin(half * rest) ** 2)
    w_end = jnp.where(rest <= done, jnp.cos(half * rest) ** 2, jnp.sin(half * done) ** 2)
    return w_start, w_end


def _one_cycle_phases(total_steps, pct_start, three_phase) -> tuple[int, list[float]]:
    """``total_steps`` and the counts at which the phases end, as torch's ``OneCycleLR``."""
    T = _steps("total_steps", total_steps)
    p = checks.real("pct_start", pct_start, lower=0, upper=1, lower_open=True, upper_open=True)
    checks.boolean("three_phase", three_phase)
    ends = [float(p * T) - 1, float(2 * p * T) - 2] if three_phase else [float(p * T) - 1]
    ends.append(float(T - 1))
    starts = [0.0, *ends[:-1]]
    if any(e <= s for s, e in zip(starts, ends)):
        lengths = ", ".join(f"{e - s:g}" for s, e in zip(starts, ends))
        checks.fail(
            "pct_start",
            f"such that every phase of the {len(ends)} lasts more than 0 steps (with "
            f"total_steps={T}: {lengths})",
            pct_start,
        )
    return T, ends


def _piecewise_anneal(ends: list[float], levels: list[tuple[float, float]], cosine: bool):
    """The schedule that anneals from ``levels[i][0]`` to ``levels[i][1]`` in phase ``i``.

    Phase ``i`` covers the counts ``ends[i - 1] < t <= ends[i]`` (from 0 for
    the first); past the last end the value stays at the last level.
    """

    def schedule(count):
        c = jnp.minimum(_count(count), int(ends[-1]))
        value = jnp.zeros(jnp.shape(c), _dtype())
        start = 0.0
        for i, (end, (a, b)) in enumerate(zip(ends, levels)):
            w_a, w_b = _phase_weights(c, start, end, cosine)
            here = _real_array(a) * w_a + _real_array(b) * w_b
            inside = c > math.floor(start) if i else jnp.ones(jnp.shape(c), bool)
            value = jnp.where(inside, here, value)
            start = end
        return value

    return schedule


def one_cycle(
    total_steps: int,
    max_value: float,
    pct_start: float = 0.3,
    anneal_strategy: str = "cos",
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    three_phase: bool = False,
) -> Schedule:
    r"""The one-cycle policy: up from ``max_value / div_factor`` to ``max_value``, then down.

    torch's ``OneCycleLR(max_lr=max_value, total_steps, ...)``, count by count.
    With :math:`T` = ``total_steps``, :math:`p` = ``pct_start``,
    :math:`v_0 = v_\text{max} / \text{div\_factor}` and
    :math:`v_\text{min} = v_0 / \text{final\_div\_factor}`, the phases end at
    the counts :math:`e_1 = pT - 1` and :math:`e_2 = T - 1`, and within a phase
    from count :math:`s` to :math:`e` the value anneals from :math:`a` to
    :math:`b`:

    .. math::

        v(t) = a\, \frac{1 + \cos(\pi f)}{2} + b\, \frac{1 - \cos(\pi f)}{2},
        \qquad f = \frac{t - s}{e - s}

    (``anneal_strategy="linear"``: :math:`a (1 - f) + b f`), from :math:`v_0`
    to :math:`v_\text{max}` in the first phase and from :math:`v_\text{max}`
    to :math:`v_\text{min}` in the second. With ``three_phase`` the phases end
    at :math:`pT - 1`, :math:`2pT - 2` and :math:`T - 1`, and go :math:`v_0 \to
    v_\text{max} \to v_0 \to v_\text{min}`. Step 0 uses :math:`v_0`; the value
    stays at :math:`v_\text{min}` from count :math:`T - 1` on (torch raises
    when stepped past ``total_steps``). :func:`one_cycle_momentum` is the
    inverse cycle for the momentum.

    Args:
        total_steps: :math:`T \geq 1`, the number of updates in the cycle.
        max_value: :math:`v_\text{max}`, the peak.
        pct_start: :math:`p \in (0, 1)`, the fraction of the steps spent rising;
            every phase must last more than 0 steps.
        anneal_strategy: ``"cos"`` or ``"linear"``.
        div_factor: :math:`> 0`; the value at step 0 is ``max_value / div_factor``.
        final_div_factor: :math:`> 0`; the last value is ``max_value /
            div_factor / final_div_factor``.
        three_phase: rise, fall back to the start value, then anneal to the
            last value (fast.ai's variant), instead of rise then anneal.

    Returns:
        The schedule.

    Example:
        >>> import gradxform as gx
        >>> s = gx.schedules.one_cycle(11, 1.0, pct_start=0.5, div_factor=4.0,
        ...                            final_div_factor=2.0, anneal_strategy="linear")
        >>> [round(v, 4) for v in gx.schedules.evaluate(s, 12).tolist()]
        [0.25, 0.4167, 0.5833, 0.75, 0.9167, 0.9205, 0.7614, 0.6023, 0.4432, 0.2841, 0.125, 0.125]
    """
    T, ends = _one_cycle_phases(total_steps, pct_start, three_phase)
    top = _real("max_value", max_value)
    start = top / _real("div_factor", div_factor, positive=True)
    low = start / _real("final_div_factor", final_div_factor, positive=True)
    checks.choice("anneal_strategy", anneal_strategy, ("cos", "linear"))
    if three_phase:
        levels = [(start, top), (top, start), (start, low)]
    else:
        levels = [(start, top), (top, low)]
    return _piecewise_anneal(ends, levels, anneal_strategy == "cos")


def one_cycle_momentum(
    total_steps: int,
    base_momentum: float = 0.85,
    max_momentum: float = 0.95,
    pct_start: float = 0.3,
    anneal_strategy: str = "cos",
    three_phase: bool = False,
) -> Schedule:
    r"""The momentum of the one-cycle policy: down while the step size rises, then up.

    The momentum (or Adam's ``b1``) torch's ``OneCycleLR(cycle_momentum=True,
    base_momentum, max_momentum)`` sets, count by count: the phases of
    :func:`one_cycle` with the same ``total_steps``, ``pct_start``,
    ``anneal_strategy`` and ``three_phase``, annealing from ``max_momentum``
    to ``base_momentum`` while the value of :func:`one_cycle` rises and back
    to ``max_momentum`` while it falls (with ``three_phase``, held at
    ``max_momentum`` in the third phase). Give it to any momentum-like
    hyperparameter: ``gx.sgd(one_cycle(T, 0.1), momentum=one_cycle_momentum(T))``
    or ``gx.adam(one_cycle(T, 1e-3), b1=one_cycle_momentum(T))``.

    Args:
        total_steps: the number of updates in the cycle, as in :func:`one_cycle`.
        base_momentum: the lowest momentum, reached when the step size peaks.
        max_momentum: the momentum at step 0 and at the end.
        pct_start: the fraction of the steps spent in the first phase.
        anneal_strategy: ``"cos"`` or ``"linear"``.
        three_phase: the phases of ``one_cycle(..., three_phase=True)``.

    Returns:
        The schedule.

    Example:
        >>> import gradxform as gx
        >>> s = gx.schedules.one_cycle_momentum(9, pct_start=0.5, anneal_strategy="linear")
        >>> [round(v, 4) for v in gx.schedules.evaluate(s, 9).tolist()]
        [0.95, 0.9214, 0.8929, 0.8643, 0.8611, 0.8833, 0.9056, 0.9278, 0.95]
    """
    _, ends = _one_cycle_phases(total_steps, pct_start, three_phase)
    base = _real("base_momentum", base_momentum)
    top = _real("max_momentum", max_momentum)
    checks.choice("anneal_strategy", anneal_strategy, ("cos", "linear"))
    levels = [(top, base), (base, top), (top, top)] if three_phase else [(top, base), (base, top)]
    return _piecewise_anneal(ends, levels, anneal_strategy == "cos")


# --- cyclic ---------------------------------------------------------------------------


def cyclic(
    base_value: float,
    max_value: float,
    step_size_up: int = 2000,
    step_size_down: int | None = None,
    mode: str = "triangular",
    gamma: float = 1.0,
    scale_fn: Callable[[jax.Array], jax.Array] | None = None,
    scale_mode: str = "cycle",
) -> Schedule:
    r"""Cyclical values between ``base_value`` and ``max_value`` (torch's ``CyclicLR``).

    A cycle lasts :math:`L = u + d` steps (:math:`u` = ``step_size_up``,
    :math:`d` = ``step_size_down``): :math:`u` steps up from ``base_value``,
    :math:`d` steps down. With :math:`n = \lfloor t / L \rfloor + 1` the cycle
    number and :math:`r = t \bmod L`,

    .. math::

        v(t) = v_b + (v_m - v_b)\, h(r)\, \sigma, \qquad
        h(r) = \begin{cases} r / u & r \le u \\ (L - r) / d & r > u \end{cases}

    where :math:`\sigma` is 1 for ``mode="triangular"``, :math:`2^{-(n - 1)}`
    for ``"triangular2"`` (the amplitude halves every cycle), and
    :math:`\gamma^t` for ``"exp_range"``; or ``scale_fn(n)`` (``scale_mode=
    "cycle"``) or ``scale_fn(t)`` (``"iterations"``) when a ``scale_fn`` is
    given. Step 0 uses ``base_value``.

    torch's momentum cycle (``cycle_momentum=True``) is the same formula with
    the ends swapped: ``cyclic(max_momentum, base_momentum, ...)``.

    Args:
        base_value: :math:`v_b`, the value at the start of every cycle.
        max_value: :math:`v_m`, the value reached after ``step_size_up`` steps
            (times the scale).
        step_size_up: :math:`u \geq 1`, steps from ``base_value`` to ``max_value``.
        step_size_down: :math:`d \geq 1`, steps back down (default: ``step_size_up``).
        mode: ``"triangular"``, ``"triangular2"`` or ``"exp_range"`` (ignored
            when ``scale_fn`` is given).
        gamma: :math:`\gamma > 0`, the decay per step of ``"exp_range"``.
        scale_fn: a jax function of an integer array (the cycle number, from
            1, or the count), returning the scale :math:`\sigma`; replaces ``mode``.
        scale_mode: ``"cycle"`` or ``"iterations"``: what ``scale_fn`` is given.

    Returns:
        The schedule.

    Example:
        >>> import gradxform as gx
        >>> s = gx.schedules.cyclic(0.0, 1.0, step_size_up=2, mode="triangular2")
        >>> gx.schedules.evaluate(s, 10).tolist()
        [0.0, 0.5, 1.0, 0.5, 0.0, 0.25, 0.5, 0.25, 0.0, 0.125]
    """
    vb = _real("base_value", base_value)
    height = _real("max_value", max_value) - vb
    up = _steps("step_size_up", step_size_up)
    down = up if step_size_down is None else _steps("step_size_down", step_size_down)
    checks.choice("mode", mode, ("triangular", "triangular2", "exp_range"))
    log_gamma = math.log(_real("gamma", gamma, positive=True))
    checks.choice("scale_mode", scale_mode, ("cycle", "iterations"))
    if scale_fn is not None:
        checks.callable_arg("scale_fn", scale_fn, "of the cycle number or count -> scale")
    length = up + down

    def scale(c, n):
        if scale_fn is not None:
            return jnp.asarray(scale_fn(n if scale_mode == "cycle" else c), _dtype())
        if mode == "triangular":
            return _real_array(1.0)
        if mode == "triangular2":
            return jnp.exp2(-_float(n - 1))
        return jnp.exp(_float(c) * _real_array(log_gamma))

    def schedule(count):
        c = _count(count)
        r, n = c % length, c // length + 1
        h = jnp.where(r <= up, _float(r) / up, _float(length - r) / down)
        return _real_array(vb) + _real_array(height) * h * scale(c, n)

    return schedule


# --- warmup then cosine ---------------------------------------------------------------


def warmup_cosine(
    peak_value: float,
    warmup_steps: int,
    decay_steps: int,
    init_value: float = 0.0,
    end_value: float = 0.0,
    *,
    exponent: float = 1.0,
) -> Schedule:
    r"""Linear warmup to ``peak_value``, then cosine decay to ``end_value``, in one call.

    optax's ``warmup_cosine_decay_schedule(init_value, peak_value,
    warmup_steps, decay_steps, end_value, exponent)``: ``decay_steps`` is the
    length of the whole schedule, warmup included (as in optax), so the cosine
    lasts :math:`D = ` ``decay_steps - warmup_steps`` steps. With :math:`W` =
    ``warmup_steps``:

    .. math::

        v(t) = \begin{cases}
            v_0 + (v_p - v_0)\, t / W & t < W \\
            v_e + (v_p - v_e)\, c^p, \quad c = \frac{1 + \cos(\pi \min(t - W, D) / D)}{2}
            & t \ge W
        \end{cases}

    so the value is ``init_value`` at step 0, ``peak_value`` at count
    :math:`W`, and ``end_value`` from count ``decay_steps`` on. The same as
    ``join([warmup(peak, W, init), cosine_decay(peak, D, end / peak)], [W])``.

    Args:
        peak_value: :math:`v_p`, reached at count ``warmup_steps``.
        warmup_steps: :math:`W \geq 0` (0: no warmup).
        decay_steps: the count at which ``end_value`` is reached, greater than
            ``warmup_steps``.
        init_value: :math:`v_0`, the value at step 0.
        end_value: :math:`v_e`, the final value.
        exponent: :math:`p > 0`, applied to the cosine factor.

    Returns:
        The schedule.

    Example:
        >>> import gradxform as gx
        >>> s = gx.schedules.warmup_cosine(1.0, 2, 6, end_value=0.1)
        >>> [round(v, 4) for v in gx.schedules.evaluate(s, 8).tolist()]
        [0.0, 0.5, 1.0, 0.8682, 0.55, 0.2318, 0.1, 0.1]
    """
    vp = _real("peak_value", peak_value)
    W = _steps("warmup_steps", warmup_steps, positive=False)
    total = _steps("decay_steps", decay_steps)
    if total <= W:
        checks.fail("decay_steps", f"greater than warmup_steps ({W})", decay_steps)
    v0 = _real("init_value", init_value)
    ve = _real("end_value", end_value)
    p = _real("exponent", exponent, positive=True)
    D = total - W
    rise = warmup(vp, W, v0) if W else None

    def schedule(count):
        c = _count(count)
        done = jnp.minimum(jnp.maximum(c - W, 0), D)
        w_peak = _cos_half_squared(done, D)
        if p == 1.0:  # 1 - c without cancellation: the same form, from the other end
            w_end = _cos_half_squared(D - done, D)
        else:
            w_peak = w_peak**p
            w_end = -jnp.expm1(p * jnp.log(_cos_half_squared(done, D)))
        value = _real_array(vp) * w_peak + _real_array(ve) * w_end
        return value if rise is None else jnp.where(c < W, rise(c), value)

    return schedule
