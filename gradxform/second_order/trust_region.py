"""Trust-region Newton: the iteration, its radius rule, and ``minimize``'s loop for it.

A trust-region iteration does not search along a direction: at the iterate
``x`` it minimises the quadratic model ``m(p) = f + g.p + p.H p / 2`` within
``|p| <= radius`` (:mod:`~gradxform.second_order.trust_subproblem`), evaluates
``f(x + p)`` once, and compares the actual decrease with the predicted one,
``rho = (f(x) - f(x + p)) / (m(0) - m(p))``. The rules are scipy's
(``scipy.optimize._trustregion``), so iteration counts compare one to one:

* the radius starts at ``initial_radius`` (1);
* ``rho < 1/4``: the radius shrinks to a quarter;
* ``rho > 3/4`` and ``p`` on the boundary: it doubles, up to ``max_radius`` (1000);
* the step is accepted if ``rho > eta`` (0.15), else ``x`` stays and the next
  iteration solves the subproblem again with the smaller radius;
* unlike scipy, a trial point whose value is not finite counts as ``rho = -inf``
  (the radius shrinks) instead of leaving the radius unchanged.

Every trial is one iteration (accepted or not) and one evaluation of
``value_and_grad``; the curvature (a dense Hessian for ``trust-exact``, nothing
for ``trust-ncg``, which uses Hessian-vector products inside the subproblem) is
computed once per accepted iterate and reused while the radius shrinks there, as
is the subproblem solver's memory (``trust-exact``: scipy's lower bound on the
shift, reused when the radius shrinks at the same point). :func:`trial_step` is the
iteration, shared by the
:func:`~gradxform.second_order.transforms.scale_by_trust_region` transform and by
:func:`run`, the solve loop :func:`gradxform.minimize` dispatches to.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform import _linalg, checks, curvature
from gradxform.second_order import _tree
from gradxform.second_order import trust_subproblem as sub
from gradxform.second_order._packed import packed_while_loop
from gradxform.second_order.linesearch import Point

__all__ = [
    "Curvature",
    "Trial",
    "TrustMethod",
    "TrustRegion",
    "exact_method",
    "ncg_method",
    "radius_update",
    "run",
    "trial_step",
]


class TrustRegion(NamedTuple):
    """The trust-region constants (scipy's defaults).

    Attributes:
        eta: a step is accepted if ``rho > eta`` (``0 <= eta < 1/4``).
        initial_radius: the first radius (> 0).
        max_radius: the largest radius (>= ``initial_radius``).
    """

    eta: Any = 0.15
    initial_radius: Any = 1.0
    max_radius: Any = 1000.0


class Curvature(NamedTuple):
    """A method's curvature at an accepted iterate.

    Attributes:
        model: what its subproblem solver reads (a
            :class:`~gradxform.second_order.trust_subproblem.HessianEigh`, or ``()``).
        stationary: a small gradient may end a solve here (``trust-exact``: no
            eigenvalue below ``-sqrt(eps) max(1, |lam|max)``; ``trust-ncg``: True).
        finite: the curvature is finite.
        hessians: dense Hessians computed (int32).
    """

    model: Any
    stationary: jax.Array
    finite: jax.Array
    hessians: jax.Array


def _no_memory(dtype: Any) -> tuple:
    del dtype
    return ()


class TrustMethod(NamedTuple):
    """One trust-region method.

    Attributes:
        name: as :func:`gradxform.minimize` spells it.
        curvature: ``(objective, x) -> Curvature`` at a flat point ``x``.
        solve: ``(model, memory, objective, x, g, radius) -> SubproblemStep``.
        memory: ``dtype -> memory`` of a point where nothing was solved yet (what a
            solve passes to the next one at the same point, in ``SubproblemStep.memory``).
    """

    name: str
    curvature: Callable[[Callable, jax.Array], Curvature]
    solve: Callable[..., sub.SubproblemStep]
    memory: Callable[[Any], Any] = _no_memory


def exact_method(subproblem: str = "more-sorensen") -> TrustMethod:
    """``trust-exact``: the dense Hessian and the Moré-Sorensen step.

    Args:
        subproblem: ``"more-sorensen"`` (scipy's iteration on Cholesky factorisations,
            :func:`~gradxform.second_order.trust_subproblem.more_sorensen_subproblem`:
            the iterates of scipy's ``trust-exact``) or ``"exact"`` (the same
            iteration in the Hessian's eigenbasis, exact eigenvector in the hard case,
            :func:`~gradxform.second_order.trust_subproblem.exact_subproblem`).

    Returns:
        The :class:`TrustMethod`.

    Raises:
        ValueError: ``subproblem`` is neither.
    """
    checks.choice("subproblem", subproblem, ("more-sorensen", "exact"))
    one = jnp.ones([], jnp.int32)

    def curv_eigh(objective, x):
        eig = sub.hessian_eigh(curvature.dense_hessian(objective, x))
        lam = eig.eigenvalues
        eps = jnp.finfo(lam.dtype).eps
        floor = -jnp.sqrt(eps) * jnp.maximum(1.0, jnp.max(jnp.abs(lam)))
        finite = jnp.all(jnp.isfinite(lam)) & jnp.all(jnp.isfinite(eig.eigenvectors))
        return Curvature(eig, lam[0] >= floor, finite, one)

    def solve_eigh(model, memory, objective, x, g, radius):
        del memory, objective, x
        return sub.exact_subproblem(model, g, radius)

    def curv_chol(objective, x):
        h = curvature.dense_hessian(objective, x)
        eps = jnp.finfo(h.dtype).eps
        norm_inf = jnp.max(jnp.sum(jnp.abs(h), axis=1))  # >= |lam|max
        shift = jnp.sqrt(eps) * jnp.maximum(1.0, norm_inf)
        sym = (h + h.T) / 2 + shift * jnp.eye(h.shape[0], dtype=h.dtype)
        near_psd = jnp.all(jnp.isfinite(_linalg.cholesky(sym)))  # lam_1 > -shift
        return Curvature(h, near_psd, jnp.all(jnp.isfinite(h)), one)

    def solve_chol(model, memory, objective, x, g, radius):
        del objective, x
        return sub.more_sorensen_subproblem(model, g, radius, memory)

    if subproblem == "exact":
        return TrustMethod("trust-exact", curv_eigh, solve_eigh)
    return TrustMethod("trust-exact", curv_chol, solve_chol, sub.ms_memory)


def ncg_method(max_cg_steps: int) -> TrustMethod:
    """``trust-ncg``: Steihaug-Toint CG on Hessian-vector products, no Hessian formed.

    Args:
        max_cg_steps: the most products per subproblem (a Python int >= 1).

    Returns:
        The :class:`TrustMethod`.
    """

    def curv(objective, x):
        del objective
        true = jnp.array(True)
        return Curvature((), true, true, jnp.zeros([], jnp.int32))

    def solve(model, memory, objective, x, g, radius):
        del model, memory
        return sub.steihaug_subproblem(
            lambda v: curvature.hvp(objective, x, v), g, radius, max_cg_steps
        )

    return TrustMethod("trust-ncg", curv, solve)


def radius_update(
    radius: jax.Array, rho: jax.Array, hits_boundary: jax.Array, max_radius: Any
) -> jax.Array:
    """scipy's rule: a quarter below ``rho = 1/4``; doubled (to ``max_radius``) above 3/4 on
    the boundary; else unchanged.

    Args:
        radius: the radius the step was computed in.
        rho: actual over predicted decrease (``-inf`` for a non-finite trial).
        hits_boundary: the step lies on the boundary.
        max_radius: the cap.

    Returns:
        The next radius.
    """
    grown = jnp.minimum(2 * radius, jnp.asarray(max_radius, radius.dtype))
    return jnp.where(
        rho < 0.25, 0.25 * radius, jnp.where((rho > 0.75) & hits_boundary, grown, radius)
    )


class Trial(NamedTuple):
    """One trust-region iteration.

    Attributes:
        point: the new :class:`~gradxform.second_order.linesearch.Point`
            (the old one where the trial was rejected).
        trial: the trial point's ``Point`` (whether accepted or not).
        step: the subproblem's step ``p``.
        accepted: ``rho > eta``.
        radius: the next radius.
        rho: actual over predicted decrease.
        predicted: the predicted decrease (<= 0 only at floating-point resolution).
        hvps: Hessian-vector products the subproblem used.
        memory: what the next solve reads (the method's fresh memory where accepted).
    """

    point: Point
    trial: Point
    step: jax.Array
    accepted: jax.Array
    radius: jax.Array
    rho: jax.Array
    predicted: jax.Array
    hvps: jax.Array
    memory: Any


def trial_step(
    method: TrustMethod,
    objective: Callable,
    value_and_grad: Callable,
    point: Point,
    model: Any,
    memory: Any,
    radius: jax.Array,
    rules: TrustRegion,
) -> Trial:
    """One iteration from ``point`` (flat vectors) with the curvature ``model`` there.

    Args:
        method: the :class:`TrustMethod`.
        objective: ``f`` on flat vectors.
        value_and_grad: ``x -> (f(x), gradient)``.
        point: the iterate.
        model: ``method.curvature(objective, point.x).model``.
        memory: the last trial's ``memory`` (``method.memory(dtype)`` at a new point).
        radius: the current radius.
        rules: the :class:`TrustRegion` constants (numbers or traced scalars).

    Returns:
        A :class:`Trial`.
    """
    dtype = point.value.dtype
    found = method.solve(model, memory, objective, point.x, point.grad, radius)
    p = found.step.astype(point.x.dtype)
    x_new = point.x + p
    f_new, g_new = value_and_grad(x_new)
    predicted = found.predicted.astype(dtype)
    actual = point.value - f_new
    ok = jnp.isfinite(f_new) & _tree.all_finite(g_new) & (predicted > 0)
    rho = jnp.where(ok, actual / jnp.where(predicted > 0, predicted, 1), -jnp.inf)
    accepted = rho > jnp.asarray(rules.eta, dtype)
    trial = Point(x_new, f_new, g_new)
    return Trial(
        point=_tree.select(accepted, trial, point),
        trial=trial,
        step=p,
        accepted=accepted,
        radius=radius_update(radius, rho, found.hits_boundary, rules.max_radius),
        rho=rho,
        predicted=predicted,
        hvps=found.hvps,
        memory=_tree.select(accepted, method.memory(point.x.dtype), found.memory),
    )


# --- minimize's loop ------------------------------------------------------------------


class _Loop(NamedTuple):
    k: jax.Array
    point: Point
    status: jax.Array
    nfev: jax.Array
    nhev: jax.Array
    nhvp: jax.Array
    curvature: Curvature
    memory: Any
    radius: jax.Array
    hist_f: jax.Array
    hist_g: jax.Array


def _status(s: _Loop, gtol, maxiter, codes, running, stalled) -> jax.Array:
    """The loop's status after reaching ``s`` (``running`` while it goes on)."""
    p = s.point
    gnorm = _tree.norm(p.grad, p.value.dtype)
    finite = jnp.isfinite(p.value) & _tree.all_finite(p.grad) & s.curvature.finite
    status = jnp.where(
        ~finite,
        codes.NONFINITE,
        jnp.where(
            (gnorm <= gtol) & s.curvature.stationary,
            codes.SUCCESS,
            jnp.where(s.k >= maxiter, codes.MAXITER, jnp.where(stalled, codes.STALLED, running)),
        ),
    )
    return status.astype(jnp.int32)


def run(problem: Any, x0: jax.Array, f0, g0, gnorm0, gtol, codes: Any, running: int) -> _Loop:
    """The whole trust-region solve from ``x0`` (flat), as :func:`gradxform.minimize` runs it.

    Args:
        problem: ``minimize``'s traced problem (``method`` a :class:`TrustMethod`,
            ``objective``, ``value_and_grad``, ``runtime.maxiter``,
            ``settings.history_length``); the constants are :class:`TrustRegion`'s defaults.
        x0: the start.
        f0: ``f(x0)``.
        g0: its gradient.
        gnorm0: ``|g0|``.
        gtol: the absolute gradient tolerance.
        codes: the status enum (:class:`~gradxform.second_order.minimize.Status`).
        running: the status code of a solve still running.

    Returns:
        The final loop state (``k``, ``point``, ``status``, ``nfev``, ``nhev``,
        ``nhvp``, ``hist_f``, ``hist_g`` as ``minimize`` reads them).
    """
    method, rules = problem.method, TrustRegion()
    maxiter, length = problem.runtime.maxiter, problem.settings.history_length
    zero = jnp.zeros([], jnp.int32)
    curv0 = method.curvature(problem.objective, x0)
    nan = jnp.full(length, jnp.nan, x0.dtype)
    hist_f, hist_g = (nan.at[0].set(f0), nan.at[0].set(gnorm0)) if length else (nan, nan)
    start = _Loop(
        k=zero,
        point=Point(x0, f0, g0),
        status=zero,
        nfev=jnp.ones([], jnp.int32),
        nhev=curv0.hessians,
        nhvp=zero,
        curvature=curv0,
        memory=method.memory(x0.dtype),
        radius=jnp.asarray(rules.initial_radius, f0.dtype),
        hist_f=hist_f,
        hist_g=hist_g,
    )
    start = start._replace(status=_status(start, gtol, maxiter, codes, running, False))

    def body(s: _Loop) -> _Loop:
        t = trial_step(
            method, problem.objective, problem.value_and_grad, s.point, s.curvature.model,
            s.memory, s.radius, rules,
        )  # fmt: skip
        curv = jax.lax.cond(
            t.accepted, lambda: method.curvature(problem.objective, t.point.x), lambda: s.curvature
        )
        resolution = jnp.finfo(x0.dtype).eps * jnp.maximum(1.0, jnp.linalg.norm(s.point.x))
        stalled = (t.predicted <= 0) | (t.radius < resolution)
        new = s._replace(
            k=s.k + 1,
            point=t.point,
            nfev=s.nfev + 1,
            nhev=s.nhev + jnp.where(t.accepted, curv.hessians, 0),
            nhvp=s.nhvp + t.hvps,
            curvature=curv,
            memory=t.memory,
            radius=t.radius,
        )
        if length:
            gnorm = _tree.norm(t.point.grad, t.point.value.dtype)
            new = new._replace(
                hist_f=s.hist_f.at[new.k].set(t.point.value), hist_g=s.hist_g.at[new.k].set(gnorm)
            )
        return new._replace(status=_status(new, gtol, maxiter, codes, running, stalled))

    return packed_while_loop(lambda s: s.status == running, body, start)
