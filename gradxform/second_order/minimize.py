"""``gx.minimize``: full-batch minimization with Newton, Newton-CG, BFGS or L-BFGS.

One jitted ``lax.while_loop`` over flat vectors (the pytree ``x0`` is
flattened once at the boundary); each iteration takes a direction from
:mod:`gradxform.second_order.directions` and a strong-Wolfe step from
:func:`gradxform.second_order.linesearch.zoom_search`. Works under ``vmap``
over starting points. Never hangs (every loop is bounded) and never returns
NaN silently: a non-finite value, a failed line search, ``maxiter`` or
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

import enum
import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from gradxform import tree
from gradxform.second_order import directions as dirs
from gradxform.second_order._packed import packed_while_loop
from gradxform.second_order.linesearch import zoom_search

__all__ = ["History", "Solution", "Status", "minimize"]

METHODS = ("lbfgs", "bfgs", "newton", "newton-cg")


class Status(enum.IntEnum):
    """Why :func:`minimize` stopped."""

    SUCCESS = 0
    MAXITER = 1
    LINESEARCH_FAILED = 2
    NONFINITE = 3
    STALLED = 4


_RUNNING = -1
MESSAGES = {
    Status.SUCCESS: "converged: gradient norm <= tol * max(1, |g0|)",
    Status.MAXITER: "stopped: maximum number of iterations reached",
    Status.LINESEARCH_FAILED: (
        "failed: the line search found no point that decreases the objective "
        "(the direction is not a descent direction, or f is at its floating-point resolution)"
    ),
    Status.NONFINITE: "failed: the objective or its gradient is not finite (NaN or inf)",
    Status.STALLED: (
        "stopped: neither the best objective value nor the best gradient norm improved in 25 "
        "iterations (5 for Newton's methods); the iterate is at the floating-point resolution "
        "of f and its gradient (tol is below what this precision can resolve)"
    ),
}


class History(NamedTuple):
    """Per-iteration value and gradient norm.

    Entry ``k`` is after ``k`` iterations; entries after the last iteration are NaN.
    """

    value: jax.Array
    grad_norm: jax.Array


class Solution(NamedTuple):
    """What :func:`minimize` returns.

    Attributes:
        params: the last iterate, shaped like ``x0``.
        value: the objective there.
        grad_norm: the 2-norm of its gradient.
        iterations: iterations taken.
        num_fun_evals, num_grad_evals: objective and gradient evaluations
            (they come in pairs: each evaluation is one ``value_and_grad``).
        num_hess_evals: dense Hessians (Newton).
        num_hvp_evals: Hessian-vector products (Newton-CG).
        status: a :class:`Status` code (int32 array; batched under vmap).
        history: a :class:`History` if requested, else None.
    """

    params: Any
    value: jax.Array
    grad_norm: jax.Array
    iterations: jax.Array
    num_fun_evals: jax.Array
    num_grad_evals: jax.Array
    num_hess_evals: jax.Array
    num_hvp_evals: jax.Array
    status: jax.Array
    history: History | None

    @property
    def success(self):
        """True where the gradient test was met."""
        return self.status == Status.SUCCESS

    @property
    def message(self):
        """The readable reason for :attr:`status` (a list of them when batched)."""
        codes = np.asarray(self.status)
        if codes.ndim == 0:
            return MESSAGES[Status(int(codes))]
        return [MESSAGES[Status(int(c))] for c in codes.ravel()]


class _Loop(NamedTuple):
    k: jax.Array
    x: jax.Array
    f: jax.Array
    f_prev: jax.Array
    g: jax.Array
    status: jax.Array
    nfev: jax.Array
    nhev: jax.Array
    nhvp: jax.Array
    model: Any
    d: jax.Array  # the direction at x (computed when x is accepted)
    fresh: jax.Array  # the curvature model holds no pairs yet (start, or after a reset)
    stall: jax.Array  # consecutive iterations without a new best value or gradient norm
    f_best: jax.Array
    g_best: jax.Array
    hist_f: jax.Array
    hist_g: jax.Array


def _validate(fun, x0, method, tol, maxiter, memory_size, c1, c2, max_linesearch_steps):
    if not callable(fun):
        raise TypeError(f"fun must be a callable fun(params) -> scalar; got {fun!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}")
    tree.check_real_floating(x0, "x0")
    if not (isinstance(tol, (int, float)) and tol > 0 and np.isfinite(tol)):
        raise ValueError(f"tol must be a finite number > 0; got {tol!r}")
    if not (isinstance(maxiter, int) and not isinstance(maxiter, bool) and maxiter >= 1):
        raise ValueError(f"maxiter must be an integer >= 1; got {maxiter!r}")
    if not (isinstance(memory_size, int) and memory_size >= 1):
        raise ValueError(f"memory_size must be an integer >= 1; got {memory_size!r}")
    if not 0 < c1 < c2 < 1:
        raise ValueError(f"c1 and c2 must satisfy 0 < c1 < c2 < 1; got c1={c1!r}, c2={c2!r}")
    if not (isinstance(max_linesearch_steps, int) and max_linesearch_steps >= 1):
        raise ValueError(
            f"max_linesearch_steps must be an integer >= 1; got {max_linesearch_steps!r}"
        )


def minimize(
    fun,
    x0,
    method: str = "lbfgs",
    *,
    tol: float = 1e-6,
    maxiter: int = 500,
    memory_size: int = 10,
    c1: float = 1e-4,
    c2: float = 0.9,
    max_linesearch_steps: int = 30,
    max_cg_steps: int | None = None,
    history: bool = False,
    float64_accumulation: bool = False,
) -> Solution:
    """Minimizes ``fun(params) -> scalar`` from ``x0`` (any pytree of float arrays).

    Stops with :attr:`Status.SUCCESS` when ``|grad| <= tol * max(1, |grad(x0)|)``
    (2-norms) and, for ``"newton"``, the Hessian has no eigenvalue below
    ``-sqrt(eps) max(1, |lam|max)``, so a Newton solve never ends at a saddle
    or a maximum.

    Args:
        fun: the objective; traced once.
        x0: the start; its dtype (float32 or float64) is the working precision.
        method: ``"lbfgs"`` (memory ``memory_size``), ``"bfgs"`` (dense inverse
            Hessian, O(n^2) per iteration), ``"newton"`` (exact Hessian,
            eigenvalue-modified), ``"newton-cg"`` (truncated CG with
            Hessian-vector products, at most ``max_cg_steps``, default ``n``).
        tol: relative gradient tolerance (> 0).
        maxiter: iteration limit (>= 1).
        c1, c2: strong-Wolfe constants of the line search (``0 < c1 < c2 < 1``).
        max_linesearch_steps: evaluations per line search.
        history: also return the value and gradient norm at every iteration.
        float64_accumulation: keep the quasi-Newton curvature model (the BFGS
            inverse Hessian, the L-BFGS pairs) and its products in float64 while
            the objective runs in ``x0``'s dtype (needs ``jax_enable_x64``). This
            is scipy's arrangement, which keeps its whole state in float64: with
            float32 objectives it stops rounding errors in the O(n^2) model from
            steering the iterates (e.g. extended Rosenbrock from its symmetric
            start: 42 evaluations instead of 215).

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> rosenbrock = lambda p: (1 - p["x"]) ** 2 + 100 * (p["y"] - p["x"] ** 2) ** 2
        >>> sol = gx.minimize(rosenbrock, {"x": jnp.array(-1.2), "y": jnp.array(1.0)})
        >>> sol.message
        'converged: gradient norm <= tol * max(1, |g0|)'
        >>> [round(float(v), 4) for v in (sol.params["x"], sol.params["y"])]
        [1.0, 1.0]
    """
    _validate(fun, x0, method, tol, maxiter, memory_size, c1, c2, max_linesearch_steps)
    if float64_accumulation and not jax.config.jax_enable_x64:
        raise ValueError(
            "float64_accumulation=True needs jax_enable_x64 "
            "(jax.config.update('jax_enable_x64', True))"
        )
    leaves, treedef = jax.tree.flatten(x0)
    leaf_spec = tuple(
        (jnp.shape(x), x.dtype if hasattr(x, "dtype") else jnp.result_type(x)) for x in leaves
    )
    n = sum(math.prod(shape) for shape, _ in leaf_spec)
    config = (
        method,
        float(tol),
        int(maxiter),
        int(memory_size),
        float(c1),
        float(c2),
        int(max_linesearch_steps),
        int(max_cg_steps or n),
        bool(history),
        bool(float64_accumulation),
    )
    return _compiled(fun, treedef, leaf_spec, config)(x0)


def _check_scalar_objective(fun, example):
    out = jax.eval_shape(fun, example)
    if not (hasattr(out, "shape") and out.shape == () and jnp.issubdtype(out.dtype, jnp.floating)):
        raise ValueError(
            "fun must return a real scalar; got "
            f"{getattr(out, 'shape', type(out))} {getattr(out, 'dtype', '')}".rstrip()
        )


@functools.lru_cache(maxsize=64)
def _compiled(fun, treedef, leaf_spec, config):
    """The jitted solver for one objective, tree layout and configuration (cached)."""
    method, tol, maxiter, memory_size, c1, c2, ls_steps, cg_steps, keep_history, wide = config
    stall_limit = 25 if method in ("lbfgs", "bfgs") else 5
    example = jax.tree.unflatten(treedef, [jax.ShapeDtypeStruct(s, d) for s, d in leaf_spec])
    _check_scalar_objective(fun, example)  # once per objective and layout, before any jit
    unravel = ravel_pytree(jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), example))[1]

    def f_flat(v):
        return fun(unravel(v))

    value_and_grad = jax.value_and_grad(f_flat)

    def hessian(x):
        return dirs.dense_hessian(f_flat, x)

    def init_model(x):
        n, dtype = x.size, (jnp.float64 if wide else x.dtype)
        if method == "lbfgs":
            return dirs.lbfgs_init(n, memory_size, dtype)
        if method == "bfgs":
            return jnp.eye(n, dtype=dtype)
        return jnp.zeros([], dtype)

    def direction(s: _Loop):
        """(d, stationary-point test passes, Hessian evals, HVPs)."""
        zero = jnp.zeros([], jnp.int32)
        if method == "lbfgs":
            d = -dirs.lbfgs_two_loop(s.model, s.g.astype(s.model.s.dtype))
            return d.astype(s.g.dtype), jnp.array(True), zero, zero
        if method == "bfgs":
            d = -(s.model @ s.g.astype(s.model.dtype))
            return d.astype(s.g.dtype), jnp.array(True), zero, zero
        if method == "newton":
            d, _, negative = dirs.newton_direction(
                hessian(s.x), s.g, recompute=lambda: hessian(s.x)
            )
            return d, ~negative, jnp.ones([], jnp.int32), zero

        def hvp(v):
            return jax.jvp(jax.grad(f_flat), (s.x,), (v,))[1]

        d, used = dirs.newton_cg_direction(hvp, s.g, cg_steps)
        return d, jnp.array(True), zero, used

    def solve_tree(x0_tree):
        x0, _ = ravel_pytree(x0_tree)
        out = solve(x0)
        return out._replace(params=unravel(out.params))

    def solve(x0):
        f0, g0 = value_and_grad(x0)
        gnorm0 = jnp.linalg.norm(g0)
        gtol = tol * jnp.maximum(1, gnorm0)
        finite0 = jnp.isfinite(f0) & jnp.all(jnp.isfinite(g0))
        length = maxiter + 1 if keep_history else 0
        nan = jnp.full(length, jnp.nan, x0.dtype)
        init = _Loop(
            k=jnp.zeros([], jnp.int32),
            x=x0,
            f=f0,
            f_prev=jnp.asarray(jnp.inf, f0.dtype),
            g=g0,
            status=jnp.where(finite0, _RUNNING, Status.NONFINITE).astype(jnp.int32),
            nfev=jnp.ones([], jnp.int32),
            nhev=jnp.zeros([], jnp.int32),
            nhvp=jnp.zeros([], jnp.int32),
            model=init_model(x0),
            d=jnp.zeros_like(x0),
            fresh=jnp.array(True),
            stall=jnp.zeros([], jnp.int32),
            f_best=f0,
            g_best=gnorm0,
            hist_f=nan.at[0].set(f0) if keep_history else nan,
            hist_g=nan.at[0].set(gnorm0) if keep_history else nan,
        )

        def step(s: _Loop, d):
            slope = jnp.vdot(s.g, d)
            descent = slope < 0
            d = jnp.where(descent | (method == "newton"), d, -s.g)
            # with no curvature pairs yet (H = I) the first trial step is min(1, 1/|g|)
            quasi_newton = method in ("lbfgs", "bfgs")
            fresh = (s.model.count == 0) if method == "lbfgs" else s.fresh & quasi_newton
            t0 = jnp.where(fresh, jnp.minimum(1, 1 / jnp.linalg.norm(s.g)), 1)
            if method == "bfgs":
                # scipy's guess: the step a quadratic model fitted to the last decrease predicts
                guess = 1.01 * 2 * (s.f_prev - s.f) / -slope
                use = jnp.isfinite(guess) & (guess > 0) & ~fresh
                t0 = jnp.where(use, jnp.minimum(t0, guess), t0)
            ls = zoom_search(
                value_and_grad,
                s.x,
                d,
                s.f,
                s.g,
                initial_step=t0.astype(s.x.dtype),
                c1=c1,
                c2=c2,
                max_steps=ls_steps,
                # BFGS only: measured, the rule moves L-BFGS off its bar (see zoom_search)
                interpolate_first_overshoot=fresh & (method == "bfgs"),
            )
            x_new = s.x + ls.step * d
            finite = jnp.isfinite(ls.value) & jnp.all(jnp.isfinite(ls.grad))
            sdiff, ydiff = ls.step * d, ls.grad - s.g
            if wide:
                # s from the iterates actually taken, rounded as they are
                sdiff = x_new.astype(jnp.float64) - s.x.astype(jnp.float64)
                ydiff = ls.grad.astype(jnp.float64) - s.g.astype(jnp.float64)
            if method == "lbfgs":
                model = dirs.lbfgs_update(s.model, sdiff, ydiff)
            elif method == "bfgs":
                # H_0 = I, not rescaled (as scipy): on ill-conditioned problems the
                # s.y / y.y scaling shrinks every low-curvature direction for many steps
                model = dirs.bfgs_inverse_update(s.model, sdiff, ydiff, jnp.array(False))
            else:
                model = s.model
            ok = ls.decreased & finite
            # a failed search with a curvature model: forget the model and retry from
            # steepest descent (as scipy retries); only a failure from there is final
            retry = ~ok & finite & ~fresh & quasi_newton
            gnorm_new = jnp.linalg.norm(ls.grad)
            progress = ~ok | (ls.value < s.f_best) | (gnorm_new < 0.99 * s.g_best)
            stall = jnp.where(progress, 0, s.stall + 1)
            status = jnp.where(
                ok | retry,
                jnp.where(stall >= stall_limit, Status.STALLED, _RUNNING),
                jnp.where(finite, Status.LINESEARCH_FAILED, Status.NONFINITE),
            )
            keep = lambda new, old: jnp.where(ok, new, old)  # noqa: E731
            model = jax.tree.map(keep, model, s.model)
            model = jax.tree.map(lambda a, b: jnp.where(retry, a, b), init_model(s.x), model)
            return s._replace(
                stall=stall,
                f_best=jnp.where(ok, jnp.minimum(s.f_best, ls.value), s.f_best),
                g_best=jnp.where(ok, jnp.minimum(s.g_best, gnorm_new), s.g_best),
                fresh=retry | (fresh & ~ok),
                k=s.k + 1,
                x=keep(x_new, s.x),
                f=keep(ls.value, s.f),
                f_prev=keep(s.f, s.f_prev),
                g=keep(ls.grad, s.g),
                status=status.astype(jnp.int32),
                nfev=s.nfev + ls.num_evals,
                model=model,
            )

        def advance(s: _Loop):
            """The direction at the accepted iterate and the stopping tests there.

            Computed once per iterate, at the end of the iteration that reached it (and
            for x0 before the loop), so the loop body is one straight line: step along
            the carried direction, then advance; no conditional around the step."""
            running = s.status == _RUNNING
            d, stationary_ok, nhev, nhvp = direction(s)
            converged = (jnp.linalg.norm(s.g) <= gtol) & stationary_ok
            status = jnp.where(
                converged,
                Status.SUCCESS,
                jnp.where(s.k >= maxiter, Status.MAXITER, _RUNNING),
            )
            return s._replace(
                d=d,
                nhev=s.nhev + jnp.where(running, nhev, 0),
                nhvp=s.nhvp + jnp.where(running, nhvp, 0),
                status=jnp.where(running, status, s.status).astype(jnp.int32),
            )

        def body(s: _Loop):
            s = step(s, s.d)
            if keep_history:
                moved = s.status == _RUNNING
                gn = jnp.linalg.norm(s.g)
                s = s._replace(
                    hist_f=jnp.where(moved, s.hist_f.at[s.k].set(s.f), s.hist_f),
                    hist_g=jnp.where(moved, s.hist_g.at[s.k].set(gn), s.hist_g),
                )
            return advance(s)

        s = packed_while_loop(lambda s: s.status == _RUNNING, body, advance(init))
        return Solution(
            params=s.x,
            value=s.f,
            grad_norm=jnp.linalg.norm(s.g),
            iterations=s.k,
            num_fun_evals=s.nfev,
            num_grad_evals=s.nfev,
            num_hess_evals=s.nhev,
            num_hvp_evals=s.nhvp,
            status=s.status,
            history=History(s.hist_f, s.hist_g) if keep_history else None,
        )

    return jax.jit(solve_tree)
