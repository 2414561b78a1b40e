"""Trust-region subproblems: ``min_p g.p + p.H p / 2`` subject to ``|p| <= radius``.

Three solvers, all on flat vectors and jit/vmap friendly (bounded loops only):

* :func:`more_sorensen_subproblem`, scipy's ``trust-exact`` subproblem step for step:
  Moré and Sorensen's iteration on Cholesky factorisations of ``H + lam I`` (a NaN
  factor marks failure), LINPACK's estimate of the smallest singular vector
  (:func:`smallest_singular_estimate`) in the hard case, scipy's bounds, stopping
  rules and memory between solves at one point (:class:`MsMemory`);
* :func:`exact_subproblem`, the nearly exact solution of Moré and Sorensen
  (1983): ``p`` solves ``(H + sigma I) p = -g`` with ``H + sigma I`` positive
  semidefinite, ``sigma >= 0`` and ``sigma (radius - |p|) = 0``. It works in the
  eigenbasis of ``H`` (:func:`hessian_eigh`, once per iterate, reused for every
  radius tried there), where the secular equation ``1/|p(sigma)| = 1/radius`` is
  solved by Newton's method (Moré-Sorensen's iteration, each step O(n) instead of
  a Cholesky factorisation) from the left of its root, where it converges
  monotonically. The *hard case* (``g`` orthogonal to the eigenspace of the
  smallest eigenvalue ``lam_1 <= 0`` and the step of the other components
  inside the region) is explicit: ``sigma = -lam_1`` and the step is completed
  to the boundary along that eigenspace.
* :func:`steihaug_subproblem`, Steihaug-Toint truncated conjugate gradients on
  Hessian-vector products: CG from ``p = 0`` stops at the residual tolerance
  ``min(0.5, sqrt|g|) |g|``, at the boundary, or on a direction of nonpositive
  curvature, which it follows to the boundary (the end of lower model value).

Both return a :class:`SubproblemStep` with the predicted decrease
``m(0) - m(p)`` that the trust-region iteration compares with the actual one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform import _linalg

__all__ = [
    "HessianEigh",
    "MsMemory",
    "SubproblemStep",
    "exact_subproblem",
    "hessian_eigh",
    "more_sorensen_subproblem",
    "ms_memory",
    "smallest_singular_estimate",
    "steihaug_subproblem",
]


class SubproblemStep(NamedTuple):
    """A trust-region step.

    Attributes:
        step: ``p``, a flat vector with ``|p| <= radius`` (up to rounding).
        predicted: the model's decrease ``-(g.p + p.H p / 2)`` (>= 0).
        hits_boundary: ``p`` lies on the boundary (``|p| = radius``).
        hvps: Hessian-vector products used (0 for the exact solvers).
        memory: what the next solve at the same point reads (a :class:`MsMemory` for
            :func:`more_sorensen_subproblem`, else ``()``).
    """

    step: jax.Array
    predicted: jax.Array
    hits_boundary: jax.Array
    hvps: jax.Array
    memory: Any = ()


class HessianEigh(NamedTuple):
    """The Hessian at an iterate with its eigendecomposition ``H = Q diag(lam) Q^T``.

    Attributes:
        hessian: ``H`` (symmetrised), shape ``(n, n)``.
        eigenvalues: ``lam``, ascending, shape ``(n,)``.
        eigenvectors: ``Q``, columns the eigenvectors, shape ``(n, n)``.
    """

    hessian: jax.Array
    eigenvalues: jax.Array
    eigenvectors: jax.Array


def hessian_eigh(hessian: jax.Array) -> HessianEigh:
    """The symmetrised ``hessian`` and its eigendecomposition (what :func:`exact_subproblem` reads).

    Args:
        hessian: an ``(n, n)`` matrix.

    Returns:
        A :class:`HessianEigh`.
    """
    h = (hessian + hessian.T) / 2
    lam, q = _linalg.eigh(h)
    return HessianEigh(h, lam, q)


class _Ms(NamedTuple):
    k: jax.Array
    sigma: jax.Array
    lower: jax.Array
    upper: jax.Array
    done: jax.Array
    c: jax.Array  # the step in the eigenbasis
    interior: jax.Array


def _initial_bounds(h: jax.Array, gnorm: jax.Array, radius: jax.Array):
    """``(sigma_0, lower, upper)`` from Gershgorin discs and matrix norms (Conn, Gould and
    Toint, section 7.3.8; scipy's starting guess)."""
    diag, rows = jnp.diag(h), jnp.sum(jnp.abs(h), axis=1)
    gersh_low = jnp.min(diag + jnp.abs(diag) - rows)
    gersh_high = jnp.max(diag - jnp.abs(diag) + rows)
    fro, inf = jnp.linalg.norm(h), jnp.max(rows)
    upper = jnp.maximum(0.0, gnorm / radius + jnp.minimum(jnp.minimum(-gersh_low, fro), inf))
    lower = jnp.maximum(
        jnp.maximum(0.0, -jnp.min(diag)),
        gnorm / radius - jnp.minimum(jnp.minimum(gersh_high, fro), inf),
    )
    return jnp.where(lower == 0, 0.0, _between(lower, upper)), lower, upper


def _between(lower, upper):
    """The next trial shift inside ``[lower, upper]``."""
    return jnp.maximum(jnp.sqrt(jnp.abs(lower * upper)), lower + 0.01 * (upper - lower))


def _ms_iteration(s: _Ms, a, lam, radius, gnorm, tiny, k_easy, k_hard) -> _Ms:
    """One Moré-Sorensen iteration on the shift ``sigma``, in the eigenbasis (``a = Q^T g``)."""
    shifted = lam + s.sigma
    positive = shifted[0] > 0  # where the Cholesky factorisation of H + sigma I succeeds
    safe = jnp.where(shifted > 0, shifted, 1.0)
    c = -a / safe
    pnorm = jnp.linalg.norm(c)
    wnorm2 = jnp.sum(c * c / safe)
    newton = s.sigma + pnorm**2 / jnp.where(wnorm2 > 0, wnorm2, 1.0) * (pnorm - radius) / radius
    # inside the region: the step to the boundary along the lowest eigenvector (the hard case)
    smin2 = jnp.maximum(shifted[0], 0.0)
    t_low, t_high = _to_boundary(c, jnp.zeros_like(c).at[0].set(1.0), radius)
    t = jnp.where(jnp.abs(t_low) < jnp.abs(t_high), t_low, t_high)
    curvature = jnp.sum(shifted * c * c) + s.sigma * radius**2
    hard_ok = t**2 * smin2 <= k_hard * curvature
    with_gradient = gnorm > tiny
    interior = positive & with_gradient & (pnorm <= radius) & (s.sigma == 0)
    inside = positive & with_gradient & ~interior & (pnorm < radius)
    outside = positive & with_gradient & ~interior & ~inside
    easy_ok = jnp.abs(pnorm - radius) <= k_easy * radius
    # no gradient: the step is radius * q_1
    flat = positive & ~with_gradient
    flat_zero = flat & (s.sigma == 0)
    flat_ok = flat & (radius**2 * smin2 <= k_hard * s.sigma * radius**2)
    done = interior | (inside & hard_ok) | (outside & easy_ok) | flat_zero | flat_ok
    e1 = jnp.zeros_like(c).at[0].set(1.0)
    step = jnp.where(inside & hard_ok, c + t * e1, c)
    step = jnp.where(flat, jnp.where(flat_zero, 0.0, radius * e1), step)
    step = jnp.where(positive, step, s.c)
    # bounds and the next shift where not done
    upper = jnp.where(inside | flat, s.sigma, s.upper)
    lower = jnp.where(inside | flat, jnp.maximum(s.lower, s.sigma - smin2), s.lower)
    lower = jnp.where(outside, s.sigma, lower)
    # H + sigma I not positive definite: sigma must exceed -lam_1
    lower = jnp.where(positive, lower, jnp.maximum(lower, -lam[0] + tiny))
    newton_ok = (inside & (newton + lam[0] > 0)) | outside
    lower = jnp.where(inside & ~newton_ok, jnp.maximum(lower, newton), lower)
    sigma = jnp.where(newton_ok, newton, _between(lower, upper))
    return _Ms(
        k=s.k + 1,
        sigma=jnp.where(done, s.sigma, sigma),
        lower=lower,
        upper=upper,
        done=done,
        c=step,
        interior=interior | flat_zero,
    )


def exact_subproblem(
    eig: HessianEigh,
    g: jax.Array,
    radius: jax.Array,
    k_easy: float = 0.1,
    k_hard: float = 0.2,
    max_steps: int = 25,
) -> SubproblemStep:
    """The Moré-Sorensen step, its iteration run in the eigenbasis of ``H``.

    Moré and Sorensen's iteration on the shift ``sigma`` of ``(H + sigma I) p = -g``
    (safeguarded Newton steps on ``1/|p| - 1/radius`` inside Gershgorin bounds), with
    their stopping rules, as scipy's ``trust-exact`` applies them:

    * interior: ``sigma = 0``, ``H`` positive definite and ``|p| <= radius``;
    * easy case: ``| |p| - radius | <= k_easy radius`` (``p`` may end slightly
      outside, as theirs does);
    * hard case: ``p`` inside the region is completed to the boundary along the
      eigenvector ``q_1`` of the smallest eigenvalue, ``p + t q_1``, once that
      changes the model by at most ``k_hard`` of its curvature term
      (their Lemma 3.4: the model value is then within a factor ``1 - k_hard`` of optimal).

    In the eigenbasis each iteration is O(n) instead of a Cholesky factorisation, the
    positive-definiteness test is exact (``lam_1 + sigma > 0``) and ``q_1`` is the
    exact eigenvector instead of a condition-number estimate. ``k_easy = k_hard = 0``
    (with enough ``max_steps``) gives the exact minimiser.

    Args:
        eig: the Hessian's :class:`HessianEigh`.
        g: the gradient, a flat vector.
        radius: the trust radius (> 0).
        k_easy: relative tolerance on ``|p| = radius``.
        k_hard: tolerance of the hard-case step.
        max_steps: the most iterations (scipy's 25).

    Returns:
        A :class:`SubproblemStep` (``hvps`` 0).
    """
    h, lam, q = eig
    dtype = lam.dtype
    radius = jnp.asarray(radius, dtype)
    a = q.T @ g.astype(dtype)
    gnorm = jnp.linalg.norm(a)
    tiny = lam.shape[0] * jnp.finfo(dtype).eps * jnp.max(jnp.sum(jnp.abs(h), axis=1))
    sigma, lower, upper = _initial_bounds(h, gnorm, radius)
    start = _Ms(
        jnp.zeros([], jnp.int32), sigma, lower, upper, jnp.array(False), jnp.zeros_like(a),
        jnp.array(False),
    )  # fmt: skip
    end = jax.lax.while_loop(
        lambda s: ~s.done & (s.k < max_steps),
        lambda s: _ms_iteration(s, a, lam, radius, gnorm, tiny, k_easy, k_hard),
        start,
    )
    c = end.c
    predicted = -(a @ c + 0.5 * jnp.sum(lam * c * c))
    return SubproblemStep(q @ c, predicted, ~end.interior, jnp.zeros([], jnp.int32))


def _to_boundary(z: jax.Array, d: jax.Array, radius: jax.Array):
    """``(t_low, t_high)``, the two roots of ``|z + t d| = radius`` (``|z| <= radius``)."""
    a = d @ d
    b = 2.0 * (z @ d)
    c = z @ z - radius**2
    disc = jnp.sqrt(jnp.maximum(b * b - 4.0 * a * c, 0.0))
    # the root of larger magnitude first, the other from the product c / a (no cancellation)
    big = -(b + jnp.where(b >= 0, disc, -disc)) / 2.0
    safe_big = jnp.where(big == 0, 1.0, big)
    r1, r2 = big / jnp.where(a > 0, a, 1.0), c / safe_big
    return jnp.minimum(r1, r2), jnp.maximum(r1, r2)


class _Cg(NamedTuple):
    k: jax.Array
    z: jax.Array
    r: jax.Array
    d: jax.Array
    done: jax.Array
    step: jax.Array
    boundary: jax.Array
    value: jax.Array  # m(step) - m(0)


def steihaug_subproblem(
    hvp: Callable[[jax.Array], jax.Array], g: jax.Array, radius: jax.Array, max_steps: int
) -> SubproblemStep:
    """Steihaug-Toint truncated CG for the trust-region subproblem (N&W Alg. 7.2).

    From ``z = 0``, ``r = g``, ``d = -g``: on ``d.Hd <= 0`` the step is ``z + t d``
    at whichever boundary crossing has the lower model value; a CG step leaving the
    region is cut at the boundary; CG ends inside when ``|r| < min(0.5, sqrt|g|) |g|``
    or after ``max_steps`` products. ``|g|`` under the tolerance returns ``p = 0``.

    Args:
        hvp: ``v -> H v`` on flat vectors.
        g: the gradient, a flat vector.
        radius: the trust radius (> 0).
        max_steps: the most Hessian-vector products (a Python int >= 1).

    Returns:
        A :class:`SubproblemStep`.
    """
    dtype = g.dtype
    radius = jnp.asarray(radius, dtype)
    gnorm = jnp.linalg.norm(g)
    tol = jnp.minimum(0.5, jnp.sqrt(gnorm)) * gnorm
    zero = jnp.zeros_like(g)

    def body(s: _Cg) -> _Cg:
        hd = hvp(s.d)
        dhd = s.d @ hd
        rr = s.r @ s.r
        t_low, t_high = _to_boundary(s.z, s.d, radius)
        rd = s.r @ s.d

        def change(t):  # m(z + t d) - m(z) = t r.d + t^2 d.Hd / 2, as r = g + H z
            return t * rd + 0.5 * t * t * dhd

        # negative curvature: the boundary crossing of lower model value
        t_neg = jnp.where(change(t_low) < change(t_high), t_low, t_high)
        alpha = rr / jnp.where(dhd > 0, dhd, 1.0)
        z_next = s.z + alpha * s.d
        r_next = s.r + alpha * hd
        negative = dhd <= 0
        leaves = ~negative & (jnp.linalg.norm(z_next) >= radius)
        small = ~negative & ~leaves & (jnp.linalg.norm(r_next) < tol)
        t = jnp.where(negative, t_neg, jnp.where(leaves, t_high, alpha))
        out = s.z + t * s.d
        beta = (r_next @ r_next) / jnp.where(rr > 0, rr, 1.0)
        stop = negative | leaves | small | (s.k + 1 >= max_steps)
        return _Cg(
            k=s.k + 1,
            z=z_next,
            r=r_next,
            d=-r_next + beta * s.d,
            done=stop,
            step=out,
            boundary=negative | leaves,
            value=s.value + change(t),
        )

    start = _Cg(
        k=jnp.zeros([], jnp.int32),
        z=zero,
        r=g,
        d=-g,
        done=gnorm <= tol,
        step=zero,
        boundary=jnp.array(False),
        value=jnp.zeros([], dtype),
    )
    end = jax.lax.while_loop(lambda s: ~s.done, body, start)
    return SubproblemStep(end.step, -end.value, end.boundary, end.k)


# --- Moré-Sorensen on Cholesky factorisations (scipy's trust-exact, step for step) ------


class MsMemory(NamedTuple):
    """What :func:`more_sorensen_subproblem` keeps between solves at one point.

    Attributes:
        lambda_lb: the lower bound on the shift the last solve ended with.
        radius: the radius of the last solve there (-1: none yet).
    """

    lambda_lb: jax.Array
    radius: jax.Array


def ms_memory(dtype: Any) -> MsMemory:
    """The memory of a point where nothing has been solved yet.

    Args:
        dtype: the floating dtype of the iterate.

    Returns:
        A :class:`MsMemory` (``lambda_lb = 0``, ``radius = -1``).
    """
    return MsMemory(jnp.zeros([], dtype), jnp.full([], -1.0, dtype))


def _upper_cholesky(a: jax.Array) -> jax.Array:
    """``U`` upper triangular with ``U^T U = a`` (read from ``a``'s upper triangle, as
    LAPACK's ``potrf(uplo='U')``); all NaN where ``a`` is not positive definite."""
    sym = jnp.triu(a) + jnp.triu(a, 1).T
    return _linalg.cholesky(sym).T


def smallest_singular_estimate(u: jax.Array) -> tuple[jax.Array, jax.Array]:
    """LINPACK's estimate of the smallest singular value of ``u`` and its right vector.

    Cline, Moler, Stewart and Wilkinson (1979), as Golub and Van Loan's Algorithm 3.5.1:
    forward substitution for ``U^T w = e`` choosing each ``e_k = +-1`` to make
    ``|w_k|`` plus the 1-norm of the updated remaining right-hand side larger, then
    ``U v = w``; the estimate is ``|w| / |v|`` with the vector ``v / |v|`` (exact
    where ``U`` is close to singular). O(n^2).

    Args:
        u: an ``(n, n)`` upper triangular matrix with a nonzero diagonal.

    Returns:
        ``(s_min, z)``: the estimate and a unit vector.
    """
    n = u.shape[0]
    idx = jnp.arange(n)

    def body(k, carry):
        rhs, w = carry
        wp, wm = (1.0 - rhs[k]) / u[k, k], (-1.0 - rhs[k]) / u[k, k]
        after = idx > k
        row = jnp.where(after, u[k], 0.0)
        pp, pm = rhs + row * wp, rhs + row * wm
        grow_p = jnp.abs(wp) + jnp.sum(jnp.where(after, jnp.abs(pp), 0.0))
        grow_m = jnp.abs(wm) + jnp.sum(jnp.where(after, jnp.abs(pm), 0.0))
        plus = grow_p >= grow_m
        return jnp.where(plus, pp, pm), w.at[k].set(jnp.where(plus, wp, wm))

    zero = jnp.zeros(n, u.dtype)
    _, w = jax.lax.fori_loop(0, n, body, (zero, zero))
    v = jax.scipy.linalg.solve_triangular(u, w, lower=False)
    vnorm = jnp.linalg.norm(v)
    return jnp.linalg.norm(w) / vnorm, v / vnorm


def _leading_singular(a: jax.Array) -> tuple[jax.Array, jax.Array]:
    """For ``a`` not positive definite: ``(delta, v)`` with ``v.(a + delta e_k e_k^T) v = 0``,
    ``k`` the first leading submatrix that is not positive definite (Moré and Sorensen,
    section 3: the incomplete Cholesky factorisation up to row ``k``)."""
    n = a.shape[0]
    idx = jnp.arange(n)

    def body(j, carry):
        u, fail = carry
        col = u[:, j]  # rows >= j are still zero
        d = a[j, j] - col @ col
        bad = ~(d > 0)
        ujj = jnp.sqrt(jnp.where(bad, 1.0, d))
        row = jnp.where(idx > j, (a[j] - col @ u) / ujj, jnp.where(idx == j, ujj, 0.0))
        go = (fail == n) & ~bad
        return jnp.where(go, u.at[j].set(row), u), jnp.where((fail == n) & bad, j, fail)

    u, k = jax.lax.fori_loop(0, n, body, (jnp.zeros_like(a), jnp.asarray(n)))
    k = jnp.minimum(k, n - 1)
    col = jnp.where(idx < k, u[:, k], 0.0)
    lead = (idx[:, None] < k) & (idx[None, :] < k)
    m = jnp.where(lead, u, jnp.eye(n, dtype=a.dtype))
    v = jax.scipy.linalg.solve_triangular(m, -col, lower=False) + (idx == k)
    return col @ col - a[k, k], v


class _Chol(NamedTuple):
    k: jax.Array
    lam: jax.Array
    lower: jax.Array
    upper: jax.Array
    factor: jax.Array  # U of the last successful factorisation the next iteration reads
    reuse: jax.Array  # skip the next factorisation (scipy's ``already_factorized``)
    p: jax.Array
    boundary: jax.Array
    done: jax.Array
    stepped: jax.Array  # a factorisation succeeded (``p`` was computed)


def _inside(s: _Chol, u, h, hs, p, lam_new, radius, k_hard) -> _Chol:
    """``|p| < radius``: the hard-case test along LINPACK's near-null vector of ``U``,
    else a smaller shift (scipy keeps ``U`` of this iteration for the next one)."""
    s_min, z = smallest_singular_estimate(u)
    t_low, t_high = _to_boundary(p, z, radius)
    t = jnp.where(jnp.abs(t_high) < jnp.abs(t_low), t_high, t_low)
    eye = jnp.eye(h.shape[0], dtype=h.dtype)
    quadratic = p @ ((h + s.lam * eye) @ p)
    hard = t**2 * s_min**2 / (quadratic + s.lam * radius**2) <= k_hard
    lower = jnp.maximum(s.lower, s.lam - s_min**2)
    ok = jnp.all(jnp.isfinite(_upper_cholesky(hs + lam_new * eye)))
    lower_next = jnp.where(ok, lower, jnp.maximum(lower, lam_new))
    lam = jnp.where(ok, lam_new, _between(lower_next, s.lam))
    return s._replace(
        lam=jnp.where(hard, s.lam, lam),
        lower=jnp.where(hard, s.lower, lower_next),
        upper=jnp.where(hard, s.upper, s.lam),
        factor=u,
        reuse=~hard & ok,
        p=jnp.where(hard, p + t * z, p),
        done=hard,
    )


def _with_gradient(s: _Chol, u, h, hs, g, radius, k_easy, k_hard) -> _Chol:
    """A successful factorisation and ``|g|`` above rounding: the Newton step on the
    secular equation ``1/|p| = 1/radius`` and the stopping tests."""
    p = jax.scipy.linalg.cho_solve((u, False), -g)
    pnorm = jnp.linalg.norm(p)
    w = jax.scipy.linalg.solve_triangular(u.T, p, lower=True)
    lam_new = s.lam + (pnorm / jnp.linalg.norm(w)) ** 2 * (pnorm - radius) / radius
    interior = (pnorm <= radius) & (s.lam == 0)
    easy = jnp.abs(pnorm - radius) / radius <= k_easy
    outside = s._replace(
        lam=jnp.where(easy, s.lam, lam_new),
        lower=jnp.where(easy, s.lower, s.lam),
        reuse=jnp.array(False),
        p=p,
        done=easy,
    )
    go_inside = ~interior & (pnorm < radius)
    inside = jax.lax.cond(
        go_inside,
        lambda: _inside(s, u, h, hs, p, lam_new, radius, k_hard),
        lambda: outside,
    )
    return jax.tree.map(
        lambda a, b: jnp.where(interior, a, b),
        s._replace(p=p, boundary=jnp.array(False), done=jnp.array(True)),
        inside,
    )


def _without_gradient(s: _Chol, u, radius, k_hard) -> _Chol:
    """A successful factorisation and ``|g|`` at rounding level: ``p = radius z``."""
    s_min, z = smallest_singular_estimate(u)
    flat = s.lam == 0
    stop = flat | (s_min**2 <= k_hard * s.lam)
    lower = jnp.maximum(s.lower, s.lam - s_min**2)
    return s._replace(
        lam=jnp.where(stop, s.lam, _between(lower, s.lam)),
        lower=jnp.where(stop, s.lower, lower),
        upper=jnp.where(stop, s.upper, s.lam),
        reuse=jnp.array(False),
        p=jnp.where(flat, 0.0, radius * z),
        boundary=~flat,
        done=stop,
    )


def _not_definite(s: _Chol, a, g, radius) -> _Chol:
    """``H + lam I`` not positive definite: raise the lower bound past the shift that makes
    its first indefinite leading submatrix singular. Until a factorisation succeeds the
    step is ``radius`` along that ``v`` (``v.H v = -delta - lam |v|^2 <= 0``), downhill."""
    delta, v = _leading_singular(a)
    lower = jnp.maximum(s.lower, s.lam + delta / (v @ v))
    v = jnp.where(g @ v > 0, -v, v) * radius / jnp.linalg.norm(v)
    return s._replace(
        lam=_between(lower, s.upper),
        lower=lower,
        reuse=jnp.array(False),
        p=jnp.where(s.stepped, s.p, v),
    )


def more_sorensen_subproblem(
    hessian: jax.Array,
    g: jax.Array,
    radius: jax.Array,
    memory: MsMemory,
    k_easy: float = 0.1,
    k_hard: float = 0.2,
    max_steps: int = 25,
) -> SubproblemStep:
    """The Moré-Sorensen step on Cholesky factorisations, as scipy's ``trust-exact``.

    Each iteration factors ``H + lam I = U^T U`` (a NaN factor marks failure): on
    failure the lower bound on ``lam`` rises past the shift that makes the first
    indefinite leading submatrix singular; else ``p = -(H + lam I)^{-1} g`` and

    * interior: ``lam = 0`` and ``|p| <= radius`` ends it;
    * outside, ``|p| > radius``: ends once ``| |p| - radius | <= k_easy radius``,
      else the Newton step on ``1/|p| = 1/radius`` (from the left of the root);
    * inside: ``p`` is completed to the boundary along LINPACK's estimate ``z`` of the
      smallest singular vector of ``U`` (:func:`smallest_singular_estimate`), ``p + t z``
      with ``t`` the root of smaller magnitude, once ``t^2 s_min^2 <= k_hard
      (p.(H + lam I) p + lam radius^2)`` (the hard case), else the Newton step if
      ``H + lam_new I`` factors, else a safeguarded one.

    The bounds start from Gershgorin discs and matrix norms (Conn, Gould and Toint,
    section 7.3.8); a solve at the same point with a smaller radius starts from the
    last lower bound (``memory``). scipy's quirk is kept so that iterates agree: after
    a Newton step inside the region the next iteration reuses the previous factor.
    Where no factorisation succeeds in ``max_steps`` (scipy then has no step and
    raises; e.g. ``g = 0`` with ``H + lam I`` singular at both bounds) the step is
    ``radius`` along the last direction of nonpositive curvature the failed
    factorisations found.

    Args:
        hessian: ``H``, ``(n, n)`` (its upper triangle is factored, as LAPACK's).
        g: the gradient, a flat vector.
        radius: the trust radius (> 0).
        memory: the :class:`MsMemory` of the last solve at this point
            (:func:`ms_memory` for none).
        k_easy: relative tolerance on ``|p| = radius``.
        k_hard: tolerance of the hard-case step.
        max_steps: the most iterations (scipy's 25).

    Returns:
        A :class:`SubproblemStep` (``memory`` for the next solve here).
    """
    h = hessian
    dtype = h.dtype
    g, radius = g.astype(dtype), jnp.asarray(radius, dtype)
    n = g.shape[0]
    gnorm = jnp.linalg.norm(g)
    rows = jnp.sum(jnp.abs(h), axis=1)
    close = n * jnp.finfo(dtype).eps * jnp.max(rows)
    _, lower, upper = _initial_bounds(h, gnorm, radius)
    lower = jnp.where(radius < memory.radius, jnp.maximum(memory.lambda_lb, lower), lower)
    lam = jnp.where(lower == 0, 0.0, _between(lower, upper))
    hs = jnp.triu(h) + jnp.triu(h, 1).T
    eye = jnp.eye(n, dtype=dtype)

    def body(s: _Chol) -> _Chol:
        a = hs + s.lam * eye
        fresh = _upper_cholesky(a)
        u = jnp.where(s.reuse, s.factor, fresh)
        ok = s.reuse | jnp.all(jnp.isfinite(fresh))
        branch = jnp.where(ok, jnp.where(gnorm > close, 0, 1), 2)
        out = jax.lax.switch(
            branch,
            [
                lambda: _with_gradient(s, u, h, hs, g, radius, k_easy, k_hard),
                lambda: _without_gradient(s, u, radius, k_hard),
                lambda: _not_definite(s, a, g, radius),
            ],
        )
        return out._replace(k=s.k + 1, stepped=s.stepped | (branch < 2))

    false = jnp.array(False)
    start = _Chol(
        jnp.zeros([], jnp.int32), lam, lower, upper, eye, false, jnp.zeros_like(g),
        jnp.array(True), false, false,
    )  # fmt: skip
    end = jax.lax.while_loop(lambda s: ~s.done & (s.k < max_steps), body, start)
    p = end.p
    predicted = -(g @ p + 0.5 * p @ (h @ p))
    memory = MsMemory(end.lower, radius)
    return SubproblemStep(p, predicted, end.boundary, jnp.zeros([], jnp.int32), memory)
