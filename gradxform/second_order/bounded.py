"""Box constraints: ``gx.minimize(fun, x0, method="l-bfgs-b", bounds=(lower, upper))``.

L-BFGS-B (Byrd, Lu, Nocedal & Zhu 1995; version 3.0 of Morales & Nocedal
2011, the one scipy runs) minimizes ``f(x)`` subject to ``lower <= x <= upper``.
Each iteration:

1. the **generalized Cauchy point**: the first local minimizer of the
   quadratic model ``g^T s + s^T B s / 2`` along the projected steepest-descent
   path ``P(x - t g)``, found segment by segment between the breakpoints
   where variables reach their bounds; the variables at a bound there are
   fixed for this iteration;
2. **subspace minimization**: the model's minimizer over the free variables
   from the Cauchy point, with the limited-memory ``B`` in compact form
   (``_lbfgsb_model``), projected onto the box
   (or, where that is not a descent direction, cut back at the first bound);
3. a **line search** from ``x`` towards that point (Moré-Thuente, ``ftol =
   1e-3``, ``gtol = 0.9``, ``xtol = 0.1``; ``_lbfgsb_search``),
   never leaving the box (the step is capped at the first bound; the first
   iteration's at 1, i.e. at the Cauchy point), then the memory update
   with the pair ``(s, y)`` unless ``s.y <= eps (-g.s)``.

It stops when the projected gradient's infinity norm is at most
``tol * max(1, its value at x0)`` or when ``(f_prev - f) <= ftol max(|f_prev|,
|f|, 1)`` with ``ftol = 2.2e-9`` (scipy's default ``factr = 1e7`` times the
float64 epsilon); both are :attr:`Status.SUCCESS`. A line search that fails
refreshes the memory and tries again from steepest descent, and fails the
solve (``LINESEARCH_FAILED``) when that was already the case; a failed
factorisation refreshes the memory too, as scipy does. A trial where ``f``
or its gradient is not finite is halved towards the best step so far (and no
step that far is tried again); scipy's search instead interpolates through
the infinity to a NaN step, falls back on the start of the search, and then
stops the solve with its relative-reduction test (no decrease) where the
gradient is not small: on ``jennrich_sampson/free`` and ``osborne1/lower``
of ``benchmarks/bounded.py`` it stops at f = 214.3 and 1.613 where this
search goes on to 124.36 and 1.476.

Everything is one jitted loop over flat vectors with masks instead of index
lists, so the shapes never depend on the active set: it runs under ``jit``
and ``vmap`` (over starts, data or bounds).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradxform import checks, curvature, tree
from gradxform.convolutions import canonical_convolutions
from gradxform.second_order import _lbfgsb_model as model
from gradxform.second_order import _lbfgsb_search as search
from gradxform.second_order import _tree, solution
from gradxform.second_order._packed import packed_while_loop
from gradxform.second_order.minimize import _check_args, _check_runtime
from gradxform.second_order.solution import _RUNNING, History, Solution, Status

__all__ = ["FTOL", "minimize_bounded"]

FTOL = 2.220446049250313e-09
"""The relative-reduction test's tolerance: scipy's default ``factr * eps = 1e7 * 2.2e-16``."""

_LS_FTOL, _LS_GTOL, _LS_XTOL = 1e-3, 0.9, 0.1  # the line search's constants in L-BFGS-B
_BIG_STEP = 1e10


class _Settings(NamedTuple):
    memory_size: int
    max_linesearch_steps: int
    history_length: int


class _Problem(NamedTuple):
    settings: _Settings
    value_and_grad: Any
    box: model.Box
    constrained: jax.Array
    boxed: jax.Array
    tol: jax.Array
    maxiter: jax.Array
    eps: Any


class _State(NamedTuple):
    k: jax.Array  # iterations (accepted steps)
    passes: jax.Array  # loop passes: iterations plus restarts
    nfev: jax.Array
    status: jax.Array
    test: jax.Array  # which test stopped a success (Solution.stopping_test)
    x: jax.Array
    f: jax.Array
    g: jax.Array
    pgnorm: jax.Array  # infinity norm of the projected gradient at x
    pgtol: jax.Array
    mem: model.Compact
    hist_f: jax.Array
    hist_g: jax.Array


class _Search(NamedTuple):
    i: jax.Array  # trials (scipy's ``ifun``, which ``maxls`` bounds)
    evals: jax.Array  # evaluations: a trial at the step just evaluated needs none
    stp: jax.Array  # the next trial (the answer once done)
    state: search.SearchState
    x: jax.Array
    f: jax.Array
    g: jax.Array
    gd: jax.Array
    finite: jax.Array
    cap: jax.Array  # steps at or beyond a non-finite trial are not tried again
    done: jax.Array
    failed: jax.Array


def projected_gradient_norm(x, g, box: model.Box) -> jax.Array:
    """``max_i |P(x - g)_i - x_i|`` with ``P`` the projection on the box (scipy's ``projgr``)."""
    pg = jnp.where(g < 0, jnp.where(box.has_upper, jnp.maximum(x - box.upper, g), g), g)
    pg = jnp.where(g >= 0, jnp.where(box.has_lower, jnp.minimum(x - box.lower, g), g), pg)
    return jnp.max(jnp.abs(jnp.where(jnp.isnan(g), jnp.nan, pg)))


def _direction(problem: _Problem, s: _State):
    """``(z, ok)``: the Cauchy point, then the subspace minimizer from it.

    Without bounds and with a memory the Cauchy point is skipped (``z = x``,
    every variable free), so the step is plain L-BFGS's. ``ok`` is False where
    a factorisation failed.
    """
    box, mem = problem.box, s.mem
    xcp, c, free = model.cauchy_point(s.x, s.g, box, mem, problem.eps)
    skip = ~problem.constrained & (mem.col > 0)
    xcp = jnp.where(skip, s.x, xcp)
    c = jnp.where(skip, 0, c)
    free = jnp.where(skip, True, free)
    z, ok = model.subspace_step(s.x, s.g, xcp, c, free, box, mem)
    use = jnp.any(free) & (mem.col > 0)
    return jnp.where(use, z, xcp), ok | ~use


def _first_step(problem: _Problem, s: _State, d):
    """``(stp, stpmax)``: the first trial and the largest step that stays in the box."""
    box = problem.box
    down = box.has_lower & (d < 0)
    up = box.has_upper & (d > 0)
    gap = jnp.where(down, box.lower - s.x, box.upper - s.x)
    ratio = jnp.where(
        down,
        jnp.where(gap >= 0, 0, gap / d),
        jnp.where(up, jnp.where(gap <= 0, 0, gap / d), jnp.inf),
    )
    big = jnp.asarray(_BIG_STEP, s.f.dtype)
    to_box = jnp.where(s.k == 0, 1, jnp.minimum(big, jnp.min(ratio)))
    stpmax = jnp.where(problem.constrained, to_box, big)
    dnorm = jnp.linalg.norm(d)
    stp = jnp.where((s.k == 0) & ~problem.boxed, jnp.minimum(1 / dnorm, stpmax), 1)
    return jnp.minimum(stp, stpmax), stpmax


def _search_body(problem: _Problem, s: _State, z, d, stpmax, ls: _Search) -> _Search:
    """One trial of the line search: evaluate at ``ls.stp``, then the Moré-Thuente update."""
    box = problem.box
    stepped = jnp.clip(s.x + ls.stp * d, box.lower, box.upper)
    x = jnp.where(ls.stp == 1, z, stepped)
    f, g = problem.value_and_grad(x)
    gd = jnp.vdot(g, d)
    finite = jnp.isfinite(f) & jnp.all(jnp.isfinite(g))
    constants = dict(ftol=_LS_FTOL, gtol=_LS_GTOL, xtol=_LS_XTOL, stpmin=0, stpmax=stpmax)
    state, new, done, _ = search.update(ls.state, ls.stp, f, gd, **constants)
    # the next trial is this step again (the search fell back on its best step, which was
    # this one): its values are known, so that trial is taken now, with no evaluation (scipy
    # does not call fun again either: its objective wrapper remembers the last point)
    again = ~done & (new == ls.stp)
    state_again, new_again, done_again, _ = search.update(state, new, f, gd, **constants)
    state = jax.tree.map(lambda a, b: jnp.where(again, a, b), state_again, state)
    new, done = jnp.where(again, new_again, new), jnp.where(again, done_again, done)
    # a non-finite trial: halve towards the best step, and never go that far again
    cap = jnp.where(finite, ls.cap, jnp.minimum(ls.cap, ls.stp))
    stx = ls.state.stx
    new = jnp.where(finite, new, stx + 0.5 * (ls.stp - stx))
    new = jnp.where(new >= cap, stx + 0.5 * (cap - stx), new)
    state = jax.tree.map(lambda a, b: jnp.where(finite, a, b), state, ls.state)
    done = done & finite
    i = ls.i + 1 + (again & finite).astype(jnp.int32)
    return _Search(
        i,
        ls.evals + 1,
        new,
        state,
        x,
        f,
        g,
        gd,
        finite,
        cap,
        done,
        ~done & (i >= problem.settings.max_linesearch_steps),
    )


def _line_search(problem: _Problem, s: _State, z, ok) -> _Search:
    """The search from ``x`` along ``d = z - x`` (``stp = 1`` is ``z`` itself)."""
    d = z - s.x
    stp, stpmax = _first_step(problem, s, d)
    gd = jnp.vdot(s.g, d)
    ascent = ~(gd < 0)  # scipy's info = -4: no descent (or NaN) along d
    start = _Search(
        i=jnp.zeros([], jnp.int32),
        evals=jnp.zeros([], jnp.int32),
        stp=stp,
        state=search.start(s.f, gd, stp, _LS_FTOL, 0, stpmax),
        x=s.x,
        f=s.f,
        g=s.g,
        gd=gd,
        finite=jnp.array(True),
        cap=jnp.asarray(jnp.inf, s.f.dtype),
        done=jnp.array(False),
        failed=ascent & ok,
    )
    return packed_while_loop(
        lambda ls: ~ls.done & ~ls.failed & ok,
        lambda ls: _search_body(problem, s, z, d, stpmax, ls),
        start,
    )


def _updated_memory(problem: _Problem, s: _State, ls: _Search, d, gdold) -> model.Compact:
    """The memory after an accepted step (the pair skipped where ``s.y <= eps (-g.s)``)."""
    stp = ls.stp
    one = stp == 1
    y = ls.g - s.g
    step = jnp.where(one, d, stp * d)
    dr = jnp.where(one, ls.gd - gdold, (ls.gd - gdold) * stp)
    ddum = jnp.where(one, -gdold, -gdold * stp)
    dtd = jnp.vdot(d, d)
    pushed, _ = model.push(s.mem, step, y, dr, jnp.where(one, dtd, stp * stp * dtd))
    keep = dr <= problem.eps * ddum
    return jax.tree.map(lambda a, b: jnp.where(keep, a, b), s.mem, pushed)


def _accepted(problem: _Problem, s: _State, ls: _Search, d, gdold) -> _State:
    """The state after an accepted step, with the stopping tests."""
    pgnorm = projected_gradient_norm(ls.x, ls.g, problem.box)
    reduction = s.f - ls.f
    small = reduction <= FTOL * jnp.maximum(jnp.maximum(jnp.abs(s.f), jnp.abs(ls.f)), 1)
    k = s.k + 1
    gradient = pgnorm <= s.pgtol  # scipy tests it first
    status = jnp.where(
        gradient | small,
        Status.SUCCESS,
        jnp.where(k >= problem.maxiter, Status.MAXITER, _RUNNING),
    )
    s = s._replace(
        k=k,
        test=jnp.where(gradient, solution.GRADIENT, solution.REDUCTION).astype(jnp.int32),
        x=ls.x,
        f=ls.f,
        g=ls.g,
        pgnorm=pgnorm,
        status=status.astype(jnp.int32),
        mem=_updated_memory(problem, s, ls, d, gdold),
    )
    if problem.settings.history_length:
        s = s._replace(hist_f=s.hist_f.at[k].set(ls.f), hist_g=s.hist_g.at[k].set(pgnorm))
    return s


def _body(problem: _Problem, s: _State) -> _State:
    """One pass: an iteration, or a refresh of the memory after a failure (scipy's ``goto 222``)."""
    z, ok = _direction(problem, s)
    ls = _line_search(problem, s, z, ok)
    d = z - s.x
    succeeded = ok & ls.done
    refresh = ~succeeded & (s.mem.col > 0)
    # otherwise a search from steepest descent failed: the solve ends
    accepted = _accepted(problem, s, ls, d, jnp.vdot(s.g, d))
    reset = s._replace(mem=model.empty(s.x.shape[0], problem.settings.memory_size, s.x.dtype))
    final = s._replace(
        status=jnp.where(ls.finite, Status.LINESEARCH_FAILED, Status.NONFINITE).astype(jnp.int32)
    )
    out = jax.tree.map(
        lambda a, b, c: jnp.where(succeeded, a, jnp.where(refresh, b, c)), accepted, reset, final
    )
    passes = s.passes + 1
    runaway = (passes >= 3 * problem.maxiter + 3) & (out.status == _RUNNING)
    return out._replace(
        passes=passes,
        nfev=s.nfev + ls.evals,
        status=jnp.where(runaway, Status.MAXITER, out.status).astype(jnp.int32),
    )


def _initial(problem: _Problem, x0) -> _State:
    f0, g0 = problem.value_and_grad(x0)
    pgnorm = projected_gradient_norm(x0, g0, problem.box)
    pgtol = problem.tol * jnp.maximum(1, pgnorm)
    finite = jnp.isfinite(f0) & jnp.all(jnp.isfinite(g0))
    status = jnp.where(
        ~finite, Status.NONFINITE, jnp.where(pgnorm <= pgtol, Status.SUCCESS, _RUNNING)
    )
    length = problem.settings.history_length
    nan = jnp.full(length, jnp.nan, f0.dtype)
    zero = jnp.zeros([], jnp.int32)
    return _State(
        k=zero,
        passes=zero,
        nfev=jnp.ones([], jnp.int32),
        status=status.astype(jnp.int32),
        test=zero,
        x=x0,
        f=f0,
        g=g0,
        pgnorm=pgnorm,
        pgtol=pgtol,
        mem=model.empty(x0.shape[0], problem.settings.memory_size, x0.dtype),
        hist_f=nan.at[0].set(f0) if length else nan,
        hist_g=nan.at[0].set(pgnorm) if length else nan,
    )


def _solve(problem: _Problem, x0) -> Solution:
    s = packed_while_loop(
        lambda s: s.status == _RUNNING, lambda s: _body(problem, s), _initial(problem, x0)
    )
    zero = jnp.zeros([], jnp.int32)
    history = History(s.hist_f, s.hist_g, s.k + 1) if problem.settings.history_length else None
    # grad_norm: the projected gradient's infinity norm; no Hessians or products
    test = jnp.where(s.status == Status.SUCCESS, s.test, 0)
    return Solution(s.x, s.f, s.pgnorm, s.k, s.nfev, s.nfev, zero, zero, s.status, test, history)


def _compile(fun, settings: _Settings):
    """The jitted solver ``(x0, lower, upper, args, tol, maxiter) -> Solution``."""

    def solve_tree(x0_tree, lower_tree, upper_tree, args, tol, maxiter):
        def fun_of_params(params):
            return fun(params, *args)

        curvature.check_objective(fun_of_params, x0_tree, "fun")
        x0, unravel = _tree.flat_view(x0_tree)
        lower, upper = (_tree.flat_view(b)[0].astype(x0.dtype) for b in (lower_tree, upper_tree))
        has_lower, has_upper = jnp.isfinite(lower), jnp.isfinite(upper)
        box = model.Box(
            lower, upper, has_lower, has_upper, has_lower & has_upper & (lower == upper)
        )
        problem = _Problem(
            settings=settings,
            value_and_grad=_tree.value_and_grad(lambda v: fun_of_params(unravel(v)), x0.dtype),
            box=box,
            constrained=jnp.any(has_lower | has_upper),
            boxed=jnp.all(has_lower & has_upper),
            tol=jnp.asarray(tol, x0.dtype),
            maxiter=maxiter,
            eps=jnp.finfo(x0.dtype).eps,
        )
        # on CPU, convolutions in the loop in library layout
        out = canonical_convolutions(lambda x0: _solve(problem, x0))(jnp.clip(x0, lower, upper))
        return out._replace(params=unravel(out.params))

    return jax.jit(solve_tree)


_solver = _tree.compile_cache(_compile)


def _side(value, x0, name: str, fill: float):
    """One side of ``bounds`` as a pytree shaped like ``x0`` (a scalar or None broadcast)."""
    leaves, treedef = jax.tree.flatten(x0)
    if value is None:
        return jax.tree.unflatten(treedef, [jnp.full(np.shape(v), fill, v.dtype) for v in leaves])
    if checks.is_real_number(value) or (hasattr(value, "ndim") and np.ndim(value) == 0):
        return jax.tree.unflatten(treedef, [jnp.full(np.shape(v), value, v.dtype) for v in leaves])
    if jax.tree_util.treedef_is_leaf(treedef) and isinstance(value, (list, tuple)):
        value = np.asarray(value)  # a list of numbers for a single array x0
    structure: Any = jax.tree.structure(value)
    if structure != treedef:
        checks.fail(
            f"bounds {name}", f"a scalar, None or a pytree structured like x0 ({treedef})", value
        )
    out = []
    for bound, leaf in zip(jax.tree.leaves(value), leaves):
        if np.ndim(bound) != 0 and np.shape(bound) != np.shape(leaf):
            checks.fail(
                f"bounds {name}",
                f"shaped like x0 leaf by leaf (a leaf of shape {np.shape(leaf)})",
                f"a leaf of shape {np.shape(bound)}",
            )
        out.append(jnp.broadcast_to(jnp.asarray(bound, leaf.dtype), np.shape(leaf)))
    return jax.tree.unflatten(treedef, out)


def _check_bounds(bounds, x0):
    """``(lower, upper)`` pytrees shaped like ``x0``; raises on a bad form or ``lower > upper``."""
    if bounds is None:
        bounds = (None, None)
    if not isinstance(bounds, (tuple, list)) or len(bounds) != 2:
        checks.fail("bounds", "a pair (lower, upper)", bounds, TypeError)
    lower, upper = _side(bounds[0], x0, "lower", -math.inf), _side(bounds[1], x0, "upper", math.inf)
    for path_lo, hi in zip(jax.tree_util.tree_leaves_with_path(lower), jax.tree.leaves(upper)):
        path, lo = path_lo
        if isinstance(lo, jax.core.Tracer) or isinstance(hi, jax.core.Tracer):
            continue
        lo_np, hi_np = np.asarray(lo), np.asarray(hi)
        if np.any(np.isnan(lo_np)) or np.any(np.isnan(hi_np)):
            checks.fail(
                "bounds", "numbers or +-inf, not NaN", f"NaN at {jax.tree_util.keystr(path)}"
            )
        bad = np.argwhere(lo_np > hi_np)
        if bad.size:
            index = [int(i) for i in bad[0]] if lo_np.ndim else ""
            where = f"{jax.tree_util.keystr(path)}{index}"
            checks.fail(
                "bounds",
                "lower <= upper everywhere",
                f"lower {lo_np[tuple(bad[0])]} > upper {hi_np[tuple(bad[0])]} at x0{where}",
            )
    return lower, upper


def minimize_bounded(
    fun,
    x0,
    bounds,
    method: str = "l-bfgs-b",
    *,
    args: Any = (),
    tol: float = 1e-6,
    maxiter: int = 500,
    memory_size: int = 10,
    max_linesearch_steps: int = 30,
    history: bool = False,
) -> Solution:
    """L-BFGS-B: minimizes ``fun(params, *args)`` subject to ``lower <= params <= upper``.

    What :func:`gradxform.minimize` runs for ``method="l-bfgs-b"`` (call it
    through ``minimize``): L-BFGS-B 3.0 (Byrd, Lu, Nocedal & Zhu 1995; Morales
    & Nocedal 2011), the algorithm scipy wraps. Each iteration takes the
    generalized Cauchy point along the projected-gradient path (breakpoint by
    breakpoint), minimizes the compact limited-memory model over the
    variables still free there, projects that point onto the box (or cuts
    the step at the first bound where the projection does not descend), and
    runs the Moré-Thuente line search (``ftol = 1e-3``, ``gtol = 0.9``)
    towards it without leaving the box. ``x0`` outside the box is projected
    onto it first, as scipy does.

    It stops with :attr:`~gradxform.Status.SUCCESS` when the projected
    gradient's infinity norm is at most ``tol * max(1, its value at x0)`` or
    when ``f_prev - f <= FTOL max(|f_prev|, |f|, 1)`` (``FTOL = 2.2e-9``,
    scipy's default ``factr * eps``); ``LINESEARCH_FAILED`` when a search from
    steepest descent (memory refreshed) fails. The solution's ``grad_norm``
    (and the history's) is that projected-gradient norm. ``c1``, ``c2`` and
    the other methods' options of ``minimize`` do not apply.

    Args:
        fun: the objective, ``fun(params, *args) -> scalar``.
        x0: the start, a pytree of real float arrays (its dtype is the working precision).
        bounds: ``(lower, upper)``: each None (no bound), a scalar, or a pytree
            structured like ``x0`` whose leaves are scalars or arrays shaped
            like ``x0``'s; ``-inf`` / ``inf`` entries mean no bound. Checked
            when the call is made (``lower <= upper`` where concrete).
        method: must be ``"l-bfgs-b"``.
        args: ``fun``'s other arguments (a tuple of arrays or pytrees).
        tol: relative projected-gradient tolerance (> 0).
        maxiter: iteration limit (>= 1).
        memory_size: the number of pairs kept (scipy's ``maxcor``).
        max_linesearch_steps: evaluations per line search (scipy's ``maxls``,
            whose default is 20).
        history: also return the value and projected-gradient norm per iteration.

    Returns:
        A :class:`~gradxform.Solution`.
    """
    if method != "l-bfgs-b":
        checks.fail("bounds", "None unless method='l-bfgs-b'", f"bounds with method={method!r}")
    checks.callable_arg("fun", fun, "fun(params, *args) -> scalar")
    tree.check_real_floating(x0, "x0")
    args = _check_args(args)
    runtime = _check_runtime(tol, maxiter, 1e-4, 0.9, checks.boolean("history", history))
    settings = _Settings(
        memory_size=checks.integer("memory_size", memory_size, minimum=1),
        max_linesearch_steps=checks.integer(
            "max_linesearch_steps", max_linesearch_steps, minimum=1
        ),
        history_length=runtime.maxiter + 1 if history else 0,
    )
    lower, upper = _check_bounds(bounds, x0)
    return _solver(fun, settings)(x0, lower, upper, args, runtime.tol, runtime.maxiter)
