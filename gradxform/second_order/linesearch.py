"""Line searches: strong-Wolfe zoom (Nocedal & Wright Alg. 3.5/3.6) and backtracking Armijo.

Two layers: :func:`zoom_search` and :func:`backtracking_search` are pure
functions of ``phi(t) = f(x + t d)`` on pytrees (what :func:`gradxform.minimize`
and the second-order transforms run); the transforms
:func:`scale_by_zoom_linesearch` and :func:`scale_by_backtracking_linesearch`
wrap them for a training loop. The transforms take the extra arguments
``value``, ``grad`` (at ``params``) and ``value_fn`` (the objective; the other
extra arguments it names, e.g. a data batch, are passed on to it), keep the
value and gradient at the accepted point in state fields named ``value`` and
``grad`` (so ``optax.value_and_grad_from_state`` can reuse them), and keep
``c1``, ``c2``, ``initial_step`` (and ``decrease_factor``) as hyperparameters
in the state.

Step sizes, values and slopes are held in one real dtype, float32 or the
widest real parameter dtype, whatever dtype the objective returns; complex
parameters are vectors of ``R^2n`` (slopes ``Re<g, d>``, real step sizes).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform import checks
from gradxform.base import GradientTransformationExtraArgs
from gradxform.hyperparams import Hyperparams, HyperparamState
from gradxform.second_order import _tree
from gradxform.second_order._packed import packed_while_loop

__all__ = [
    "LineSearchResult",
    "Point",
    "ScaleByLinesearchState",
    "ZoomLinesearch",
    "backtracking_search",
    "scale_by_backtracking_linesearch",
    "scale_by_zoom_linesearch",
    "zoom_search",
]


class Point(NamedTuple):
    """A point of the objective, as a search starts from it.

    Attributes:
        x: the parameters (a pytree).
        value: ``f(x)``.
        grad: the gradient at ``x``, shaped like ``x`` (for complex leaves the
            conjugate of ``jax.grad``'s, so ``f(x + t d) ~ f(x) + t Re<grad, d>``).
    """

    x: Any
    value: jax.Array
    grad: Any


class ZoomLinesearch(NamedTuple):
    """The strong-Wolfe search a second-order method runs (:func:`zoom_search`).

    Passed as ``linesearch=`` to :func:`gradxform.lbfgs` and the other
    second-order optimizers; ``c1``, ``c2`` and ``initial_step`` become
    hyperparameters in the transform's state (``gx.set_hyperparams``).

    Attributes:
        c1: sufficient-decrease constant, ``0 < c1 < c2``.
        c2: curvature constant, ``c2 < 1``.
        initial_step: the first trial step before the method's first-step rule.
        max_steps: the most evaluations per search (>= 1).
    """

    c1: Any = 1e-4
    c2: Any = 0.9
    initial_step: Any = 1.0
    max_steps: int = 30


class LineSearchResult(NamedTuple):
    """What a line search along ``d`` from ``x`` found.

    Attributes:
        step: the accepted step size ``t`` (0 when no point decreased ``f``).
        value: ``f(x + t d)``.
        grad: the gradient at ``x + t d``, shaped like ``x``.
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
    grad: Any
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


class _Bracket(NamedTuple):
    """The interval the zoom phase shrinks: ``lo`` meets Armijo with the lowest ``f`` seen."""

    lo: jax.Array
    f_lo: jax.Array
    d_lo: jax.Array
    g_lo: Any
    hi: jax.Array
    f_hi: jax.Array
    d_hi: jax.Array


class _Trial(NamedTuple):
    """One evaluated trial step and the tests it passed."""

    t: jax.Array
    f: jax.Array
    d: jax.Array  # phi'(t) = Re<grad f(x + t d), d>
    g: Any
    finite: jax.Array
    armijo: jax.Array
    accept: jax.Array


class _Zoom(NamedTuple):
    i: jax.Array
    zooming: jax.Array
    done: jax.Array
    t: jax.Array  # next trial
    t_prev: jax.Array
    f_prev: jax.Array
    d_prev: jax.Array
    g_prev: Any
    bracket: _Bracket
    best_t: jax.Array
    best_f: jax.Array
    best_g: Any
    wolfe: jax.Array


class _Line(NamedTuple):
    """The fixed data of one search along ``d`` from ``x``."""

    phi: Any  # t -> (f(x + t d), phi'(t) = Re<grad f(x + t d), d>, grad f(x + t d))
    dtype: Any  # of step sizes, values and slopes
    value: jax.Array
    grad: Any
    slope: jax.Array
    c1: jax.Array
    c2: jax.Array
    noise: jax.Array  # f's rounding error at x: below it a decrease cannot be decided
    max_step_size: Any
    interpolate_first_overshoot: Any


def _line(value_and_grad, start: Point, direction: Any, c1, c2=0.0, **options) -> _Line:
    """``phi`` and the constants of a search, all scalars in the iteration's real dtype."""
    x = start.x
    dtype = _tree.scalar_dtype(x)
    value = jnp.asarray(start.value).astype(dtype)
    grad = _tree.cast(start.grad, x)

    def phi(t):
        f, g = value_and_grad(_tree.axpy(t, direction, x))
        return jnp.asarray(f).astype(dtype), _tree.inner(g, direction, dtype), _tree.cast(g, x)

    return _Line(
        phi=phi,
        dtype=dtype,
        value=value,
        grad=grad,
        slope=_tree.inner(grad, direction, dtype),
        c1=jnp.asarray(c1, dtype),
        c2=jnp.asarray(c2, dtype),
        noise=jnp.maximum(1e-6, jnp.sqrt(jnp.finfo(dtype).eps)) * jnp.abs(value),
        max_step_size=options.get("max_step_size", jnp.inf),
        interpolate_first_overshoot=options.get("interpolate_first_overshoot", False),
    )


def _evaluate(line: _Line, t) -> _Trial:
    """``phi(t)`` and the strong Wolfe tests, or the approximate ones near a minimum.

    Near a minimum the decrease Armijo asks for, ``c1 t |g.d|``, is below
    ``f``'s rounding error and cannot be decided; there the curvature
    condition and ``f`` within that error of ``f(x)`` suffice (in the spirit
    of Hager & Zhang's approximate Wolfe conditions).
    """
    f, d, g = line.phi(t)
    finite = jnp.isfinite(f) & jnp.isfinite(d)
    armijo = finite & (f <= line.value + line.c1 * t * line.slope)
    curvature = finite & (jnp.abs(d) <= -line.c2 * line.slope)
    approximate = (
        curvature & (line.c1 * t * -line.slope <= line.noise) & (f <= line.value + line.noise)
    )
    accept = (armijo & curvature) | approximate
    return _Trial(t, f, d, g, finite, armijo, accept)


def _bracketing(s: _Zoom, tr: _Trial) -> tuple[_Bracket, jax.Array]:
    """Alg. 3.5: a bracket ends at ``t`` once ``t`` fails Armijo, stops decreasing or turns up."""
    too_far = (~tr.armijo) | ((s.i > 0) & (tr.f >= s.f_prev))
    step = _Bracket(tr.t, tr.f, tr.d, tr.g, s.t_prev, s.f_prev, s.d_prev)
    back = _Bracket(s.t_prev, s.f_prev, s.d_prev, s.g_prev, tr.t, tr.f, tr.d)
    start_zoom = (~tr.accept) & (too_far | (tr.d >= 0))
    return _tree.select(too_far, back, step), start_zoom


def _zooming(b: _Bracket, tr: _Trial) -> _Bracket:
    """Alg. 3.6: ``t`` replaces ``hi``, or replaces ``lo`` (the old ``lo`` becoming ``hi``
    when the derivative at ``t`` points away from ``hi``)."""
    hi_is_t = ~tr.armijo | (tr.f >= b.f_lo)
    flip = (~hi_is_t) & (tr.d * (b.hi - b.lo) >= 0)
    as_hi = b._replace(hi=tr.t, f_hi=tr.f, d_hi=tr.d)
    new_hi = _tree.select(flip, (b.lo, b.f_lo, b.d_lo), (b.hi, b.f_hi, b.d_hi))
    as_lo = _Bracket(tr.t, tr.f, tr.d, tr.g, *new_hi)
    return _tree.select(hi_is_t, as_hi, as_lo)


def _zoom_body(line: _Line, s: _Zoom) -> _Zoom:
    """One trial: evaluate, update the best point and the bracket, choose the next trial."""
    tr = _evaluate(line, s.t)
    better = tr.armijo & (tr.f < s.best_f)
    bracketed, start_zoom = _bracketing(s, tr)
    zoomed = _zooming(s.bracket, tr)
    zooming = s.zooming | start_zoom
    b = _tree.select(s.zooming, zoomed, bracketed)
    # a non-finite end of the bracket has no usable derivative: bisect towards it
    cubic = _cubic_minimizer(b.lo, b.f_lo, b.d_lo, b.hi, b.f_hi, b.d_hi)
    cubic = jnp.where(jnp.isfinite(b.f_hi) & jnp.isfinite(b.d_hi), cubic, jnp.nan)
    first_overshoot = line.interpolate_first_overshoot & (s.i == 0) & ~tr.armijo
    grow = jnp.minimum(10 * tr.t, line.max_step_size)
    next_t = jnp.where(zooming, _safeguarded(b.lo, b.hi, cubic, first_overshoot), grow)
    keep_best = better | tr.accept
    return _Zoom(
        i=s.i + 1,
        zooming=zooming,
        done=tr.accept,
        t=next_t,
        t_prev=tr.t,
        f_prev=jnp.where(tr.finite, tr.f, jnp.inf),
        d_prev=tr.d,
        g_prev=tr.g,
        bracket=b,
        best_t=jnp.where(keep_best, tr.t, s.best_t),
        best_f=jnp.where(keep_best, tr.f, s.best_f),
        best_g=_tree.select(keep_best, tr.g, s.best_g),
        wolfe=tr.accept,
    )


def _first_trial(line: _Line, initial_step) -> _Zoom:
    """The carry before the first trial: the bracket is the point ``t = 0``."""
    zero = jnp.zeros([], line.dtype)
    return _Zoom(
        i=jnp.zeros([], jnp.int32),
        zooming=jnp.array(False),
        done=jnp.array(False),
        t=jnp.asarray(initial_step).astype(line.dtype),
        t_prev=zero,
        f_prev=line.value,
        d_prev=line.slope,
        g_prev=line.grad,
        bracket=_Bracket(zero, line.value, line.slope, line.grad, zero, line.value, line.slope),
        best_t=zero,
        best_f=line.value,
        best_g=line.grad,
        wolfe=jnp.array(False),
    )


def zoom_search(
    value_and_grad,
    start: Point,
    direction: Any,
    *,
    initial_step=1.0,
    c1=1e-4,
    c2=0.9,
    max_steps: int = 30,
    max_step_size: float = 1e10,
    interpolate_first_overshoot=False,
) -> LineSearchResult:
    """Strong-Wolfe line search: bracketing (N&W Alg. 3.5), then zoom (Alg. 3.6).

    Finds ``t`` with ``f(x + t d) <= f(x) + c1 t <g, d>`` and
    ``|<grad f(x + t d), d>| <= c2 |<g, d>|``. Trials inside a bracket come
    from safeguarded cubic interpolation; bracketing grows the step tenfold; a
    non-finite value or slope counts as "too far". After ``max_steps``
    evaluations without a Wolfe point the best decreasing point is returned
    (``wolfe=False``). Where the decrease Armijo asks for, ``c1 t |<g, d>|``,
    is below ``max(1e-6, sqrt(eps)) |f(x)|`` (f's rounding error), a step
    meeting the curvature condition with ``f`` within that error of ``f(x)``
    is accepted (as Hager & Zhang's approximate Wolfe conditions).

    Args:
        value_and_grad: ``x -> (f(x), gradient)`` on pytrees shaped like ``x``;
            for complex leaves the gradient is the conjugate of ``jax.grad``'s.
        start: the :class:`Point` ``x`` with ``f(x)`` and its gradient.
        direction: the descent direction ``d``, shaped like ``x``.
        initial_step: the first trial step (may be traced).
        c1: sufficient-decrease constant, ``0 < c1 < c2`` (may be traced).
        c2: curvature constant, ``c2 < 1`` (may be traced).
        max_steps: the most evaluations (a Python int >= 1).
        max_step_size: bracketing never tries a step beyond this.
        interpolate_first_overshoot: (bool, may be traced) when the very first
            trial overshoots (no decrease), take the cubic's minimizer even near
            0 (1% of the bracket from either end) rather than halving towards
            it, as MINPACK's ``dcstep``: for a first steepest-descent step of
            unknown scale the interpolant is the right scale.

    Returns:
        A :class:`LineSearchResult`; its scalars are in the real dtype of the
        parameters (at least float32).
    """
    max_steps = checks.integer("max_steps", max_steps, minimum=1)
    line = _line(
        value_and_grad,
        start,
        direction,
        c1,
        c2,
        max_step_size=max_step_size,
        interpolate_first_overshoot=interpolate_first_overshoot,
    )
    out = packed_while_loop(
        lambda s: (~s.done) & (s.i < max_steps),
        lambda s: _zoom_body(line, s),
        # the first trial runs before the loop: often it is all the search takes
        _zoom_body(line, _first_trial(line, initial_step)),
    )
    return LineSearchResult(
        step=out.best_t,
        value=out.best_f,
        grad=out.best_g,
        num_evals=out.i,
        wolfe=out.wolfe,
        decreased=out.wolfe | (out.best_f < line.value),
    )


def backtracking_search(
    value_and_grad,
    start: Point,
    direction: Any,
    *,
    c1=1e-4,
    decrease_factor=0.5,
    initial_step=1.0,
    max_steps: int = 30,
) -> LineSearchResult:
    """Armijo backtracking: ``t <- decrease_factor t`` until ``f(x + t d) <= f(x) + c1 t <g, d>``.

    Args:
        value_and_grad: ``x -> (f(x), gradient)``, as for :func:`zoom_search`.
        start: the :class:`Point` ``x`` with ``f(x)`` and its gradient.
        direction: the direction ``d``, shaped like ``x``.
        c1: sufficient-decrease constant in (0, 1) (may be traced).
        decrease_factor: the factor in (0, 1) a rejected step is multiplied by.
        initial_step: the first trial step (may be traced).
        max_steps: the most evaluations (a Python int >= 1).

    Returns:
        A :class:`LineSearchResult`; ``step`` is 0 when no trial met Armijo.
    """
    max_steps = checks.integer("max_steps", max_steps, minimum=1)
    line = _line(value_and_grad, start, direction, c1)
    factor = jnp.asarray(decrease_factor, line.dtype)

    def body(s):
        i, t, _, _, _ = s
        f, _, g = line.phi(t)
        ok = jnp.isfinite(f) & (f <= line.value + line.c1 * t * line.slope) & _tree.all_finite(g)
        return i + 1, jnp.where(ok, t, factor * t), f, g, ok

    t0 = jnp.asarray(initial_step).astype(line.dtype)
    init = (jnp.zeros([], jnp.int32), t0, line.value, line.grad, jnp.array(False))
    i, t, f, g, ok = jax.lax.while_loop(lambda s: (~s[4]) & (s[0] < max_steps), body, init)
    return LineSearchResult(
        step=jnp.where(ok, t, 0),
        value=jnp.where(ok, f, line.value),
        grad=_tree.select(ok, g, line.grad),
        num_evals=i,
        wolfe=ok,
        decreased=ok & (f < line.value),
    )


class ScaleByLinesearchState(NamedTuple):
    """State of the line-search transforms.

    Attributes:
        value: the objective at the accepted point (for ``value_and_grad_from_state``).
        grad: its gradient there, shaped like the params (as ``jax.grad`` returns it).
        hyperparams: ``c1``, ``c2`` (zoom) or ``decrease_factor`` (backtracking),
            and ``initial_step``.
    """

    value: jax.Array
    grad: Any
    hyperparams: HyperparamState


def _linesearch_transform(search, name: str, max_steps: int, **hyperparams: float):
    hp = Hyperparams(**hyperparams)

    def init_fn(params):
        return ScaleByLinesearchState(
            value=jnp.asarray(jnp.inf, _tree.scalar_dtype(params)),
            grad=_tree.zeros(params),
            hyperparams=hp.init(_tree.dtype_proxy(params)),
        )

    def update_fn(updates, state, params=None, *, value=None, grad=None, value_fn=None, **extra):
        _, evaluate, dtype = _tree.evaluation(value_fn, extra, params, name)
        values, hyper = hp.step(state.hyperparams)
        f0, g0 = _tree.start_point(evaluate, params, value, grad, dtype)
        options = {key: values[key] for key in hyperparams}
        result = search(evaluate, Point(params, f0, g0), updates, max_steps=max_steps, **options)
        step = jax.tree.map(lambda u: result.step.astype(u.real.dtype) * u, updates)
        return step, ScaleByLinesearchState(result.value, _tree.conj(result.grad), hyper)

    return GradientTransformationExtraArgs(init_fn, update_fn)


def scale_by_zoom_linesearch(
    max_steps: int = 30, *, c1: float = 1e-4, c2: float = 0.9, initial_step: float = 1.0
) -> GradientTransformationExtraArgs:
    """``u <- t u`` with ``t`` meeting the strong Wolfe conditions along ``u``.

    The step comes from :func:`zoom_search`.

    ``u`` is a descent direction (the output of ``scale_by_learning_rate``).
    ``update`` needs the extra argument ``value_fn`` (the objective; extra
    arguments it names are passed on to it), and ``value`` and ``grad`` at
    ``params`` (computed if omitted).

    Args:
        max_steps: the most evaluations per search.
        c1: sufficient-decrease constant, a hyperparameter in the state.
        c2: curvature constant, ``c1 < c2 < 1``, a hyperparameter in the state.
        initial_step: the first trial step, a hyperparameter in the state.

    Returns:
        The transform; its state is a :class:`ScaleByLinesearchState`.
    """
    c1, c2 = checks.wolfe_constants(c1, c2)
    initial_step = checks.real("initial_step", initial_step, lower=0, lower_open=True)
    max_steps = checks.integer("max_steps", max_steps, minimum=1)
    return _linesearch_transform(
        zoom_search, "scale_by_zoom_linesearch", max_steps, c1=c1, c2=c2, initial_step=initial_step
    )


def scale_by_backtracking_linesearch(
    max_steps: int = 30,
    *,
    c1: float = 1e-4,
    decrease_factor: float = 0.5,
    initial_step: float = 1.0,
) -> GradientTransformationExtraArgs:
    """``u <- t u`` with ``t = initial_step * decrease_factor^k`` the first to meet Armijo.

    See :func:`backtracking_search`; ``update`` takes the same extra arguments
    as :func:`scale_by_zoom_linesearch`.

    Args:
        max_steps: the most evaluations per search.
        c1: sufficient-decrease constant, a hyperparameter in the state.
        decrease_factor: the factor in (0, 1) per rejected trial, a hyperparameter.
        initial_step: the first trial step, a hyperparameter in the state.

    Returns:
        The transform; its state is a :class:`ScaleByLinesearchState`.
    """
    c1, _ = checks.wolfe_constants(c1)
    decrease_factor = checks.real(
        "decrease_factor", decrease_factor, lower=0, upper=1, lower_open=True, upper_open=True
    )
    initial_step = checks.real("initial_step", initial_step, lower=0, lower_open=True)
    max_steps = checks.integer("max_steps", max_steps, minimum=1)
    return _linesearch_transform(
        backtracking_search,
        "scale_by_backtracking_linesearch",
        max_steps,
        c1=c1,
        decrease_factor=decrease_factor,
        initial_step=initial_step,
    )
