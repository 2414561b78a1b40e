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

Default tolerances follow the dtype and the problem, with ``eps`` the params'
machine epsilon and ``|H|`` the largest ``|eigenvalue|`` found. ``grad_tol`` is
``eps**(1/3) * max(1, |H| |x|)``: a critical point stored to working precision
(``eps |x|`` away) has a gradient of about ``eps |H| |x|``; the margin
``eps**(-2/3)`` above that keeps the float64 default (``6e-6`` times the scale)
above the gradient norm at which :func:`gradxform.minimize` stops by default
(``1e-6`` relative), and gives ``4.9e-3`` times the scale in float32.
``curvature_tol`` is ``sqrt(eps) * max(1, |H|)``.

What a verdict rests on is stated in ``guarantee``. On the dense path (the
eigenvalues of the whole computed Hessian) and for a matrix-free ``saddle`` or
``not_critical`` (residual certificates and the gradient alone) it is
``"deterministic"``. A matrix-free ``minimum``, ``maximum`` or ``degenerate``
also assumes that Lanczos, from a random start, did not miss an eigenvalue
beyond the extreme Ritz values that would change the verdict; that fails
with probability at most ``miss_probability`` =
``1.648 sqrt(n) exp(-(2m - 1) sqrt(d / w))`` (Kuczynski & Wozniakowski, 1992)
for ``m`` products, ``d`` the distance the extreme Ritz value would have to
move to change the verdict and ``w`` the spectral width (taken as the Ritz
width plus the residuals). Below 1 the guarantee is ``"probabilistic"``; at 1
(the bound says nothing) it is ``"none"``, as for ``unresolved`` and
``not_finite``.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradxform import checks
from gradxform.curvature import check_objective
from gradxform.hessian import _vectors as V
from gradxform.hessian.extreme import hessian_eigenpairs
from gradxform.hessian.operators import _hashable, hessian_matrix

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
            ``2k`` computed, a lower bound).
        condition_number: ``max |lambda| / min |lambda|``. Dense: exact (inf if
            singular). Matrix-free: only when the curvature is certified of one
            sign (as for a ``minimum`` or ``maximum``), where the eigenvalue
            nearest zero is an extreme one, as ``max(|theta|) / min(|theta|)``
            of the extreme Ritz values, a lower bound that is tight to the
            residuals; NaN otherwise, because the eigenvalue nearest zero may
            then be inside the spectrum, which Lanczos from the ends does not reach.
        grad_tol, curvature_tol: the tolerances used.
        method: ``"dense"`` or ``"lanczos"``: the path taken (``"auto"`` resolved).
        num_matvecs: Hessian-vector products used (0 for dense).
        miss_probability: matrix-free only: a bound on the chance that Lanczos
            missed an eigenvalue that would change the verdict (0 when it does
            not depend on that, and on the dense path).
        guarantee: ``"deterministic"``, ``"probabilistic"`` (holds except with
            probability ``miss_probability``) or ``"none"`` (the verdict rests
            on no guarantee; see the module docstring).
        note: what the verdict rests on, in words, when it is not
            deterministic, and why ``condition_number`` is NaN; empty otherwise.
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
    guarantee: str
    note: str


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
    condition: float  # dense: exact; Lanczos: from the extreme Ritz values (one-signed only)
    tol: float
    used: int
    invariant: bool  # the Krylov space became invariant (Lanczos only)
    krylov: int = 0  # steps of the first Lanczos run, the dimension the miss bound is for


def _tolerance(curvature_tol, eps, values) -> float:
    if curvature_tol is not None:
        return curvature_tol
    return float(np.sqrt(eps) * max(1.0, float(np.max(np.abs(values)))))


def _dense_extremes(f, params, eps, curvature_tol) -> _Extremes:
    # LAPACK's eigenvalues-only driver: a few times cheaper than jnp.linalg.eigvalsh,
    # which computes the eigenvectors as well
    dense = f.matrix(params) if _is_dataset(f) else hessian_matrix(f, params)
    matrix = np.asarray(dense, np.float64)
    if not np.all(np.isfinite(matrix)):  # LAPACK would raise; the verdict is not_finite
        tol = _tolerance(curvature_tol, eps, np.zeros(1))
        return _Extremes(np.nan, 0.0, np.nan, 0.0, 0, np.nan, tol, 0, False)
    lam = np.linalg.eigvalsh(matrix)
    tol = _tolerance(curvature_tol, eps, lam)
    morse = int(np.sum(lam < -tol))
    smallest, largest = float(np.min(np.abs(lam))), float(np.max(np.abs(lam)))
    condition = largest / smallest if smallest > 0 else float("inf")
    return _Extremes(float(lam[0]), 0.0, float(lam[-1]), 0.0, morse, condition, tol, 0, False)


def _lanczos_extremes(f, params, n, eps, curvature_tol, k, max_matvecs, key) -> _Extremes:
    k = min(k, n // 2)  # both ends without overlap
    pairs = hessian_eigenpairs(f, params, k, "both", max_matvecs=max_matvecs, key=key)
    values, residuals = np.asarray(pairs.values), np.asarray(pairs.residuals)
    tol = _tolerance(curvature_tol, eps, values)
    lo, lo_res, hi, hi_res = (float(x[i]) for i in (0, k) for x in (values, residuals))
    # certified negatives among both ends; an end repeats a pair when the Krylov space
    # holds fewer than 2k Ritz values, so repeats are counted once (a lower bound still)
    morse = len({(v, r) for v, r in zip(values, residuals) if v + r < -tol})
    near, far = sorted([abs(lo), abs(hi)])
    condition = far / near if near > 0 else float("inf")
    used, invariant = int(pairs.num_matvecs), bool(pairs.invariant)
    krylov = int(pairs.krylov_dimension)
    return _Extremes(lo, lo_res, hi, hi_res, morse, condition, tol, used, invariant, krylov)


def _miss_probability(verdict: str, e: _Extremes, n: int) -> float:
    """The Kuczynski-Wozniakowski bound on missing an eigenvalue that changes ``verdict``.

    ``d`` is how far an extreme Ritz value would have to move outward for the
    verdict to change: below ``tol`` for a minimum, below ``-tol`` for a
    degenerate point with certified positive curvature (it would be a saddle),
    and the mirror images at the top.
    """
    if verdict not in ("minimum", "maximum", "degenerate") or e.invariant:
        return 0.0  # no miss changes it; or an invariant Krylov space from a random start
    width = max((e.hi + e.hi_res) - (e.lo - e.lo_res), np.finfo(np.float64).tiny)

    def bound(d):
        gap = max(d, 0.0) / width
        return float(min(1.0, 1.648 * np.sqrt(n) * np.exp(-(2 * e.krylov - 1) * np.sqrt(gap))))

    if verdict == "minimum":
        return bound(e.lo - e.tol)
    if verdict == "maximum":
        return bound(-e.tol - e.hi)
    below, above = bound(e.lo + e.tol), bound(e.tol - e.hi)
    if e.hi - e.hi_res > e.tol:  # positive curvature certified: a miss below makes a saddle
        return below
    if e.lo + e.lo_res < -e.tol:  # negative curvature certified: a miss above does
        return above
    return min(below, above)  # it takes a miss at both ends


def _guarantee(verdict: str, dense: bool, miss: float) -> tuple[str, str]:
    """``(guarantee, note)`` for a verdict (see :class:`CriticalPoint`)."""
    if verdict == "not_finite":
        return "none", "the gradient or the curvature is NaN or infinite"
    if verdict == "unresolved":
        return "none", "the product budget ran out before the sign was decided"
    if dense or verdict in ("saddle", "not_critical"):
        return "deterministic", ""
    if miss >= 1.0:
        return "none", (
            "no guarantee: the bound on the chance that Lanczos missed an eigenvalue "
            "that would change the verdict is vacuous (1); use method='dense' or a "
            "larger max_matvecs"
        )
    return "probabilistic", f"holds unless Lanczos missed an eigenvalue (chance <= {miss:.2g})"


def _result(grad_norm, grad_tol, e: _Extremes, dense: bool, n: int) -> CriticalPoint:
    verdict = _verdict(grad_norm, grad_tol, e.lo, e.lo_res, e.hi, e.hi_res, e.tol)
    miss = 0.0 if dense else _miss_probability(verdict, e, n)
    guarantee, note = _guarantee(verdict, dense, miss)
    condition = e.condition
    one_signed = e.lo - e.lo_res > e.tol or e.hi + e.hi_res < -e.tol
    if not dense and not one_signed:  # the eigenvalue nearest zero may be interior
        condition = float("nan")
        if verdict != "not_finite":
            why = "condition_number undetermined: the eigenvalue nearest zero may be interior"
            note = f"{note}; {why}" if note else why
    return CriticalPoint(
        verdict=verdict,
        grad_norm=grad_norm,
        lambda_min=e.lo,
        lambda_max=e.hi,
        residual_min=e.lo_res,
        residual_max=e.hi_res,
        morse_index=e.morse,
        condition_number=float(condition),
        grad_tol=grad_tol,
        curvature_tol=float(e.tol),
        method="dense" if dense else "lanczos",
        num_matvecs=e.used,
        miss_probability=miss,
        guarantee=guarantee,
        note=note,
    )


def _is_dataset(f: Any) -> bool:
    """A :class:`~gradxform.hessian.DatasetObjective` (its curvature kind is analysed)."""
    return hasattr(f, "_tree_operator_at")


def _grad(f: Any, params: Any) -> Any:
    """``grad f`` at ``params``: one compiled program for a hashable ``f`` (cached per ``f``
    and parameter shapes), where the eager gradient would compile op by op."""
    return _grad_compiled(f, params) if _hashable(f) else jax.grad(f)(params)


@functools.partial(jax.jit, static_argnums=0)
def _grad_compiled(f: Any, params: Any) -> Any:
    return jax.grad(f)(params)


def _use_dense(method: str, n: int, dense_limit: int, max_matvecs: int) -> bool:
    """The choice of ``method="auto"``: dense when it cannot cost more than Lanczos.

    Dense costs ``n`` products (batched) and an ``O(n^3)`` ``eigvalsh``; Lanczos
    costs up to ``min(max_matvecs, n)`` products, one after another, and
    ``O(m^2 n)`` reorthogonalisation for ``m`` of them. With a budget of ``n`` or
    more it may take as many products as dense, and more arithmetic, so dense
    is chosen there as well as up to ``dense_limit``. A single parameter is always
    treated densely.
    """
    if method != "auto":
        return method == "dense" or n < 2  # one parameter has no two ends to run Lanczos on
    return n <= max(dense_limit, max_matvecs)


def classify_critical_point(
    f: Any,
    params: Any,
    *,
    grad_tol: float | None = None,
    curvature_tol: float | None = None,
    method: str = "auto",
    dense_limit: int = 2000,
    k: int = 5,
    max_matvecs: int = 400,
    key: jax.Array | None = None,
) -> CriticalPoint:
    """Classifies ``params`` as a critical point of ``f`` (see the module docstring).

    Args:
        f: the objective, ``f(params) -> scalar``, or a
            :class:`~gradxform.hessian.DatasetObjective` (its gradient and its
            curvature kind, e.g. the Gauss-Newton matrix, are then used).
        params: the point, a pytree of float arrays.
        grad_tol: the gradient norm below which ``params`` counts as critical;
            default ``eps**(1/3) * max(1, |H| |params|)`` (``eps`` of the params'
            dtype, ``|H|`` the largest ``|eigenvalue|`` found).
        curvature_tol: curvature whose magnitude is below it has no certified
            sign; default ``sqrt(eps) * max(1, |H|)``.
        method: ``"dense"`` (``eigvalsh`` of the full Hessian), ``"lanczos"``
            (matrix-free, ``min(k, n // 2)`` pairs at each end; dense for
            ``n = 1``), or ``"auto"``: dense when
            ``n <= max(dense_limit, max_matvecs)`` for ``n`` parameters (with a
            budget of ``n`` products or more, Lanczos cannot cost less than
            the ``n`` products of the dense Hessian), else Lanczos. The path
            taken is the result's ``method``.
        dense_limit: the largest parameter count ``"auto"`` always treats
            densely, for a deterministic verdict and the exact condition
            number, even where Lanczos might stop after fewer products.
        k: Ritz pairs per end on the matrix-free path.
        max_matvecs: the matrix-free product budget; Lanczos stops as soon as
            all ``2k`` pairs have converged, so easy points use far fewer (near-zero
            bottom ends of trained networks can take a few hundred).
        key: PRNG key for Lanczos' random start (default ``PRNGKey(0)``).

    Returns:
        A :class:`CriticalPoint`: the verdict, the evidence behind it and
        what it rests on (``guarantee``, ``note``).

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> saddle = lambda p: p[0] ** 2 - p[1] ** 2
        >>> point = gx.hessian.classify_critical_point(saddle, jnp.zeros(2))
        >>> point.verdict, point.method, point.guarantee
        ('saddle', 'dense', 'deterministic')
    """
    if _is_dataset(f):
        f._check_at(params)
    else:
        check_objective(f, params)
    checks.choice("method", method, ("auto", "dense", "lanczos"))
    if grad_tol is not None:
        grad_tol = checks.real("grad_tol", grad_tol, lower=0)
    if curvature_tol is not None:
        curvature_tol = checks.real("curvature_tol", curvature_tol, lower=0)
    dense_limit = checks.integer("dense_limit", dense_limit, minimum=0)
    k = checks.integer("k", k, minimum=1)
    max_matvecs = checks.integer("max_matvecs", max_matvecs, minimum=1)
    # on the params' pytree: norms are per-leaf sums (no n-vector on the host, sharded
    # leaves stay sharded); only the dense path builds the (n, n) matrix
    like = V.space(params)
    n, dtype = V.size_of(like), V.dtype_of(like)
    eps = float(jnp.finfo(dtype).eps)
    grad = f.grad(params) if _is_dataset(f) else _grad(f, params)
    grad_norm = float(V.norm(grad, dtype))
    dense = _use_dense(method, n, dense_limit, max_matvecs)
    if dense:
        e = _dense_extremes(f, params, eps, curvature_tol)
    else:
        e = _lanczos_extremes(f, params, n, eps, curvature_tol, k, max_matvecs, key)
    if grad_tol is None:
        scale = max(abs(e.lo), abs(e.hi)) * float(V.norm(jax.tree.map(jnp.asarray, params), dtype))
        grad_tol = float(np.cbrt(eps) * (max(1.0, scale) if np.isfinite(scale) else 1.0))
    return _result(grad_norm, grad_tol, e, dense, n)
