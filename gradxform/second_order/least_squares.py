"""``gx.least_squares``: nonlinear least squares by Levenberg-Marquardt or Gauss-Newton.

Minimises ``|r(x)|^2 / 2`` for a residual function ``r`` of any pytree ``x``
returning any pytree of float arrays. One jitted solve, two nested loops, as
MINPACK's ``lmder`` (which ``scipy.optimize.least_squares(method="lm")``
wraps): the outer loop evaluates the Jacobian at the current point and tests
the gradient; the inner loop tries steps until one is accepted or a test
stops the solve. The linear models and steps live in
:mod:`gradxform.second_order._lsq_steps`; this module is the driver, its
checks and the :class:`~gradxform.Solution` it returns.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from gradxform import checks, tree
from gradxform.convolutions import canonical_convolutions
from gradxform.second_order import _lsq_steps as steps
from gradxform.second_order import _tree, implicit
from gradxform.second_order._packed import packed_while_loop
from gradxform.second_order.minimize import Solution, Status, _check_args

__all__ = ["least_squares"]

_RUNNING = -1
_CONVERGED = 16  # in the loop, 16 + Solution.stopping_test: a success by the ftol/xtol tests
_DENSE_LIMIT = 1000  # jacobian="auto": a dense Jacobian up to this many variables
_FACTOR = 100.0  # MINPACK's initial radius factor: delta0 = 100 |D x0| (or 100)
_ACCELERATION_LIMIT = 0.75  # Transtrum-Sethna's alpha: accept if 2 |a| <= alpha |v|


class _Settings(NamedTuple):
    """What fixes the compiled program (hashable)."""

    method: str
    jacobian: str
    geodesic: bool
    max_cg_steps: int | None
    max_linesearch_steps: int
    implicit_diff: str = "cg"


class _Runtime(NamedTuple):
    """What may change without recompiling (arrays, possibly traced)."""

    ftol: Any
    xtol: Any
    gtol: Any
    max_nfev: Any


class _Problem(NamedTuple):
    settings: _Settings
    runtime: _Runtime
    residual: Callable[[jax.Array], jax.Array]
    m: int
    max_cg_steps: int


class _Loop(NamedTuple):
    """The carry of both loops (the inner one also uses ``accepted``)."""

    x: jax.Array
    r: jax.Array
    fnorm: jax.Array
    diag: jax.Array
    xnorm: jax.Array
    delta: jax.Array
    par: jax.Array
    k: jax.Array  # accepted steps
    nfev: jax.Array
    njev: jax.Array
    nprod: jax.Array
    status: jax.Array
    accepted: jax.Array
    first: jax.Array  # no step accepted yet (MINPACK's iter == 1)


def _check_settings(method, jacobian, geodesic, max_cg_steps, max_linesearch_steps) -> _Settings:
    checks.choice("method", method, ("lm", "gauss-newton"))
    checks.choice("jacobian", jacobian, ("auto", "dense", "matvec"))
    geodesic = checks.boolean("geodesic", geodesic)
    if geodesic and (method != "lm" or jacobian == "matvec"):
        checks.fail(
            "geodesic", "False unless method='lm' with a dense Jacobian", geodesic, ValueError
        )
    return _Settings(
        method=method,
        jacobian=jacobian,
        geodesic=geodesic,
        max_cg_steps=None
        if max_cg_steps is None
        else checks.integer("max_cg_steps", max_cg_steps, minimum=1),
        max_linesearch_steps=checks.integer(
            "max_linesearch_steps", max_linesearch_steps, minimum=1
        ),
    )


def _check_runtime(ftol, xtol, gtol, max_nfev, n: int) -> _Runtime:
    values = []
    for name, value in (("ftol", ftol), ("xtol", xtol), ("gtol", gtol)):
        if not isinstance(value, jax.core.Tracer):
            value = checks.real(name, value, lower=0)
        values.append(value)
    if max_nfev is None:
        max_nfev = 100 * n
    elif not isinstance(max_nfev, jax.core.Tracer):
        max_nfev = checks.integer("max_nfev", max_nfev, minimum=1)
    with jax.ensure_compile_time_eval():
        ftol, xtol, gtol = (jnp.asarray(v) for v in values)
        return _Runtime(ftol, xtol, gtol, jnp.asarray(max_nfev, jnp.int32))


def least_squares(
    residual_fn,
    x0,
    method: str = "lm",
    *,
    args: Any = (),
    ftol: float = 1e-8,
    xtol: float = 1e-8,
    gtol: float = 1e-8,
    max_nfev: int | None = None,
    jacobian: str = "auto",
    geodesic: bool = False,
    max_cg_steps: int | None = None,
    max_linesearch_steps: int = 20,
    implicit_diff: str = "cg",
) -> Solution:
    """Minimises ``|r(x)|^2 / 2`` for ``r = residual_fn(x, *args)``, from ``x0``.

    ``x0`` is any pytree of float arrays (its dtype is the working precision)
    and the residuals any pytree of float arrays (flattened into one vector
    ``r`` of ``m`` entries). With ``J`` the Jacobian of ``r``:

    * ``method="lm"``: Levenberg-Marquardt in Moré's trust-region form, the
      algorithm of MINPACK's ``lmder`` (``scipy.optimize.least_squares``'s
      ``"lm"``): each step solves ``(J^T J + par D^2) p = -J^T r`` with
      ``par`` chosen so that ``|D p|`` is the trust radius (within 10%),
      ``D`` the running maximum of ``J``'s column norms; the radius grows or
      shrinks with the ratio of actual to predicted reduction, MINPACK's rules.
    * ``method="gauss-newton"``: the least-squares step ``min |r + J p|``
      (least-norm where ``J`` is rank-deficient), followed by an Armijo
      backtracking search on ``|r|^2``.

    ``jacobian="dense"`` forms ``J`` (``jax.jacfwd`` when ``n <= m``, else
    ``jax.jacrev``) and works on its SVD; ``"matvec"`` never forms it: the
    steps come from conjugate gradients on the products ``J^T J v`` (one
    ``jvp`` and one ``vjp`` each), Steihaug-Toint CG inside the trust region
    for ``"lm"`` (with ``D = I``) and truncated CG for Gauss-Newton (at most
    ``max_cg_steps``, default ``n``). ``"auto"`` is dense up to 1000 variables.

    The solve stops with :attr:`~gradxform.Status.SUCCESS` when one of
    MINPACK's three tests holds: both the actual and the predicted relative
    reduction of ``|r|^2`` are at most ``ftol``; the trust radius (for
    Gauss-Newton, the step) is at most ``xtol |D x|``; or every column of
    ``J`` makes a cosine of at most ``gtol`` with ``r`` (``|J^T r|_inf <=
    gtol |r|`` on the matrix-free path). ``MAXITER``: ``max_nfev`` residual
    evaluations (default ``100 n``, scipy's); tolerances below the working
    precision's ``eps`` are raised to it (MINPACK's "tolerance too small" stops
    are successes here, so float32 solves with the defaults succeed); ``NONFINITE``: the
    residuals or the Jacobian at an accepted point are not finite (a
    non-finite trial point is only rejected); ``LINESEARCH_FAILED``:
    Gauss-Newton's search found no decrease.

    ``geodesic=True`` adds Transtrum and Sethna's geodesic acceleration to
    ``"lm"``: the second directional derivative ``r_vv`` along the step ``v``
    (exact, by nested ``jvp``) gives ``a = -(J^T J + par D^2)^-1 J^T r_vv``;
    the step ``v + a / 2`` is tried when ``2 |D a| <= 0.75 |D v|`` (their
    acceptance ratio, ``alpha = 0.75``), else the plain step ``v``.

    Compiled once per ``residual_fn`` (its identity), the shape-fixing
    options and the layout of ``x0`` and ``args``; the data in ``args``,
    ``x0``, the tolerances and ``max_nfev`` are arguments (traced under
    ``jax.jit``, batched under ``jax.vmap``).

    Args:
        residual_fn: ``residual_fn(params, *args) -> pytree of float arrays``
            (not a scalar: return the residuals whose squares are summed).
        x0: the start, a pytree of float arrays.
        method: ``"lm"`` or ``"gauss-newton"``.
        args: the data, a tuple of arrays or pytrees of arrays (a single value
            is passed as ``(args,)``).
        ftol: relative reduction tolerance (>= 0).
        xtol: relative step tolerance (>= 0).
        gtol: gradient (cosine) tolerance (>= 0).
        max_nfev: the most residual evaluations (default ``100 n``).
        jacobian: ``"auto"``, ``"dense"`` or ``"matvec"``.
        geodesic: geodesic acceleration (``"lm"`` with a dense Jacobian).
        max_cg_steps: CG products per step on the matrix-free path (default ``n``).
        max_linesearch_steps: Gauss-Newton's evaluations per line search.
        implicit_diff: how ``jax.grad``/``jacfwd``/``jacrev`` differentiate ``params``
            with respect to ``args``: the implicit function theorem on ``|r|^2 / 2``
            (its full Hessian, not ``J^T J``), solved by ``"cg"`` or ``"dense"``, as
            :func:`~gradxform.minimize`.

    Returns:
        A :class:`~gradxform.Solution`: ``value`` is ``|r|^2 / 2`` (scipy's
        ``cost``), ``grad_norm`` is ``|J^T r|`` at the solution (one more
        reverse pass, not counted), ``iterations`` the accepted steps,
        ``num_fun_evals`` residual evaluations (each geodesic ``r_vv`` counts
        as one), ``num_grad_evals`` Jacobian evaluations (linearisations on
        the matrix-free path) and ``num_hvp_evals`` the products ``J^T J v``.

    Raises:
        TypeError: if ``x0`` has a leaf that is not a real float array.
        ValueError: if ``residual_fn`` returns a scalar or a non-float leaf, or
            an option is out of range.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> def residuals(p, t, y):  # y ~ a exp(-b t)
        ...     return p["a"] * jnp.exp(-p["b"] * t) - y
        >>> t = jnp.linspace(0.0, 3.0, 12)
        >>> y = 2.0 * jnp.exp(-1.3 * t)
        >>> sol = gx.least_squares(residuals, {"a": 1.0, "b": 1.0}, args=(t, y))
        >>> sol.status == gx.Status.SUCCESS
        Array(True, dtype=bool)
        >>> [round(float(sol.params[k]), 4) for k in ("a", "b")]
        [2.0, 1.3]
    """
    checks.callable_arg("residual_fn", residual_fn, "residual_fn(params, *args) -> residuals")
    x0 = jax.tree.map(_as_float_array, x0)
    tree.check_real_floating(x0, "x0")
    args = _check_args(args)
    settings = _check_settings(method, jacobian, geodesic, max_cg_steps, max_linesearch_steps)
    settings = settings._replace(
        implicit_diff=checks.choice("implicit_diff", implicit_diff, implicit.METHODS)
    )
    runtime = _check_runtime(ftol, xtol, gtol, max_nfev, _tree.size(x0))
    return solve(residual_fn, settings, x0, args, runtime)


def _as_float_array(leaf):
    """Python floats become arrays of the default float dtype; anything else stays as is."""
    return jnp.asarray(leaf) if isinstance(leaf, float) else leaf


def solve(residual_fn, settings: _Settings, x0, args: tuple, runtime: _Runtime) -> Solution:
    """The one place the compiled solve is called (a wrapper for implicit gradients goes here).

    Args:
        residual_fn: as for :func:`least_squares`.
        settings: the checked shape-fixing options.
        x0: the checked start.
        args: the data tuple.
        runtime: the checked tolerances and evaluation limit.

    Returns:
        The :class:`~gradxform.Solution`.
    """
    return _solver(residual_fn, settings)(x0, args, runtime)


def _check_residuals(residual_fn, x0, args) -> int:
    """The number of residuals; raises unless ``residual_fn`` returns float arrays, not a scalar."""
    out = jax.eval_shape(lambda p: residual_fn(p, *args), x0)
    leaves = jax.tree.leaves(out)
    shapes = jax.tree.map(lambda a: f"{a.shape} {a.dtype}", out)
    if not leaves or any(not jnp.issubdtype(a.dtype, jnp.floating) for a in leaves):
        checks.fail("residual_fn(x0, *args)", "a pytree of real float arrays", shapes)
    if not isinstance(out, (list, tuple, dict)) and len(leaves) == 1 and leaves[0].ndim == 0:
        checks.fail(
            "residual_fn(x0, *args)",
            "the residuals, an array or pytree of arrays, not a scalar (least_squares squares "
            "and sums them itself; for a scalar objective use gx.minimize)",
            shapes,
        )
    return sum(int(a.size) for a in leaves)


def _compile(residual_fn, settings: _Settings):
    """The jitted ``(x0, args, runtime) -> Solution`` of one residual function and settings."""

    def solve_tree(residual_fn, x0_tree, args, runtime: _Runtime):
        m = _check_residuals(residual_fn, x0_tree, args)
        x0, unravel = _tree.flat_view(x0_tree)
        dtype = x0.dtype

        def residual(v):
            out = residual_fn(unravel(v), *args)
            return ravel_pytree(out)[0].astype(dtype)

        jacobian = settings.jacobian
        if jacobian == "auto":
            jacobian = "dense" if x0.size <= _DENSE_LIMIT else "matvec"
        cg_steps = x0.size if settings.max_cg_steps is None else settings.max_cg_steps
        problem = _Problem(settings._replace(jacobian=jacobian), runtime, residual, m, cg_steps)
        # on CPU, convolutions in the loop in library layout
        out = canonical_convolutions(lambda x0: _solve(problem, x0))(x0)
        return out._replace(params=unravel(out.params))

    cost = implicit.half_squared_norm
    return jax.jit(implicit.differentiable(solve_tree, residual_fn, settings.implicit_diff, cost))


_solver = _tree.compile_cache(_compile)


def _solve(problem: _Problem, x0: jax.Array) -> Solution:
    r0 = problem.residual(x0)
    fnorm = jnp.linalg.norm(r0)
    zero, dtype = jnp.zeros([], jnp.int32), x0.dtype
    init = _Loop(
        x=x0,
        r=r0,
        fnorm=fnorm,
        diag=jnp.ones_like(x0),
        xnorm=jnp.zeros([], dtype),
        delta=jnp.zeros([], dtype),
        par=jnp.zeros([], dtype),
        k=zero,
        nfev=jnp.ones([], jnp.int32),
        njev=zero,
        nprod=zero,
        status=jnp.where(jnp.isfinite(fnorm), _RUNNING, Status.NONFINITE).astype(jnp.int32),
        accepted=jnp.array(False),
        first=jnp.array(True),
    )
    s = packed_while_loop(lambda s: s.status == _RUNNING, functools.partial(_outer, problem), init)
    grad = jax.vjp(problem.residual, s.x)[1](s.r)[0]
    return Solution(
        params=s.x,
        value=0.5 * s.fnorm**2,
        grad_norm=jnp.linalg.norm(grad),
        iterations=s.k,
        num_fun_evals=s.nfev,
        num_grad_evals=s.njev,
        num_hess_evals=zero,
        num_hvp_evals=s.nprod,
        status=jnp.where(s.status >= _CONVERGED, Status.SUCCESS, s.status),
        stopping_test=jnp.maximum(s.status - _CONVERGED, 0),  # 0: the gradient test
        history=None,
    )


def _gradient_test(g, col_norms, fnorm):
    """MINPACK's ``gnorm``: the largest ``|cos|`` between ``r`` and a column of ``J``."""
    live = col_norms > 0
    cos = jnp.abs(g) / (jnp.where(live, col_norms, 1) * jnp.where(fnorm > 0, fnorm, 1))
    return jnp.where(fnorm > 0, jnp.max(jnp.where(live, cos, 0)), 0)


def _outer(problem: _Problem, s: _Loop) -> _Loop:
    """The Jacobian at ``x``, the gradient test, the scaling, then the inner trials."""
    settings, dtype = problem.settings, s.x.dtype
    if settings.jacobian == "dense":
        jac = steps.dense_jacobian(problem.residual, s.x, problem.m)
        g = jac.T @ s.r
        col_norms = jnp.linalg.norm(jac, axis=0)
        finite = jnp.all(jnp.isfinite(jac))
    else:
        _, jvp = jax.linearize(problem.residual, s.x)
        transpose = jax.linear_transpose(jvp, s.x)
        matvec = steps.MatvecModel(jvp, lambda u: transpose(u)[0])
        g = matvec.vjp(s.r)
        col_norms = jnp.ones_like(s.x)
        finite = jnp.all(jnp.isfinite(g))
    # MINPACK's mode 1: D starts at J's column norms (1 for a zero column), then keeps their max
    start = s.njev == 0
    diag = jnp.where(start, jnp.where(col_norms > 0, col_norms, 1), jnp.maximum(s.diag, col_norms))
    xnorm = jnp.linalg.norm(diag * s.x)
    delta = jnp.where(start, jnp.where(xnorm > 0, _FACTOR * xnorm, _FACTOR), s.delta)
    gnorm = _gradient_test(g, col_norms, s.fnorm)
    gtol = jnp.maximum(problem.runtime.gtol, jnp.finfo(dtype).eps)
    status = jnp.where(
        ~finite, Status.NONFINITE, jnp.where(gnorm <= gtol, Status.SUCCESS, _RUNNING)
    )
    s = s._replace(
        diag=diag.astype(dtype),
        xnorm=xnorm.astype(dtype),
        delta=delta.astype(dtype),
        njev=s.njev + 1,
        status=status.astype(jnp.int32),
        accepted=jnp.array(False),
    )
    if settings.jacobian == "dense":
        rcond = max(jac.shape) * float(jnp.finfo(dtype).eps)  # numerical rank, as lstsq
        model: Any = steps.dense_model(jac, s.r, s.diag, rcond)
    else:
        model = matvec
    trial = _lm_trial if settings.method == "lm" else _gauss_newton_trials
    return trial(problem, model, g, s)


def _tests(problem: _Problem, s: _Loop, actred, prered, ratio, step_size) -> jax.Array:
    """MINPACK's convergence tests after a trial (``step_size``: delta, or |D p| for GN).

    Tolerances below the working precision's ``eps`` are raised to it: MINPACK's
    "tolerance too small" stops (its ``info`` 6 and 7) are successes here.
    """
    rt, eps = problem.runtime, jnp.finfo(s.x.dtype).eps
    ftol, xtol = jnp.maximum(rt.ftol, eps), jnp.maximum(rt.xtol, eps)
    ftol_met = (jnp.abs(actred) <= ftol) & (prered <= ftol) & (0.5 * ratio <= 1)
    xtol_met = step_size <= xtol * s.xnorm
    limit = jnp.where(s.nfev >= rt.max_nfev, Status.MAXITER, _RUNNING)
    by = _CONVERGED + ftol_met.astype(jnp.int32) + 2 * xtol_met.astype(jnp.int32)
    return jnp.where(ftol_met | xtol_met, by, limit).astype(jnp.int32)


def _reduction(fnorm, fnorm1):
    """MINPACK's actual relative reduction ``1 - (|r1|/|r|)^2`` (-1 where ``|r1|`` grew 10x)."""
    grew = ~(0.1 * fnorm1 < fnorm)  # also where fnorm1 is NaN
    return jnp.where(grew, -1, 1 - (fnorm1 / jnp.where(grew, 1, fnorm)) ** 2)


def _lm_trial(problem: _Problem, model, g, s: _Loop) -> _Loop:
    """The inner loop of Levenberg-Marquardt: trial steps until one is accepted."""

    def body(s: _Loop) -> _Loop:
        step, nfev_extra = _lm_step(problem, model, g, s)
        delta = jnp.where(s.first, jnp.minimum(s.delta, step.pnorm), s.delta)
        x1 = s.x + step.p
        r1 = problem.residual(x1)
        fnorm1 = jnp.linalg.norm(r1)
        fnorm1 = jnp.where(jnp.isfinite(fnorm1), fnorm1, jnp.inf)
        actred = _reduction(s.fnorm, fnorm1)
        ratio = jnp.where(step.prered != 0, actred / jnp.where(step.prered != 0, step.prered, 1), 0)
        # MINPACK's radius update
        temp = jnp.where(actred >= 0, 0.5, 0.5 * step.dirder / (step.dirder + 0.5 * actred))
        temp = jnp.where((0.1 * fnorm1 >= s.fnorm) | (temp < 0.1), 0.1, temp)
        shrink = ratio <= 0.25
        grow = (step.par == 0) | (ratio >= 0.75)
        new_delta = jnp.where(
            shrink,
            temp * jnp.minimum(delta, step.pnorm / 0.1),
            jnp.where(grow, step.pnorm / 0.5, delta),
        )
        new_par = jnp.where(shrink, step.par / temp, jnp.where(grow, 0.5 * step.par, step.par))
        ok = ratio >= 1e-4
        x = jnp.where(ok, x1, s.x)
        s = s._replace(
            x=x,
            r=jnp.where(ok, r1, s.r),
            fnorm=jnp.where(ok, fnorm1, s.fnorm),
            xnorm=jnp.where(ok, jnp.linalg.norm(s.diag * x1), s.xnorm),
            delta=new_delta.astype(s.delta.dtype),
            par=new_par.astype(s.par.dtype),
            k=s.k + ok,
            nfev=s.nfev + 1 + nfev_extra,
            nprod=s.nprod + step.products,
            accepted=ok,
            first=s.first & ~ok,
        )
        return s._replace(status=_tests(problem, s, actred, step.prered, ratio, s.delta))

    return packed_while_loop(lambda s: (s.status == _RUNNING) & ~s.accepted, body, s)


def _lm_step(problem: _Problem, model, g, s: _Loop):
    """``(step, extra residual evaluations)`` at ``s`` (a geodesic ``r_vv`` counts as one)."""
    settings = problem.settings
    if settings.jacobian == "matvec":
        step = steps.steihaug_step(model, g, s.fnorm, s.delta, problem.max_cg_steps)
        return step, 0
    par = steps.lm_parameter(model, s.delta, s.par)
    step = steps.dense_step(model, s.diag, s.fnorm, par)
    if not settings.geodesic:
        return step, 0
    v = step.p
    rvv = jax.jvp(lambda y: jax.jvp(problem.residual, (y,), (v,))[1], (s.x,), (v,))[1]
    da = steps.dense_acceleration(model, s.diag, rvv, par)
    good = (2 * jnp.linalg.norm(da) <= _ACCELERATION_LIMIT * step.pnorm) & jnp.all(jnp.isfinite(da))
    p = v + 0.5 * jnp.where(good, da, 0) / s.diag
    prered, dirder = steps.model_reduction(model.jac @ p, s.r, g, p, s.fnorm)
    accelerated = step._replace(
        p=p, pnorm=jnp.linalg.norm(s.diag * p), prered=prered, dirder=dirder
    )
    # where the acceleration is too large, the plain step (MINPACK's formulas) is tried
    step = jax.tree.map(lambda a, b: jnp.where(good, a, b), accelerated, step)
    return step, 1


def _gauss_newton_trials(problem: _Problem, model, g, s: _Loop) -> _Loop:
    """Gauss-Newton's direction at ``x`` and its backtracking search (the inner loop)."""
    settings, dtype = problem.settings, s.x.dtype
    if settings.jacobian == "dense":
        w = jnp.where(model.kept, model.c / jnp.where(model.kept, model.s, 1), 0)
        p = -(model.vt.T @ w) / s.diag
        jp = model.jac @ p
        products = jnp.zeros([], jnp.int32)
    else:
        p, products = steps.matvec_gauss_newton(model, g, problem.max_cg_steps)
        jp = model.jvp(p)
    slope = 2 * jnp.vdot(g, p)  # d/dt |r(x + t p)|^2 at 0
    pnorm = jnp.linalg.norm(s.diag * p)
    f2 = s.fnorm**2
    s = s._replace(nprod=s.nprod + products)

    def body(c):
        s, t, i = c
        x1 = s.x + t * p
        r1 = problem.residual(x1)
        fnorm1 = jnp.linalg.norm(r1)
        fnorm1 = jnp.where(jnp.isfinite(fnorm1), fnorm1, jnp.inf)
        f1 = fnorm1**2
        ok = f1 <= f2 + 1e-4 * t * slope
        prered = -(t * slope + t**2 * jnp.vdot(jp, jp)) / f2
        actred = _reduction(s.fnorm, fnorm1)
        s1 = s._replace(
            x=jnp.where(ok, x1, s.x),
            r=jnp.where(ok, r1, s.r),
            fnorm=jnp.where(ok, fnorm1, s.fnorm),
            xnorm=jnp.where(ok, jnp.linalg.norm(s.diag * x1), s.xnorm),
            k=s.k + ok,
            nfev=s.nfev + 1,
            accepted=ok,
            first=s.first & ~ok,
        )
        status = jnp.where(ok, _tests(problem, s1, actred, prered, 1.0, t * pnorm), _RUNNING)
        limit = jnp.where(s1.nfev >= problem.runtime.max_nfev, Status.MAXITER, _RUNNING)
        failed = ~ok & (i + 1 >= settings.max_linesearch_steps)
        status = jnp.where(status == _RUNNING, limit, status)
        status = jnp.where(failed & (status == _RUNNING), Status.LINESEARCH_FAILED, status)
        # the next trial: the minimiser of the quadratic through f(0), f'(0), f(t), in [t/10, t/2]
        curv = f1 - f2 - t * slope
        t_q = -slope * t**2 / (2 * jnp.where(curv > 0, curv, 1))
        t_next = jnp.where(curv > 0, jnp.clip(t_q, 0.1 * t, 0.5 * t), 0.5 * t)
        return s1._replace(status=status.astype(jnp.int32)), t_next.astype(dtype), i + 1

    one = jnp.ones([], dtype)
    s, _, _ = jax.lax.while_loop(
        lambda c: (c[0].status == _RUNNING) & ~c[0].accepted,
        body,
        (s, one, jnp.zeros([], jnp.int32)),
    )
    return s
