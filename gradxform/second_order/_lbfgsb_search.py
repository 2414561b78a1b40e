"""The Moré-Thuente line search that L-BFGS-B runs (MINPACK-2 ``dcsrch`` / ``dcstep``).

Moré & Thuente, "Line search algorithms with guaranteed sufficient decrease",
ACM TOMS 20(3), 286-307 (1994). The search keeps an interval ``[stx, sty]``
known to contain a step meeting ``f(t) <= f(0) + ftol t f'(0)`` and
``|f'(t)| <= gtol |f'(0)|``, and chooses each trial by safeguarded cubic,
quadratic or secant interpolation (:func:`step`); while no trial has met the
sufficient decrease with ``f'(t) >= 0`` it works on the auxiliary function
``psi(t) = f(t) - f(0) - ftol t f'(0)`` (the first stage). :func:`start` and
:func:`update` are one reverse-communication round each, as ``dcsrch``: the
caller evaluates ``f`` and ``f'`` at the step returned and calls :func:`update`
until it reports ``done`` (the conditions hold, or a warning: the interval is
below ``xtol`` relative width, rounding prevents progress, or the step sits at
``stpmax`` / ``stpmin``; the current step is then the answer, as L-BFGS-B
takes it).

Every function is on scalars of one real dtype and has no Python control flow
on values, so it runs under ``jit`` and ``vmap``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["SearchState", "start", "step", "update"]

_XTRAPL = 1.1
_XTRAPU = 4.0


class SearchState(NamedTuple):
    """The search's memory between trials (``dcsrch``'s saved variables).

    Attributes:
        brackt: a minimizer is bracketed by ``[stx, sty]``.
        stage: 1 while working on ``psi``, 2 once a step met sufficient
            decrease with a non-negative slope.
        ginit: ``f'(0)``.
        gtest: ``ftol f'(0)``.
        finit: ``f(0)``.
        stx: the best step so far; ``fx``, ``gx`` its value and slope.
        fx: see ``stx``.
        gx: see ``stx``.
        sty: the other end of the interval; ``fy``, ``gy`` its value and slope.
        fy: see ``sty``.
        gy: see ``sty``.
        stmin: the smallest step the next trial may take.
        stmax: the largest.
        width: the interval's width before the latest trial.
        width1: the width before that (for the bisection test).
    """

    brackt: jax.Array
    stage: jax.Array
    ginit: jax.Array
    gtest: jax.Array
    finit: jax.Array
    stx: jax.Array
    fx: jax.Array
    gx: jax.Array
    sty: jax.Array
    fy: jax.Array
    gy: jax.Array
    stmin: jax.Array
    stmax: jax.Array
    width: jax.Array
    width1: jax.Array


def start(f0, g0, stp, ftol, stpmin, stpmax) -> SearchState:
    """The state before the first trial at ``stp`` (``dcsrch`` with ``task = 'START'``).

    Args:
        f0: ``f(0)``.
        g0: ``f'(0) < 0``.
        stp: the first trial step.
        ftol: sufficient-decrease constant.
        stpmin: the smallest step allowed.
        stpmax: the largest.

    Returns:
        The :class:`SearchState`.
    """
    zero = jnp.zeros_like(f0)
    width = stpmax - stpmin
    return SearchState(
        brackt=jnp.array(False),
        stage=jnp.ones([], jnp.int32),
        ginit=g0,
        gtest=ftol * g0,
        finit=f0,
        stx=zero,
        fx=f0,
        gx=g0,
        sty=zero,
        fy=f0,
        gy=g0,
        stmin=zero,
        stmax=stp + _XTRAPU * stp,
        width=width,
        width1=width / 0.5,
    )


def _cubic_terms(stx, fx, dx, stp, fp, dp):
    """``theta`` and the scale ``s`` of the cubic through both points (N&W eq. 3.59 terms)."""
    theta = 3 * (fx - fp) / (stp - stx) + dx + dp
    s = jnp.maximum(jnp.abs(theta), jnp.maximum(jnp.abs(dx), jnp.abs(dp)))
    return theta, s


def _higher_value(stx, fx, dx, stp, fp, dp):
    """Case 1: ``f`` rose; the cubic step if nearer ``stx`` than the quadratic, else their mean."""
    theta, s = _cubic_terms(stx, fx, dx, stp, fp, dp)
    gamma = s * jnp.sqrt((theta / s) ** 2 - (dx / s) * (dp / s))
    gamma = jnp.where(stp < stx, -gamma, gamma)
    r = ((gamma - dx) + theta) / (((gamma - dx) + gamma) + dp)
    stpc = stx + r * (stp - stx)
    stpq = stx + ((dx / ((fx - fp) / (stp - stx) + dx)) / 2) * (stp - stx)
    near = jnp.abs(stpc - stx) < jnp.abs(stpq - stx)
    return jnp.where(near, stpc, stpc + (stpq - stpc) / 2)


def _opposite_slopes(stx, fx, dx, stp, fp, dp):
    """Case 2: ``f`` fell and the slope changed sign; the cubic or the secant step, the farther."""
    theta, s = _cubic_terms(stx, fx, dx, stp, fp, dp)
    gamma = s * jnp.sqrt((theta / s) ** 2 - (dx / s) * (dp / s))
    gamma = jnp.where(stp > stx, -gamma, gamma)
    r = ((gamma - dp) + theta) / (((gamma - dp) + gamma) + dx)
    stpc = stp + r * (stx - stp)
    stpq = stp + (dp / (dp - dx)) * (stx - stp)
    return jnp.where(jnp.abs(stpc - stp) > jnp.abs(stpq - stp), stpc, stpq)


def _flatter_slope(stx, fx, dx, sty, stp, fp, dp, brackt, stpmin, stpmax):
    """Case 3: ``f`` fell, same slope sign, smaller slope: cubic (where it tends the right
    way) or secant, bounded by ``sty`` when bracketed and by the step limits otherwise."""
    theta, s = _cubic_terms(stx, fx, dx, stp, fp, dp)
    gamma = s * jnp.sqrt(jnp.maximum(0, (theta / s) ** 2 - (dx / s) * (dp / s)))
    gamma = jnp.where(stp > stx, -gamma, gamma)
    r = ((gamma - dp) + theta) / ((gamma + (dx - dp)) + gamma)
    limit = jnp.where(stp > stx, stpmax, stpmin)
    stpc = jnp.where((r < 0) & (gamma != 0), stp + r * (stx - stp), limit)
    stpq = stp + (dp / (dp - dx)) * (stx - stp)
    closer = jnp.where(jnp.abs(stpc - stp) < jnp.abs(stpq - stp), stpc, stpq)
    toward_y = stp + 0.66 * (sty - stp)
    inside = jnp.where(stp > stx, jnp.minimum(toward_y, closer), jnp.maximum(toward_y, closer))
    farther = jnp.where(jnp.abs(stpc - stp) > jnp.abs(stpq - stp), stpc, stpq)
    return jnp.where(brackt, inside, jnp.clip(farther, stpmin, stpmax))


def _steeper_slope(sty, fy, dy, stx, stp, fp, dp, brackt, stpmin, stpmax):
    """Case 4: ``f`` fell, same slope sign, slope not smaller: the cubic through ``sty``
    when bracketed, else a step limit."""
    theta, s = _cubic_terms(sty, fy, dy, stp, fp, dp)
    gamma = s * jnp.sqrt((theta / s) ** 2 - (dy / s) * (dp / s))
    gamma = jnp.where(stp > sty, -gamma, gamma)
    r = ((gamma - dp) + theta) / (((gamma - dp) + gamma) + dy)
    return jnp.where(brackt, stp + r * (sty - stp), jnp.where(stp > stx, stpmax, stpmin))


def step(stx, fx, dx, sty, fy, dy, stp, fp, dp, brackt, stpmin, stpmax):
    """One safeguarded step and the updated interval (``dcstep``).

    Args:
        stx: the best step; ``fx``, ``dx`` its value and slope.
        fx: see ``stx``.
        dx: see ``stx``.
        sty: the interval's other end; ``fy``, ``dy`` its value and slope.
        fy: see ``sty``.
        dy: see ``sty``.
        stp: the step just evaluated; ``fp``, ``dp`` its value and slope.
        fp: see ``stp``.
        dp: see ``stp``.
        brackt: whether the interval brackets a minimizer.
        stpmin: the smallest next step.
        stpmax: the largest.

    Returns:
        ``(stx, fx, dx, sty, fy, dy, next step, brackt)``.
    """
    sgnd = dp * jnp.sign(dx)
    higher = fp > fx
    opposite = ~higher & (sgnd < 0)
    flatter = ~higher & ~opposite & (jnp.abs(dp) < jnp.abs(dx))
    stpf = jnp.where(
        higher,
        _higher_value(stx, fx, dx, stp, fp, dp),
        jnp.where(
            opposite,
            _opposite_slopes(stx, fx, dx, stp, fp, dp),
            jnp.where(
                flatter,
                _flatter_slope(stx, fx, dx, sty, stp, fp, dp, brackt, stpmin, stpmax),
                _steeper_slope(sty, fy, dy, stx, stp, fp, dp, brackt, stpmin, stpmax),
            ),
        ),
    )
    # the interval: a higher value ends it at stp; otherwise stp is the new best point,
    # and the old best becomes the other end where the slope changed sign
    to_y = higher | (sgnd < 0)
    y_from = jnp.where(higher, jnp.stack([stp, fp, dp]), jnp.stack([stx, fx, dx]))
    sty, fy, dy = (jnp.where(to_y, a, b) for a, b in zip(y_from, (sty, fy, dy)))
    stx, fx, dx = (jnp.where(higher, a, b) for a, b in zip((stx, fx, dx), (stp, fp, dp)))
    return stx, fx, dx, sty, fy, dy, stpf, brackt | higher | opposite


def update(s: SearchState, stp, f, g, *, ftol, gtol, xtol, stpmin, stpmax):
    """The tests at the trial ``stp`` just evaluated, and the next trial (``dcsrch``).

    Args:
        s: the state.
        stp: the step just evaluated.
        f: ``f(stp)``.
        g: ``f'(stp)``.
        ftol: sufficient-decrease constant.
        gtol: curvature constant.
        xtol: relative interval width below which the search stops.
        stpmin: the smallest step allowed.
        stpmax: the largest.

    Returns:
        ``(state, next step, done, converged)``: where ``done``, ``stp`` is the
        answer (``converged``: both conditions hold; otherwise a warning) and
        the state and step are returned unchanged.
    """
    ftest = s.finit + stp * s.gtest
    stage = jnp.where((s.stage == 1) & (f <= ftest) & (g >= 0), 2, s.stage)
    converged = (f <= ftest) & (jnp.abs(g) <= gtol * -s.ginit)
    warned = (
        (s.brackt & ((stp <= s.stmin) | (stp >= s.stmax)))
        | (s.brackt & (s.stmax - s.stmin <= xtol * s.stmax))
        | ((stp == stpmax) & (f <= ftest) & (g <= s.gtest))
        | ((stp == stpmin) & ((f > ftest) | (g >= s.gtest)))
    )
    done = converged | warned
    # first stage with a lower value but not enough decrease: step on psi, not f
    shift = jnp.where((stage == 1) & (f <= s.fx) & (f > ftest), s.gtest, 0)
    stx, fx, gx, sty, fy, gy, new, brackt = step(
        s.stx,
        s.fx - s.stx * shift,
        s.gx - shift,
        s.sty,
        s.fy - s.sty * shift,
        s.gy - shift,
        stp,
        f - stp * shift,
        g - shift,
        s.brackt,
        s.stmin,
        s.stmax,
    )
    fx, fy, gx, gy = fx + stx * shift, fy + sty * shift, gx + shift, gy + shift
    bisect = brackt & (jnp.abs(sty - stx) >= 0.66 * s.width1)
    new = jnp.where(bisect, stx + 0.5 * (sty - stx), new)
    width1 = jnp.where(brackt, s.width, s.width1)
    width = jnp.where(brackt, jnp.abs(sty - stx), s.width)
    stmin = jnp.where(brackt, jnp.minimum(stx, sty), new + _XTRAPL * (new - stx))
    stmax = jnp.where(brackt, jnp.maximum(stx, sty), new + _XTRAPU * (new - stx))
    new = jnp.clip(new, stpmin, stpmax)
    stuck = brackt & ((new <= stmin) | (new >= stmax) | (stmax - stmin <= xtol * stmax))
    new = jnp.where(stuck, stx, new)
    moved = SearchState(
        brackt,
        stage,
        s.ginit,
        s.gtest,
        s.finit,
        stx,
        fx,
        gx,
        sty,
        fy,
        gy,
        stmin,
        stmax,
        width,
        width1,
    )
    state = jax.tree.map(lambda a, b: jnp.where(done, a, b), s._replace(stage=stage), moved)
    return state, jnp.where(done, stp, new), done, converged
