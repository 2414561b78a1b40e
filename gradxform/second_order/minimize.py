"""``gx.minimize``: full-batch minimization with Newton, Newton-CG, BFGS or L-BFGS.

One jitted ``lax.while_loop`` over a flat vector (the pytree ``x0`` is
flattened once at the boundary); each loop iteration is
:func:`gradxform.second_order.iteration.step` with the method's record from
:mod:`gradxform.second_order.methods`, the same iteration the ``scale_by_*``
transforms run. The loop itself knows no method: the record supplies the
model, direction, first-step, restart and stationarity rules. Works under
``vmap`` over starting points. Never hangs (every loop is bounded) and never
returns NaN silently: a non-finite value, a failed line search, ``maxiter`` or
stagnation at floating-point resolution is a status in the returned
:class:`Solution`.

The loop is shaped for XLA:CPU, where small solves are bound by how many
kernels the runtime dispatches rather than by arithmetic: the direction at an
iterate is computed when the iterate is accepted and carried, so the body is
straight-line code (step, then the next direction and the stopping tests)
with no conditional around it; the line search's first trial runs before its
loop, which usually has nothing left to do; and both loops carry their
scalars stacked per dtype (:func:`~gradxform.second_order._packed.packed_while_loop`).
"""

from __future__ import annotations

import functools
import numbers
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradxform import checks, curvature, tree
from gradxform.convolutions import canonical_convolutions
from gradxform.second_order import _tree, implicit, iteration
from gradxform.second_order import methods as meth
from gradxform.second_order import trust_region as tr
from gradxform.second_order._packed import packed_while_loop
from gradxform.second_order.linesearch import Point, ZoomLinesearch
from gradxform.second_order.solution import _RUNNING, MESSAGES, History, Solution, Status

# MESSAGES: re-exported (``gx.second_order.minimize.MESSAGES`` predates the solution module)

__all__ = ["MESSAGES", "History", "Solution", "Status", "minimize"]

METHODS: dict[str, Any] = {  # name -> settings -> meth.Method or tr.TrustMethod
    "lbfgs": lambda s: meth.lbfgs_method(s.memory_size),
    "bfgs": lambda s: meth.bfgs_method(s.initial_scaling),
    "newton": lambda s: meth.newton_method(),
    "newton-cg": lambda s: meth.newton_cg_method(s.max_cg_steps),
    "trust-exact": lambda s: tr.exact_method(),
    "trust-ncg": lambda s: tr.ncg_method(s.max_cg_steps),
}


class _Settings(NamedTuple):
    """What fixes the compiled solver: its cache key, with the objective."""

    method: str
    memory_size: int
    max_linesearch_steps: int
    max_cg_steps: int | None
    initial_scaling: bool
    history_length: int  # maxiter + 1 with history=True (the buffers' shape), else 0
    float64_accumulation: bool
    implicit_diff: str


class _Runtime(NamedTuple):
    """The numeric settings the compiled solver takes as arguments (no recompiling)."""

    tol: Any
    maxiter: Any
    c1: Any
    c2: Any


class _Loop(NamedTuple):
    k: jax.Array
    point: Point
    previous_value: jax.Array
    status: jax.Array
    nfev: jax.Array
    nhev: jax.Array
    nhvp: jax.Array
    model: Any
    d: jax.Array  # the direction at the point (computed when the point is accepted)
    stall: jax.Array  # consecutive iterations without a new best value or gradient norm
    f_best: jax.Array
    g_best: jax.Array
    hist_f: jax.Array
    hist_g: jax.Array


class _Problem(NamedTuple):
    """The fixed data of one traced solve."""

    method: meth.Method
    settings: _Settings
    runtime: _Runtime
    objective: Any  # f on flat vectors
    value_and_grad: Any
    search: ZoomLinesearch
    model_dtype: Any  # float64 with float64_accumulation, else None (the iterate's)


def _number(name: str, value, check, what: str, kind):
    """``check(name, value)``; a traced value (``minimize`` inside ``jax.jit``) can only be
    checked to be a scalar of ``kind``."""
    if not isinstance(value, jax.core.Tracer):
        return check(name, value)
    if jnp.ndim(value) != 0 or not jnp.issubdtype(value.dtype, kind):
        checks.fail(name, what, value, TypeError)
    return value


def _check_runtime(tol, maxiter, c1, c2, history: bool) -> _Runtime:
    """The checked runtime settings (any of them may be traced, except ``maxiter`` with
    ``history``, which fixes the history's length)."""
    if history and isinstance(maxiter, jax.core.Tracer):
        checks.fail("maxiter", "a Python int with history=True (it fixes its length)", maxiter)
    real = functools.partial(_number, what="a real scalar", kind=jnp.floating)
    if isinstance(c1, jax.core.Tracer) or isinstance(c2, jax.core.Tracer):
        unit = functools.partial(checks.real, lower=0, upper=1, lower_open=True, upper_open=True)
        c1, c2 = real("c1", c1, unit), real("c2", c2, unit)
    else:
        c1, c2 = checks.wolfe_constants(c1, c2)
    return _Runtime(
        tol=real("tol", tol, functools.partial(checks.real, lower=0, lower_open=True)),
        maxiter=_number(
            "maxiter",
            maxiter,
            functools.partial(checks.integer, minimum=1),
            what="an integer scalar",
            kind=jnp.integer,
        ),
        c1=c1,
        c2=c2,
    )


def _check_settings(*args) -> tuple[_Settings, _Runtime]:
    """The checked settings of ``minimize``'s scalar arguments (see ``_settings``)."""
    method, tol, maxiter, memory_size, c1, c2, steps, cg_steps, implicit_diff, *flags, x64 = args
    checks.choice("method", method, tuple(METHODS))
    history, float64_accumulation, initial_scaling = (
        checks.boolean(name, value)
        for name, value in zip(("history", "float64_accumulation", "initial_scaling"), flags)
    )
    if float64_accumulation and not x64:
        checks.fail(
            "float64_accumulation",
            "False unless jax_enable_x64 is set (jax.config.update('jax_enable_x64', True))",
            float64_accumulation,
        )
    runtime = _check_runtime(tol, maxiter, c1, c2, history)
    settings = _Settings(
        method=method,
        memory_size=checks.integer("memory_size", memory_size, minimum=1),
        max_linesearch_steps=checks.integer("max_linesearch_steps", steps, minimum=1),
        max_cg_steps=None
        if cg_steps is None
        else checks.integer("max_cg_steps", cg_steps, minimum=1),
        initial_scaling=initial_scaling,
        history_length=runtime.maxiter + 1 if history else 0,
        float64_accumulation=float64_accumulation,
        implicit_diff=checks.choice("implicit_diff", implicit_diff, implicit.METHODS),
    )
    with jax.ensure_compile_time_eval():  # arrays even inside jit: the cache holds no tracer
        arrays = (v if isinstance(v, jax.core.Tracer) else jnp.asarray(v) for v in runtime)
        return settings, _Runtime(*arrays)  # arrays take jit's fast path; Python scalars don't


_cached_settings = functools.lru_cache(maxsize=256, typed=True)(_check_settings)


def _settings(*args) -> tuple[_Settings, _Runtime]:
    """:func:`_check_settings`, remembered for hashable arguments: a repeated solve pays
    for its checks once (they cost about as much as a small solve's dispatch)."""
    try:
        hash(args)
    except TypeError:
        return _check_settings(*args)
    return _cached_settings(*args)


def _check_args(args) -> tuple:
    """``args`` as a tuple (a single value is wrapped, as scipy does) of array pytrees."""
    args = args if isinstance(args, tuple) else (args,)
    for leaf in jax.tree.leaves(args):
        if not isinstance(leaf, (jax.Array, np.ndarray, np.generic, numbers.Number)):
            checks.fail("args", "a tuple of arrays or pytrees of arrays", args, TypeError)
    return args


def minimize(
    fun,
    x0,
    method: str = "lbfgs",
    *,
    args: Any = (),
    bounds: Any = None,
    tol: float = 1e-6,
    maxiter: int = 500,
    memory_size: int = 10,
    c1: float = 1e-4,
    c2: float = 0.9,
    max_linesearch_steps: int = 30,
    max_cg_steps: int | None = None,
    initial_scaling: bool = False,
    history: bool = False,
    float64_accumulation: bool = False,
    implicit_diff: str = "cg",
) -> Solution:
    """Minimizes ``fun(params, *args) -> scalar`` from ``x0`` (any pytree of float arrays).

    Stops with :attr:`Status.SUCCESS` when ``|grad| <= tol * max(1, |grad(x0)|)``
    (2-norms) and, for ``"newton"``, the Hessian has no eigenvalue below
    ``-sqrt(eps) max(1, |lam|max)``, so a Newton solve never ends at a saddle
    or a maximum. Each iteration is the one :func:`gradxform.lbfgs`,
    :func:`gradxform.bfgs`, :func:`gradxform.newton` and
    :func:`gradxform.newton_cg` take per ``update``.

    Compiled once per ``fun`` (its identity), ``method``, shape-fixing option
    (``memory_size``, ``max_linesearch_steps``, ``max_cg_steps``, the flags,
    ``maxiter`` with ``history=True``) and layout of ``x0`` and ``args``: the
    data in ``args``, ``x0``, ``tol``, ``maxiter``, ``c1`` and ``c2`` are
    arguments, so changing them does not recompile (a closure made afresh per
    solve does). Works inside ``jax.jit``, where those may be traced
    (``maxiter`` not with ``history=True``), and under ``jax.vmap``.

    Args:
        fun: the objective, ``fun(params, *args) -> scalar`` (scipy's convention).
        x0: the start; its dtype (float32 or float64) is the working precision.
        method: ``"lbfgs"`` (memory ``memory_size``), ``"bfgs"`` (dense inverse
            Hessian, O(n^2) per iteration), ``"newton"`` (exact Hessian,
            eigenvalue-modified), ``"newton-cg"`` (truncated CG with
            Hessian-vector products, at most ``max_cg_steps``, default ``20 n``);
            trust regions (scipy's radius rule, :mod:`~gradxform.second_order.trust_region`):
            ``"trust-exact"`` (Moré-Sorensen steps on the dense Hessian) and ``"trust-ncg"``
            (Steihaug-Toint CG on Hessian-vector products, at most ``max_cg_steps``).
        args: the data, ``fun``'s other arguments: a tuple of arrays or pytrees
            of arrays (a value that is not a tuple is passed as ``(args,)``).
        bounds: ``(lower, upper)`` for ``method="l-bfgs-b"`` (box-constrained
            L-BFGS-B; the guide's *Bounds* section says how ``tol`` and the
            options apply): pytrees like ``x0`` or scalars, ``+-inf`` or None
            for no bound.
        tol: relative gradient tolerance (> 0).
        maxiter: iteration limit (>= 1).
        memory_size: L-BFGS's number of pairs (>= 1).
        c1: sufficient-decrease constant of the strong-Wolfe line search.
        c2: its curvature constant (``0 < c1 < c2 < 1``).
        max_linesearch_steps: evaluations per line search.
        max_cg_steps: Newton-CG's and trust-ncg's CG steps per iteration (default ``20 n``).
        initial_scaling: BFGS: ``H_0 = (s.y / y.y) I`` at the first update
            (N&W eq. 6.20) instead of ``I``.
        history: also return the value and gradient norm at every iteration.
        float64_accumulation: keep the quasi-Newton curvature model (the BFGS
            inverse Hessian, the L-BFGS pairs) and its products in float64 while
            the objective runs in ``x0``'s dtype (needs ``jax_enable_x64``).
            This is scipy's arrangement, which keeps its whole state in
            float64: with float32 objectives it stops rounding errors in the
            O(n^2) model from steering the iterates.
        implicit_diff: how ``jax.grad``, ``jax.jacfwd`` and ``jax.jacrev`` differentiate
            ``params`` with respect to ``args``: by the implicit function theorem, a solve
            with the Hessian at the solution by ``"cg"`` (conjugate gradients on
            Hessian-vector products) or ``"dense"`` (small n); see the guide's
            "Differentiating through a solution".

    Returns:
        A :class:`Solution`.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> rosenbrock = lambda p, a: (a - p["x"]) ** 2 + 100 * (p["y"] - p["x"] ** 2) ** 2
        >>> x0 = {"x": jnp.array(-1.2), "y": jnp.array(1.0)}
        >>> sol = gx.minimize(rosenbrock, x0, args=(jnp.array(1.0),))  # fun(x0, 1.0)
        >>> sol.message
        'converged: gradient norm <= tol * max(1, |g0|)'
        >>> [round(float(v), 4) for v in (sol.params["x"], sol.params["y"])]
        [1.0, 1.0]
    """
    if method == "l-bfgs-b" or bounds is not None:
        from gradxform.second_order import bounded  # it imports this module

        return bounded.minimize_bounded(
            fun, x0, bounds, method, args=args, tol=tol, maxiter=maxiter, memory_size=memory_size,
            max_linesearch_steps=max_linesearch_steps, history=history,
        )  # fmt: skip
    checks.callable_arg("fun", fun, "fun(params, *args) -> scalar")
    tree.check_real_floating(x0, "x0")
    args = _check_args(args)
    options = (method, tol, maxiter, memory_size, c1, c2, max_linesearch_steps, max_cg_steps)
    flags = (history, float64_accumulation, initial_scaling, jax.config.read("jax_enable_x64"))
    settings, runtime = _settings(*options, implicit_diff, *flags)
    return _solver(fun, settings)(x0, args, runtime)


def _compile(fun, settings: _Settings):
    """The jitted solver ``(x0, args, runtime) -> Solution`` of one objective and settings.

    ``jax.jit`` traces it once per layout of ``x0`` and ``args``; the objective
    is checked then, before anything is compiled.
    """

    def solve_tree(fun, x0_tree, args, runtime: _Runtime):
        def fun_of_params(params):
            return fun(params, *args)

        curvature.check_objective(fun_of_params, x0_tree, "fun")
        x0, unravel = _tree.flat_view(x0_tree)

        def solve(x0, args, runtime):  # on CPU, convolutions in the loop in library layout
            objective = lambda v: fun(unravel(v), *args)  # noqa: E731
            return _solve(_problem(objective, x0_tree, settings, runtime), x0)

        out = canonical_convolutions(solve)(x0, args, runtime)
        return out._replace(params=unravel(out.params))

    return jax.jit(implicit.differentiable(solve_tree, fun, settings.implicit_diff))


# the jitted solver for ``fun`` and ``settings``, cached where ``fun`` is hashable
_solver = _tree.compile_cache(_compile)


def _problem(objective, x0_tree, settings: _Settings, runtime: _Runtime) -> _Problem:
    """The traced solve's :class:`_Problem` (``objective`` is ``f`` on flat vectors)."""
    if settings.max_cg_steps is None:
        settings = settings._replace(max_cg_steps=20 * _tree.size(x0_tree))
    return _Problem(
        method=METHODS[settings.method](settings),
        settings=settings,
        runtime=runtime,
        objective=objective,
        value_and_grad=_tree.value_and_grad(objective, _tree.scalar_dtype(x0_tree)),
        search=ZoomLinesearch(runtime.c1, runtime.c2, 1.0, settings.max_linesearch_steps),
        model_dtype=jnp.float64 if settings.float64_accumulation else None,
    )


def _solve(problem: _Problem, x0: jax.Array) -> Solution:
    f0, g0 = problem.value_and_grad(x0)
    gnorm0 = _tree.norm(g0, f0.dtype)
    gtol = jnp.asarray(problem.runtime.tol, gnorm0.dtype) * jnp.maximum(1, gnorm0)
    if isinstance(problem.method, tr.TrustMethod):  # its own iteration: gradxform.trust_region
        state = tr.run(problem, x0, f0, g0, gnorm0, gtol, Status, _RUNNING)
    else:
        state = packed_while_loop(
            lambda s: s.status == _RUNNING,
            lambda s: _advance(problem, gtol, _body(problem, s)),
            _advance(problem, gtol, _initial(problem, x0, f0, g0, gnorm0)),
        )
    p = state.point
    return Solution(
        params=p.x,
        value=p.value,
        grad_norm=_tree.norm(p.grad, p.value.dtype),
        iterations=state.k,
        num_fun_evals=state.nfev,
        num_grad_evals=state.nfev,
        num_hess_evals=state.nhev,
        num_hvp_evals=state.nhvp,
        status=state.status,
        stopping_test=jnp.zeros([], jnp.int32),  # the gradient test is its only one
        history=History(state.hist_f, state.hist_g, state.k + 1)
        if problem.settings.history_length
        else None,
    )


def _initial(problem: _Problem, x0, f0, g0, gnorm0) -> _Loop:
    finite0 = jnp.isfinite(f0) & _tree.all_finite(g0)
    nan = jnp.full(problem.settings.history_length, jnp.nan, x0.dtype)
    if problem.settings.history_length:
        hist_f, hist_g = nan.at[0].set(f0), nan.at[0].set(gnorm0)
    else:
        hist_f, hist_g = nan, nan
    zero = jnp.zeros([], jnp.int32)
    return _Loop(
        k=zero,
        point=Point(x0, f0, g0),
        previous_value=jnp.asarray(jnp.inf, f0.dtype),
        status=jnp.where(finite0, _RUNNING, Status.NONFINITE).astype(jnp.int32),
        nfev=jnp.ones([], jnp.int32),
        nhev=zero,
        nhvp=zero,
        model=problem.method.init(x0, problem.model_dtype),
        d=jnp.zeros_like(x0),
        stall=zero,
        f_best=f0,
        g_best=gnorm0,
        hist_f=hist_f,
        hist_g=hist_g,
    )


def _body(problem: _Problem, s: _Loop) -> _Loop:
    """One iteration: the shared step along the carried direction, then the stall test."""
    done = iteration.step(
        problem.method,
        problem.value_and_grad,
        s.point,
        s.previous_value,
        s.model,
        s.d,
        problem.search,
        problem.model_dtype,
    )
    new = done.point
    gnorm = _tree.norm(new.grad, new.value.dtype)
    ok = done.accepted
    progress = ~ok | (new.value < s.f_best) | (gnorm < 0.99 * s.g_best)
    stall = jnp.where(progress, 0, s.stall + 1)
    stalled = stall >= problem.method.stall_limit
    status = jnp.where(
        ok | done.restarted,
        jnp.where(stalled, Status.STALLED, _RUNNING),
        jnp.where(done.finite, Status.LINESEARCH_FAILED, Status.NONFINITE),
    )
    s = s._replace(
        k=s.k + 1,
        point=new,
        previous_value=done.previous_value,
        status=status.astype(jnp.int32),
        nfev=s.nfev + done.num_evals,
        model=done.model,
        stall=stall,
        f_best=jnp.where(ok, jnp.minimum(s.f_best, new.value), s.f_best),
        g_best=jnp.where(ok, jnp.minimum(s.g_best, gnorm), s.g_best),
    )
    if problem.settings.history_length:  # entry k: after k iterations, moved or not
        s = s._replace(hist_f=s.hist_f.at[s.k].set(new.value), hist_g=s.hist_g.at[s.k].set(gnorm))
    return s


def _advance(problem: _Problem, gtol, s: _Loop) -> _Loop:
    """The direction at the accepted iterate and the stopping tests there.

    Computed once per iterate, at the end of the iteration that reached it (and
    for ``x0`` before the loop), so the loop body is one straight line: step
    along the carried direction, then advance; no conditional around the step.
    """
    running = s.status == _RUNNING
    p = s.point
    found = problem.method.direction(s.model, problem.objective, p.x, p.grad)
    converged = (_tree.norm(p.grad, p.value.dtype) <= gtol) & found.stationary
    maxiter = problem.runtime.maxiter
    status = jnp.where(
        converged, Status.SUCCESS, jnp.where(s.k >= maxiter, Status.MAXITER, _RUNNING)
    )
    return s._replace(
        d=found.direction,
        nhev=s.nhev + jnp.where(running, found.hessians, 0),
        nhvp=s.nhvp + jnp.where(running, found.hvps, 0),
        status=jnp.where(running, status, s.status).astype(jnp.int32),
    )
