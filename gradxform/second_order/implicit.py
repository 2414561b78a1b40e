"""Differentiating through a solution: the implicit function theorem.

A minimizer ``x*(theta)`` of ``f(x, theta)`` satisfies ``grad_x f(x*, theta) = 0``.
Differentiating that identity in ``theta`` gives, with ``H`` the Hessian of
``f`` in ``x`` at ``x*``,

    H dx* = -(d grad_x f / d theta) dtheta,

so a derivative of the solution costs one linear solve with ``H`` and no
pass back through the solver's iterations. :func:`differentiable` wraps a
solver so that ``jax.jvp``, ``jax.grad``, ``jax.jacfwd`` and ``jax.jacrev``
of its ``params`` use that formula: its tangent rule is a
``jax.lax.custom_linear_solve`` whose matrix-vector product is a
Hessian-vector product (:func:`gradxform.curvature.linearized_hvp`), marked
symmetric, so reverse mode is the transposed solve with the same solver.
The solve is conjugate gradients (``"cg"``, no matrix formed) or, for small
``n``, a dense eigendecomposition of ``H`` (``"dense"``).

Semantics, the same as optimistix's ``ImplicitAdjoint`` and jaxopt's
``implicit_diff``:

* the start ``x0`` has a zero derivative (the solution does not depend on
  where the search began);
* the objective's data ``args``, and any traced values the objective closes
  over, are differentiated;
* the solution's other fields (value, gradient norm, counts, status) carry
  zero tangents: differentiate ``fun(sol.params, *args)`` for the optimal
  value;
* the formula is applied at the returned point whatever its status: at a
  point that is not stationary it is the derivative of the stationary
  point of the local model there, accurate to about the gradient norm;
* where ``H`` is singular and the right-hand side lies in its range (a flat
  valley), both solvers return the minimum-norm solution (CG started at zero
  stays in the range of ``H``; the dense solver drops eigenvalues below
  ``n eps |lambda|max``); otherwise no derivative exists and the result is
  large and meaningless. CG assumes ``H`` positive (semi-)definite, as it is
  at a minimum.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero

from gradxform import _linalg, checks, curvature
from gradxform.second_order import _tree

__all__ = ["METHODS", "differentiable", "half_squared_norm"]

METHODS = ("cg", "dense")

Solver = Callable[..., Any]  # solve(fun, x0, args, runtime) -> record with a ``params`` field


def differentiable(
    solve: Solver, fun: Callable, method: str, objective: Callable | None = None
) -> Callable:
    """``solve`` whose ``params`` output is differentiated by the implicit function theorem.

    Args:
        solve: ``solve(fun, x0, args, runtime) -> record``, a solver that
            minimizes ``fun(params, *args)`` (or ``objective(fun)``) from
            ``x0`` and returns a NamedTuple with a ``params`` field shaped like
            ``x0``; ``runtime`` is a NamedTuple of its numeric settings (never
            differentiated).
        fun: the objective, ``fun(params, *args) -> scalar``, or what
            ``objective`` makes one of.
        method: the linear solve with the Hessian, ``"cg"`` or ``"dense"``.
        objective: ``objective(fun) -> f`` with ``f(params, *args) -> scalar``
            the function ``solve`` minimizes, when ``fun`` is not it (for least
            squares, :func:`half_squared_norm`); default ``fun`` itself.

    Returns:
        ``run(x0, args, runtime) -> record``: ``solve``'s result, with a
        custom derivative with respect to ``args`` (and to traced values
        ``fun`` closes over) through ``params`` only.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from gradxform.second_order import implicit
        >>> from typing import NamedTuple
        >>> class Result(NamedTuple):
        ...     params: jax.Array
        >>> def newton(fun, x0, args, runtime):  # one exact step: f is quadratic
        ...     g, h = jax.grad(fun)(x0, *args), jax.hessian(fun)(x0, *args)
        ...     return Result(x0 - jnp.linalg.solve(h, g))
        >>> ridge = lambda w, lam: jnp.sum((w - 1.0) ** 2) + lam * jnp.sum(w**2)
        >>> run = implicit.differentiable(newton, ridge, "cg")
        >>> jax.grad(lambda lam: run(jnp.zeros(2), (lam,), ()).params[0])(1.0)  # -1/(1+lam)^2
        Array(-0.25, dtype=float32, weak_type=True)
    """
    checks.choice("implicit_diff", method, METHODS)
    make = _identity if objective is None else objective

    def run(x0, args, runtime):
        converted, consts = jax.closure_convert(lambda x, *a: fun(x, *a), x0, *args)
        if not consts:  # fun closes over no traced value: solve it as it is
            return _solution(solve, fun, make, method, len(args), x0, tuple(args), runtime)
        args = (*args, *consts)
        return _solution(solve, converted, make, method, len(args) - len(consts), x0, args, runtime)

    return run


def half_squared_norm(residual_fn: Callable) -> Callable:
    """The least-squares objective ``|r|^2 / 2`` of ``residual_fn(params, *args) -> pytree``.

    Args:
        residual_fn: the residuals, any pytree of float arrays.

    Returns:
        ``f(params, *args) -> scalar``, half the sum of the squared residuals.

    Example:
        >>> import jax.numpy as jnp
        >>> from gradxform.second_order import implicit
        >>> implicit.half_squared_norm(lambda p, y: {"a": p - y, "b": p})(jnp.ones(2), 3.0)
        Array(5., dtype=float32)
    """

    def cost(params, *args):
        leaves = jax.tree.leaves(residual_fn(params, *args))
        return 0.5 * sum(jnp.sum(leaf**2) for leaf in leaves)

    return cost


def _identity(fun: Callable) -> Callable:
    return fun


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1, 2, 3, 4))
def _solution(solve: Solver, fun, objective, method: str, num_args: int, x0, args, runtime):
    """``solve(fun, x0, args, runtime)``; ``args[num_args:]`` are hoisted closure values."""
    del objective, method, num_args
    return solve(fun, x0, args, runtime)


def _solution_jvp(solve, fun, objective, method, num_args, primals, tangents):
    x0, args, runtime = primals
    _, args_dot, runtime_dot = tangents
    _check_tangents(args, args_dot, runtime, runtime_dot, num_args)
    record = solve(fun, x0, args, runtime)
    zeros = jax.tree.map(_zero_tangent, record)
    params_dot = _params_tangent(objective(fun), method, record.params, args, args_dot)
    return record, zeros._replace(params=params_dot)


_solution.defjvp(_solution_jvp, symbolic_zeros=True)


def _zero_tangent(leaf):
    """A zero tangent for an output ``leaf`` (``float0`` for integers and booleans)."""
    if jnp.issubdtype(leaf.dtype, jnp.inexact):
        return jnp.zeros_like(leaf)
    return np.zeros(np.shape(leaf), jax.dtypes.float0)


def _check_tangents(args, args_dot, runtime, runtime_dot, num_args: int) -> None:
    """Raises for a differentiated value the solution has no derivative with respect to."""
    for path, dot in jax.tree_util.tree_flatten_with_path(runtime_dot, is_leaf=_is_zero)[0]:
        if not isinstance(dot, SymbolicZero):
            name = jax.tree_util.keystr(path).lstrip(".")
            checks.fail(
                name,
                "constant when the solution is differentiated (it has no derivative with "
                f"respect to {name}; wrap it in jax.lax.stop_gradient)",
                "a traced value being differentiated",
            )
    paths = jax.tree_util.tree_flatten_with_path(args)[0]
    for (path, leaf), dot in zip(paths, jax.tree.leaves(args_dot, is_leaf=_is_zero)):
        if isinstance(dot, SymbolicZero) or jnp.issubdtype(leaf.dtype, jnp.floating):
            continue
        closed_over = path[0].idx >= num_args
        where = "a value fun closes over" if closed_over else f"args{jax.tree_util.keystr(path)}"
        checks.fail(
            where,
            "a real floating array to differentiate the solution with respect to it",
            f"{jnp.dtype(leaf.dtype).name} array being differentiated",
            TypeError,
        )


def _is_zero(x) -> bool:
    return isinstance(x, SymbolicZero)


def _params_tangent(fun, method: str, params, args, args_dot):
    """``-H^{-1} (d grad_x f / d args) args_dot`` at ``params``, shaped like ``params``."""
    x, unravel = _tree.flat_view(params)
    leaves, treedef = jax.tree.flatten(args)
    dots = jax.tree.leaves(args_dot, is_leaf=_is_zero)
    active = [i for i, dot in enumerate(dots) if not isinstance(dot, SymbolicZero)]

    def gradient(z, values):
        full = list(leaves)
        for i, value in zip(active, values):
            full[i] = value
        return jax.grad(lambda v: fun(unravel(v), *jax.tree.unflatten(treedef, full)))(z)

    if not active:
        return jax.tree.map(jnp.zeros_like, params)
    values = [leaves[i] for i in active]
    _, mixed = jax.jvp(lambda *v: gradient(x, v), values, [dots[i] for i in active])
    hessian = curvature.linearized_hvp(lambda v: fun(unravel(v), *args), x)
    solver = _cg_solve if method == "cg" else _dense_solve
    x_dot = jax.lax.custom_linear_solve(hessian, -mixed, solver, symmetric=True)
    return unravel(x_dot)


class _CG(NamedTuple):
    k: jax.Array
    x: jax.Array
    r: jax.Array
    p: jax.Array
    rr: jax.Array  # r.r
    top: jax.Array  # the largest Rayleigh quotient p.Hp / p.p seen (a scale for H)
    flat: jax.Array  # a direction of zero or negative curvature was met


def _cg_solve(matvec, b):
    """Conjugate gradients from zero for ``H v = b`` (``H`` symmetric positive semi-definite).

    Stops at a relative residual of ``eps^0.75`` or after ``10 n`` products; the
    result is NaN if a direction of (numerically) zero or negative curvature
    is met first (``p.Hp <= n eps max(Rayleigh quotients) p.p``): ``H`` is
    singular and ``b`` is not in its range, or ``H`` is indefinite.
    """
    eps = jnp.finfo(b.dtype).eps
    stop = eps**1.5 * (b @ b)

    def proceed(s: _CG):
        return ~s.flat & (s.k < 10 * b.size) & (s.rr > stop)

    def step(s: _CG) -> _CG:
        hp = matvec(s.p)
        curvature, pp = s.p @ hp, s.p @ s.p
        top = jnp.maximum(s.top, curvature / pp)
        flat = curvature <= b.size * eps * top * pp
        alpha = s.rr / jnp.where(flat, 1, curvature)
        x, r = s.x + alpha * s.p, s.r - alpha * hp
        rr = r @ r
        p = r + (rr / s.rr) * s.p
        return _CG(s.k + 1, x, r, p, rr, top, flat)

    zero = jnp.zeros((), b.dtype)
    first = _CG(jnp.zeros((), jnp.int32), jnp.zeros_like(b), b, b, b @ b, zero, jnp.array(False))
    done = jax.lax.while_loop(proceed, step, first)
    return jnp.where(done.flat, jnp.nan, done.x)


def _dense_solve(matvec, b):
    """The minimum-norm solution of ``H v = b`` from the eigendecomposition of the dense ``H``
    (eigenvalues below ``n eps |lambda|max`` dropped)."""
    matrix = jax.vmap(matvec)(jnp.eye(b.size, dtype=b.dtype))
    lam, q = _linalg.eigh(0.5 * (matrix + matrix.T))
    cutoff = b.size * jnp.finfo(b.dtype).eps * jnp.max(jnp.abs(lam))
    inverse = jnp.where(jnp.abs(lam) > cutoff, 1 / jnp.where(lam == 0, 1, lam), 0)
    return q @ (inverse * (q.T @ b))
