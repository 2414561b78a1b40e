"""Line searches: strong-Wolfe zoom (Nocedal & Wright Alg. 3.5/3.6) and backtracking Armijo.

Two layers: :func:`zoom_search` and :func:`backtracking_search` work on flat
vectors and are what :func:`gradxform.minimize` runs; the transforms
:func:`scale_by_zoom_linesearch` and :func:`scale_by_backtracking_linesearch`
wrap them for a training loop. The transforms take the extra arguments
``value``, ``grad`` (at ``params``) and ``value_fn`` (the objective), and keep
the value and gradient at the accepted point in state fields named ``value``
and ``grad``, so ``optax.value_and_grad_from_state`` can reuse them.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from gradxform.base import GradientTransformationExtraArgs
from gradxform.second_order._packed import packed_while_loop

__all__ = [
    "LineSearchResult",
    "ScaleByLinesearchState",
    "backtracking_search",
    "scale_by_backtracking_linesearch",
    "scale_by_zoom_linesearch",
    "zoom_search",
]


class LineSearchResult(NamedTuple):
    """What a line search along ``d`` from ``x`` found.

    Attributes:
        step: the accepted step size ``t``.
        value: ``f(x + t d)``.
        grad: ``grad f(x + t d)`` (flat).
        num_evals: evaluations of ``f`` and its gradient made.
        wolfe: True if the strong Wolfe conditions hold at ``t`` (zoom; with
            the sufficient decrease relaxed to ``f``'s rounding error where
            the decrease asked for is below it), or Armijo's (backtracking).
        decreased: True if the search made progress: ``wolfe``, or a point
            with ``f(x + t d) < f(x)``; a search that fails the conditions
            still returns its best decreasing point.
    """

    step: jax.Array
    value: jax.Array
    grad: jax.Array
    num_evals: jax.Array
    wolfe: jax.Array
    decreased: jax.Array


def _cubic_minimizer(a, fa, da, b, fb, db):
    """Minimizer of the cubic through (a, fa, da), (b, fb, db) (N&W eq. 3.59), or NaN."""
    d1 = da + db - 3 * (fa - fb) / (a - b)
    disc = d1 * d1 - da * db
    d2 = jnp.sign(b - a) * jnp.sqrt(jnp.maximum(disc, 0))
    t = b - (b - a) * (db + d2 - d1) / (db - da + 2 * d2)
    return jnp.where(disc >= 0, t, jnp.nan)


def _safeguarded(lo, hi, candidate, trust_near_ends=False):
    """``candidate`` if it lies in the middle 80% of [lo, hi], else the midpoint.

    With ``trust_near_ends`` the candidate is only kept 1% of the width away
    from the ends instead (see ``interpolate_first_overshoot`` of :func:`zoom_search`).
    """
    left, right = jnp.minimum(lo, hi), jnp.maximum(lo, hi)
    width = right - left
    ok = (
        jnp.isfinite(candidate)
        & (candidate >= left + 0.1 * width)
        & (candidate <= right - 0.1 * width)
    )
    clamped = jnp.clip(candidate, left + 0.01 * width, right - 0.01 * width)
    near_end = trust_near_ends & jnp.isfinite(candidate)
    return jnp.where(ok, candidate, jnp.where(near_end, clamped, 0.5 * (lo + hi)))


class _Zoom(NamedTuple):
    i: jax.Array
    zooming: jax.Array
    done: jax.Array
    t: jax.Array  # next trial
    t_prev: jax.Array
    f_prev: jax.Array
    d_prev: jax.Array
    g_prev: jax.Array
    lo: jax.Array
    f_lo: jax.Array
    d_lo: jax.Array
    g_lo: jax.Array
    hi: jax.Array
    f_hi: jax.Array
    d_hi: jax.Array
    best_t: jax.Array
    best_f: jax.Array
    best_g: jax.Array
    wolfe: jax.Array


def zoom_search(
    value_and_grad,
    x: jax.Array,
    direction: jax.Array,
    value: jax.Array,
    grad: jax.Array,
    *,
    initial_step=1.0,
    c1: float = 1e-4,
    c2: float = 0.9,
    max_steps: int = 30,
    max_step_size: float = 1e10,
    interpolate_first_overshoot=False,
) -> LineSearchResult:
    """Strong-Wolfe line search: bracketing (N&W Alg. 3.5), then zoom (Alg. 3.6).

    Finds ``t`` with ``f(x + t d) <= f(x) + c1 t g.d`` and
    ``|grad(x + t d).d| <= c2 |g.d|``. Trial steps inside a bracket come from
    safeguarded cubic interpolation; bracketing grows the step tenfold. A
    non-finite value or derivative counts as "too far". After ``max_steps``
    evaluations without a Wolfe point the best decreasing point is returned
    with ``wolfe=False``. Where the decrease Armijo asks for,
    ``c1 t |g.d|``, is below ``max(1e-6, sqrt(eps)) |f(x)|`` (optax and Hager &
    Zhang use 1e-6; float32 objectives are often noisier), a
    step meeting the curvature condition with ``f`` within that error of
    ``f(x)`` is accepted too (in the spirit of Hager & Zhang's approximate
    Wolfe conditions), so solves can reach tight gradient tolerances.

    Args:
        value_and_grad: ``x -> (f(x), grad f(x))`` on flat vectors.
        x, direction, value, grad: the start, the direction, ``f(x)`` and ``grad f(x)``.
        interpolate_first_overshoot: (bool, may be traced) when the very first
            trial overshoots (no decrease), take the cubic's minimizer even near
            0 (1% of the bracket from either end) rather than halving towards it:
            for a first steepest-descent step of unknown scale, which can be
            orders of magnitude too long, the interpolant is the right scale
            (as MINPACK's ``dcstep`` does). Later trials keep the 10%-or-halve rule.
    """
    if not (isinstance(max_steps, int) and max_steps >= 1):
        raise ValueError(f"max_steps must be an integer >= 1; got {max_steps!r}")
    dtype = x.dtype
    slope0 = jnp.vdot(grad, direction)
    zero = jnp.zeros([], dtype)
    approx_rtol = jnp.maximum(1e-6, jnp.sqrt(jnp.finfo(dtype).eps))

    def phi(t):
        f, g = value_and_grad(x + t * direction)
        return f, jnp.vdot(g, direction), g

    init = _Zoom(
        i=jnp.zeros([], jnp.int32),
        zooming=jnp.array(False),
        done=jnp.array(False),
        t=jnp.asarray(initial_step, dtype),
        t_prev=zero,
        f_prev=value,
        d_prev=slope0,
        g_prev=grad,
        lo=zero,
        f_lo=value,
        d_lo=slope0,
        g_lo=grad,
        hi=zero,
        f_hi=value,
        d_hi=slope0,
        best_t=zero,
        best_f=value,
        best_g=grad,
        wolfe=jnp.array(False),
    )

    def cond(s):
        return (~s.done) & (s.i < max_steps)

    def body(s):
        t = s.t
        f, d, g = phi(t)
        finite = jnp.isfinite(f) & jnp.isfinite(d)
        armijo = finite & (f <= value + c1 * t * slope0)
        curvature = finite & (jnp.abs(d) <= -c2 * slope0)
        # Near a minimum the decrease Armijo asks for, c1 t |g.d|, is below f's rounding
        # error and cannot be decided; there the curvature condition and f within that
        # error of f(x) suffice (in the spirit of Hager & Zhang's approximate Wolfe test)
        noise = approx_rtol * jnp.abs(value)
        approximate = curvature & (c1 * t * -slope0 <= noise) & (f <= value + noise)
        better = armijo & (f < s.best_f)
        best_t = jnp.where(better, t, s.best_t)
        best_f = jnp.where(better, f, s.best_f)
        best_g = jnp.where(better, g, s.best_g)
        accept = (armijo & curvature) | approximate

        # bracketing phase (Alg. 3.5)
        too_far = (~armijo) | ((s.i > 0) & (f >= s.f_prev))
        b_lo, b_hi = jnp.where(too_far, s.t_prev, t), jnp.where(too_far, t, s.t_prev)
        b_f_lo, b_f_hi = jnp.where(too_far, s.f_prev, f), jnp.where(too_far, f, s.f_prev)
        b_d_lo, b_d_hi = jnp.where(too_far, s.d_prev, d), jnp.where(too_far, d, s.d_prev)
        b_g_lo = jnp.where(too_far, s.g_prev, g)
        start_zoom = (~accept) & (too_far | (d >= 0))
        grow = jnp.minimum(10 * t, max_step_size)

        # zoom phase (Alg. 3.6)
        z_hi_is_t = ~armijo | (f >= s.f_lo)
        flip = (~z_hi_is_t) & (d * (s.hi - s.lo) >= 0)
        z_lo = jnp.where(z_hi_is_t, s.lo, t)
        z_f_lo = jnp.where(z_hi_is_t, s.f_lo, f)
        z_d_lo = jnp.where(z_hi_is_t, s.d_lo, d)
        z_g_lo = jnp.where(z_hi_is_t, s.g_lo, g)
        z_hi = jnp.where(z_hi_is_t, t, jnp.where(flip, s.lo, s.hi))
        z_f_hi = jnp.where(z_hi_is_t, f, jnp.where(flip, s.f_lo, s.f_hi))
        z_d_hi = jnp.where(z_hi_is_t, d, jnp.where(flip, s.d_lo, s.d_hi))

        zooming_next = s.zooming | start_zoom
        lo = jnp.where(s.zooming, z_lo, b_lo)
        f_lo = jnp.where(s.zooming, z_f_lo, b_f_lo)
        d_lo = jnp.where(s.zooming, z_d_lo, b_d_lo)
        g_lo = jnp.where(s.zooming, z_g_lo, b_g_lo)
        hi = jnp.where(s.zooming, z_hi, b_hi)
        f_hi = jnp.where(s.zooming, z_f_hi, b_f_hi)
        d_hi = jnp.where(s.zooming, z_d_hi, b_d_hi)
        # a non-finite end of the bracket has no usable derivative: bisect towards it
        cubic = _cubic_minimizer(lo, f_lo, d_lo, hi, f_hi, d_hi)
        cubic = jnp.where(jnp.isfinite(f_hi) & jnp.isfinite(d_hi), cubic, jnp.nan)
        first_overshoot = interpolate_first_overshoot & (s.i == 0) & ~armijo
        next_t = jnp.where(zooming_next, _safeguarded(lo, hi, cubic, first_overshoot), grow)
        return _Zoom(
            i=s.i + 1,
            zooming=zooming_next,
            done=accept,
            t=next_t,
            t_prev=t,
            f_prev=jnp.where(finite, f, jnp.inf),
            d_prev=d,
            g_prev=g,
            lo=lo,
            f_lo=f_lo,
            d_lo=d_lo,
            g_lo=g_lo,
            hi=hi,
            f_hi=f_hi,
            d_hi=d_hi,
            best_t=jnp.where(accept, t, best_t),
            best_f=jnp.where(accept, f, best_f),
            best_g=jnp.where(accept, g, best_g),
            wolfe=accept,
        )

    out = packed_while_loop(cond, body, body(init))
    return LineSearchResult(
        step=out.best_t,
        value=out.best_f,
        grad=out.best_g,
        num_evals=out.i,
        wolfe=out.wolfe,
        decreased=out.wolfe | (out.best_f < value),
    )


def backtracking_search(
    value_and_grad,
    x: jax.Array,
    direction: jax.Array,
    value: jax.Array,
    grad: jax.Array,
    *,
    initial_step=1.0,
    c1: float = 1e-4,
    decrease_factor: float = 0.5,
    max_steps: int = 30,
) -> LineSearchResult:
    """Armijo backtracking: ``t <- decrease_factor * t`` until ``f(x + t d) <= f(x) + c1 t g.d``."""
    dtype = x.dtype
    slope0 = jnp.vdot(grad, direction)

    def cond(s):
        i, _, _, _, ok = s
        return (~ok) & (i < max_steps)

    def body(s):
        i, t, _, _, _ = s
        f, g = value_and_grad(x + t * direction)
        ok = jnp.isfinite(f) & (f <= value + c1 * t * slope0) & jnp.all(jnp.isfinite(g))
        t_next = jnp.where(ok, t, decrease_factor * t)
        return i + 1, t_next, f, g, ok

    init = (
        jnp.zeros([], jnp.int32),
        jnp.asarray(initial_step, dtype),
        value,
        grad,
        jnp.array(False),
    )
    i, t, f, g, ok = jax.lax.while_loop(cond, body, init)
    return LineSearchResult(
        step=jnp.where(ok, t, 0),
        value=jnp.where(ok, f, value),
        grad=jnp.where(ok, g, grad),
        num_evals=i,
        wolfe=ok,
        decreased=ok & (f < value),
    )


class ScaleByLinesearchState(NamedTuple):
    """State of the line-search transforms.

    Attributes:
        value: the objective at the accepted point (for ``value_and_grad_from_state``).
        grad: its gradient there, shaped like the params.
        step: the step size accepted at the latest update.
        num_evals: objective evaluations made by the latest search.
        wolfe: whether the latest search met its conditions.
    """

    value: jax.Array
    grad: Any
    step: jax.Array
    num_evals: jax.Array
    wolfe: jax.Array


def _linesearch_transform(search, name: str, **options) -> GradientTransformationExtraArgs:
    def init_fn(params):
        flat, _ = ravel_pytree(params)
        return ScaleByLinesearchState(
            value=jnp.asarray(jnp.inf, flat.dtype),
            grad=jax.tree.map(jnp.zeros_like, params),
            step=jnp.ones([], flat.dtype),
            num_evals=jnp.zeros([], jnp.int32),
            wolfe=jnp.array(True),
        )

    def update_fn(updates, state, params=None, *, value=None, grad=None, value_fn=None, **extra):
        del extra
        if params is None or value_fn is None:
            raise ValueError(
                f"{name}: update needs params and the extra argument value_fn (the objective); "
                "call tx.update(grads, state, params, value=..., grad=..., value_fn=f)"
            )
        x, unravel = ravel_pytree(params)
        d, _ = ravel_pytree(updates)
        g0 = ravel_pytree(grad if grad is not None else jax.grad(value_fn)(params))[0]
        f0 = value if value is not None else value_fn(params)

        def value_and_grad(v):
            f, g = jax.value_and_grad(value_fn)(unravel(v))
            return f, ravel_pytree(g)[0]

        result = search(value_and_grad, x, d, jnp.asarray(f0, x.dtype), g0, **options)
        new_state = ScaleByLinesearchState(
            value=result.value,
            grad=unravel(result.grad),
            step=result.step,
            num_evals=result.num_evals,
            wolfe=result.wolfe,
        )
        return jax.tree.map(lambda u: result.step.astype(u.dtype) * u, updates), new_state

    return GradientTransformationExtraArgs(init_fn, update_fn)


def _check_wolfe_constants(c1, c2=None):
    if not 0 < c1 < 1:
        raise ValueError(f"c1 must lie in (0, 1); got {c1!r}")
    if c2 is not None and not c1 < c2 < 1:
        raise ValueError(f"c2 must lie in (c1, 1) = ({c1}, 1); got {c2!r}")


def scale_by_zoom_linesearch(
    max_steps: int = 30, *, c1: float = 1e-4, c2: float = 0.9, initial_step: float = 1.0
) -> GradientTransformationExtraArgs:
    """Scales a descent direction by a step meeting the strong Wolfe conditions.

    Needs the extra arguments ``value_fn`` (the objective), and ``value`` and
    ``grad`` at ``params`` (computed if omitted). See :func:`zoom_search`.
    """
    _check_wolfe_constants(c1, c2)
    if not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"max_steps must be an integer >= 1; got {max_steps!r}")
    return _linesearch_transform(
        zoom_search,
        "scale_by_zoom_linesearch",
        c1=c1,
        c2=c2,
        max_steps=max_steps,
        initial_step=initial_step,
    )


def scale_by_backtracking_linesearch(
    max_steps: int = 30,
    *,
    c1: float = 1e-4,
    decrease_factor: float = 0.5,
    initial_step: float = 1.0,
) -> GradientTransformationExtraArgs:
    """Scales a descent direction by a step meeting the Armijo condition (backtracking).

    Needs the extra argument ``value_fn``; see :func:`backtracking_search`.
    """
    _check_wolfe_constants(c1)
    if not 0 < decrease_factor < 1:
        raise ValueError(f"decrease_factor must lie in (0, 1); got {decrease_factor!r}")
    if not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"max_steps must be an integer >= 1; got {max_steps!r}")
    return _linesearch_transform(
        backtracking_search,
        "scale_by_backtracking_linesearch",
        c1=c1,
        decrease_factor=decrease_factor,
        max_steps=max_steps,
        initial_step=initial_step,
    )
