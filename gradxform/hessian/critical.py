"""Critical-point classification with certificates.

The second-derivative test: at a critical point, all Hessian eigenvalues
positive means a local minimum, all negative a maximum, mixed signs a saddle. Numerically,
eigenvalues near zero have no reliable sign (at trained networks many sit in
``[-1e-9, 0)``), so gradxform only reports a sign it can certify:

* ``not_critical``: the gradient norm exceeds ``grad_tol``;
* ``saddle``: negative curvature is certified (``theta_min + residual < -tol``)
  and positive curvature too (``theta_max - residual > tol``);
* ``maximum``: negative curvature is certified and ``theta_max + residual < -tol``;
* ``minimum``: ``theta_min - residual > tol``;
* ``degenerate``: none of these: some curvature is within ``tol`` of zero and
  its sign cannot be resolved;
* ``unresolved`` (matrix-free path only): none of these, and an extreme Ritz
  pair is still unconverged (residual above ``tol``) when the product budget
  is spent: the sign is undecided for lack of products, not shown to be near
  zero. A larger ``max_matvecs`` (or the dense path) decides it.

The dense path (``n <= dense_limit``) has zero residuals. The matrix-free path
(Lanczos) also reports ``miss_probability``: Lanczos from a random start
finds the extreme eigenvalue except with probability at most
``1.648 sqrt(n) exp(-(2m - 1) sqrt(eps))`` (Kuczynski & Wozniakowski, 1992)
for ``m`` steps and relative gap ``eps``; for ``minimum`` and ``maximum``
``eps`` is the distance of the extreme Ritz value from zero relative to the
spectral width, so the verdict holds except with that probability.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from gradxform import checks
from gradxform.curvature import check_objective
from gradxform.hessian.lanczos import hessian_eigenpairs
from gradxform.hessian.operators import hessian_matrix

__all__ = ["CriticalPoint", "classify_critical_point"]


class CriticalPoint(NamedTuple):
    """The verdict and the evidence behind it.

    Attributes:
        verdict: ``"minimum"``, ``"maximum"``, ``"saddle"``, ``"degenerate"``,
            ``"unresolved"`` (matrix-free budget spent before the sign was
            decided), ``"not_critical"``, or ``"not_finite"`` when the gradient or
            the curvature came out NaN or infinite (no other verdict is then given).
        grad_norm: ``|grad f|``.
        lambda_min, lambda_max: the extreme eigenvalues (Ritz values on the
            matrix-free path).
        residual_min, residual_max: their certificates (0 on the dense path).
        morse_index: the number of eigenvalues below ``-curvature_tol``
            (dense: exact; matrix-free: certified negative Ritz values among the
            bottom ``k`` computed, a lower bound).
        condition_number: ``max |lambda| / min |lambda|`` (inf if singular).
        grad_tol, curvature_tol: the tolerances used.
        method: ``"dense"`` or ``"lanczos"``.
        num_matvecs: Hessian-vector products used (0 for dense).
        miss_probability: for a matrix-free ``minimum``/``maximum``, the
            bound on the chance that an eigenvalue of the other sign was missed.
    """

    verdict: str
    grad_norm: float
    lambda_min: float
    lambda_max: float
    residual_min: float
    residual_max: float
    morse_index: int
    condition_number: float
    grad_tol: float
    curvature_tol: float
    method: str
    num_matvecs: int
    miss_probability: float


def _verdict(grad_norm, grad_tol, lo, lo_res, hi, hi_res, tol):
    if not np.all(np.isfinite([grad_norm, lo, lo_res, hi, hi_res])):
        return "not_finite"
    if grad_norm > grad_tol:
        return "not_critical"
    negative = lo + lo_res < -tol
    positive = hi - hi_res > tol
    if negative and positive:
        return "saddle"
    if negative and hi + hi_res < -tol:
        return "maximum"
    if lo - lo_res > tol:
        return "minimum"
    if max(lo_res, hi_res) > tol:  # only on the matrix-free path: the budget ran out
        return "unresolved"
    return "degenerate"


class _Extremes(NamedTuple):
    """What one path (dense or Lanczos) found about the spectrum's ends."""

    lo: float
    lo_res: float
    hi: float
    hi_res: float
    morse: int
    smallest: float  # the smallest |eigenvalue| seen
    tol: float
    used: int
    miss: float


def _tolerance(curvature_tol, eps, values) -> float:
    if curvature_tol is not None:
        return curvature_tol
    return float(np.sqrt(eps) * max(1.0, float(np.max(np.abs(values)))))


def _dense_extremes(f, params, eps, curvature_tol) -> _Extremes:
    lam = np.asarray(jnp.linalg.eigvalsh(hessian_matrix(f, params)), np.float64)
    tol = _tolerance(curvature_tol, eps, lam)
    morse = int(np.sum(lam < -tol))
    smallest = float(np.min(np.abs(lam)))
    return _Extremes(float(lam[0]), 0.0, float(lam[-1]), 0.0, morse, smallest, tol, 0, 0.0)


def _lanczos_extremes(f, params, n, eps, curvature_tol, k, max_matvecs, key) -> _Extremes:
    pairs = hessian_eigenpairs(f, params, min(k, n), "both", max_matvecs=max_matvecs, key=key)
    kk = pairs.values.shape[0] // 2
    bottom, top = np.asarray(pairs.values[:kk]), np.asarray(pairs.values[kk:])
    b_res, t_res = np.asarray(pairs.residuals[:kk]), np.asarray(pairs.residuals[kk:])
    tol = _tolerance(curvature_tol, eps, np.concatenate([bottom, top]))
    lo, lo_res, hi, hi_res = float(bottom[0]), float(b_res[0]), float(top[0]), float(t_res[0])
    morse = int(np.sum(bottom + b_res < -tol))
    smallest = float(np.min(np.abs(np.concatenate([bottom, top]))))
    used = int(pairs.num_matvecs)
    width = max(hi - lo, np.finfo(np.float64).tiny)
    gap = min(abs(lo), abs(hi)) / width
    miss = float(min(1.0, 1.648 * np.sqrt(n) * np.exp(-(2 * used - 1) * np.sqrt(gap))))
    if bool(pairs.invariant):  # an invariant Krylov space from a random start: exact
        miss = 0.0
    return _Extremes(lo, lo_res, hi, hi_res, morse, smallest, tol, used, miss)


def _use_dense(method: str, n: int, dense_limit: int, max_matvecs: int) -> bool:
    """The choice of ``method="auto"``: dense when it cannot cost more than Lanczos.

    Dense costs ``n`` products (batched) and an ``O(n^3)`` ``eigvalsh``; Lanczos
    costs up to ``min(max_matvecs, n)`` products, one after another, and
    ``O(m^2 n)`` reorthogonalisation for ``m`` of them. With a budget of ``n`` or
    more it may take as many products as dense, and more arithmetic, so dense
    is chosen there as well as up to ``dense_limit``.
    """
    if method != "auto":
        return method == "dense"
    return n <= max(dense_limit, max_matvecs)


def classify_critical_point(
    f: Callable[[Any], jax.Array],
    params: Any,
    *,
    grad_tol: float = 1e-6,
    curvature_tol: float | None = None,
    method: str = "auto",
    dense_limit: int = 2000,
    k: int = 5,
    max_matvecs: int = 400,
    key: jax.Array | None = None,
) -> CriticalPoint:
    """Classifies ``params`` as a critical point of ``f`` (see the module docstring).

    Args:
        f: the objective, ``f(params) -> scalar``.
        params: the point, a pytree of float arrays.
        grad_tol: the gradient norm below which ``params`` counts as critical.
        curvature_tol: curvature whose magnitude is below it has no certified
            sign; default ``sqrt(eps) * max(1, max |lambda|)``.
        method: ``"dense"`` (``eigvalsh`` of the full Hessian), ``"lanczos"``
            (matrix-free, ``k`` pairs at each end), or ``"auto"``: dense when
            ``n <= max(dense_limit, max_matvecs)`` for ``n`` parameters (with a
            budget of ``n`` products or more, Lanczos cannot cost less than
            the ``n`` products of the dense Hessian), else Lanczos. The path
            taken is the result's ``method``.
        dense_limit: the largest parameter count ``"auto"`` always treats densely.
        k: Ritz pairs per end on the matrix-free path.
        max_matvecs: the matrix-free product budget; Lanczos stops as soon as
            all ``2k`` pairs have converged, so easy points use far fewer (near-zero
            bottom ends of trained networks can take a few hundred).
        key: PRNG key for Lanczos' random start (default ``PRNGKey(0)``).

    Returns:
        A :class:`CriticalPoint`: the verdict and the evidence behind it.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> saddle = lambda p: p[0] ** 2 - p[1] ** 2
        >>> gx.hessian.classify_critical_point(saddle, jnp.zeros(2)).verdict
        'saddle'
    """
    check_objective(f, params)
    checks.choice("method", method, ("auto", "dense", "lanczos"))
    grad_tol = checks.real("grad_tol", grad_tol, lower=0)
    if curvature_tol is not None:
        curvature_tol = checks.real("curvature_tol", curvature_tol, lower=0)
    dense_limit = checks.integer("dense_limit", dense_limit, minimum=0)
    k = checks.integer("k", k, minimum=1)
    max_matvecs = checks.integer("max_matvecs", max_matvecs, minimum=1)
    flat, _ = ravel_pytree(params)
    n = flat.size
    eps = float(jnp.finfo(flat.dtype).eps)
    grad_norm = float(jnp.linalg.norm(ravel_pytree(jax.grad(f)(params))[0]))
    use_dense = _use_dense(method, n, dense_limit, max_matvecs)
    if use_dense:
        e = _dense_extremes(f, params, eps, curvature_tol)
    else:
        e = _lanczos_extremes(f, params, n, eps, curvature_tol, k, max_matvecs, key)
    verdict = _verdict(grad_norm, grad_tol, e.lo, e.lo_res, e.hi, e.hi_res, e.tol)
    largest = max(abs(e.lo), abs(e.hi))
    return CriticalPoint(
        verdict=verdict,
        grad_norm=grad_norm,
        lambda_min=e.lo,
        lambda_max=e.hi,
        residual_min=e.lo_res,
        residual_max=e.hi_res,
        morse_index=e.morse,
        condition_number=float(largest / e.smallest) if e.smallest > 0 else float("inf"),
        grad_tol=grad_tol,
        curvature_tol=float(e.tol),
        method="dense" if use_dense else "lanczos",
        num_matvecs=e.used,
        miss_probability=e.miss if verdict in ("minimum", "maximum") else 0.0,
    )
