"""Lanczos with full reorthogonalisation, and certified extreme eigenpairs.

:func:`lanczos` builds an orthonormal Krylov basis ``Q`` and the tridiagonal
``T = Q^T H Q`` in one compiled loop. :func:`eigenpairs` runs it until every
requested Ritz pair's residual ``|H y - theta y| = |beta_m s_m|`` is below
tolerance, or the matrix-vector budget is spent, and says which pairs
converged. Residuals are certificates: each Ritz value lies within its
residual of a true eigenvalue.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradxform.hessian.operators import FlatOperator, on_hessian

__all__ = [
    "Eigenpairs",
    "LanczosResult",
    "eigenpairs",
    "hessian_eigenpairs",
    "lanczos",
    "ritz_pairs",
]


class LanczosResult(NamedTuple):
    """A Lanczos run of ``steps`` steps (rows beyond ``size`` are unused).

    Attributes:
        basis: ``(steps, n)`` orthonormal rows ``q_0, q_1, ...``.
        alpha, beta: the diagonal and off-diagonal of ``T`` (``beta[j]``
            couples ``q_j`` and ``q_{j+1}``).
        size: steps actually taken (fewer at an invariant subspace, "breakdown").
    """

    basis: jax.Array
    alpha: jax.Array
    beta: jax.Array
    size: jax.Array


def _tridiagonal(alpha, beta, size):
    """``T`` padded to full size: the unused block is decoupled and its rows are flagged."""
    m = alpha.shape[0]
    idx = jnp.arange(m)
    used = idx < size
    off = jnp.where(idx[:-1] + 1 < size, beta[:-1], 0)
    T = jnp.diag(jnp.where(used, alpha, 0)) + jnp.diag(off, 1) + jnp.diag(off, -1)
    return T, used


def ritz_pairs(result: LanczosResult):
    """Ritz values (ascending, NaN where unused), their ``T``-eigenvectors and residual norms."""
    T, used = _tridiagonal(result.alpha, result.beta, result.size)
    theta, S = jnp.linalg.eigh(T)
    real = jnp.sum(jnp.where(used[:, None], S, 0) ** 2, axis=0) > 0.5
    last = jnp.take(S, jnp.maximum(result.size - 1, 0), axis=0)
    beta_last = jnp.take(result.beta, jnp.maximum(result.size - 1, 0))
    residual = jnp.abs(beta_last * last)
    theta = jnp.where(real, theta, jnp.nan)
    order = jnp.argsort(jnp.where(real, theta, jnp.inf))
    return theta[order], S[:, order], residual[order], real[order]


def lanczos(
    matvec,
    v0: jax.Array,
    steps: int,
    *,
    stop=None,
    check_every: int = 1,
    dtype=None,
) -> LanczosResult:
    """``steps`` Lanczos steps from ``v0`` with full (twice-applied) Gram-Schmidt.

    Args:
        matvec: ``v -> H v`` on flat vectors (``H`` symmetric).
        v0: the starting vector (normalised here).
        steps: the basis size, a Python int (it fixes the shapes).
        stop: optional ``LanczosResult -> bool`` checked every ``check_every``
            steps; the loop ends early when it returns True.
        dtype: the dtype of the basis and of ``T`` (e.g. float64 for float32
            products: the products run in ``v0``'s dtype, the recurrences in this).
    """
    work = jnp.dtype(dtype or v0.dtype)
    mv_dtype = v0.dtype
    n = v0.shape[0]
    q0 = (v0 / jnp.linalg.norm(v0)).astype(work)
    eps = jnp.finfo(work).eps

    def body(state):
        j, Q, alpha, beta, size, done, scale = state
        q = Q[j]
        w = matvec(q.astype(mv_dtype)).astype(work)
        a = jnp.vdot(q, w)
        w = w - a * q - jnp.where(j > 0, beta[j - 1], 0) * Q[j - 1]
        for _ in range(2):  # full reorthogonalisation against the basis so far
            w = w - Q.T @ (Q @ w)
        b = jnp.linalg.norm(w)
        scale = jnp.maximum(scale, jnp.abs(a) + b)
        breakdown = b <= 10 * n * eps * scale
        alpha = alpha.at[j].set(a)
        beta = beta.at[j].set(jnp.where(breakdown, 0, b))
        nxt = jnp.where(breakdown, 0, w / jnp.where(breakdown, 1, b))
        Q = jnp.where(j + 1 < steps, Q.at[jnp.minimum(j + 1, steps - 1)].set(nxt), Q)
        size = j + 1
        result = LanczosResult(Q, alpha, beta, size)
        done = breakdown | (j + 1 >= steps)
        if stop is not None:
            check = ((j + 1) % check_every == 0) & ~done
            done = done | (check & jax.lax.cond(check, stop, lambda r: False, result))
        return j + 1, Q, alpha, beta, size, done, scale

    Q = jnp.zeros((steps, n), work).at[0].set(q0)
    zeros = jnp.zeros(steps, work)
    init = (
        jnp.zeros([], jnp.int32),
        Q,
        zeros,
        zeros,
        jnp.zeros([], jnp.int32),
        jnp.array(False),
        jnp.zeros([], work),
    )
    _, Q, alpha, beta, size, _, _ = jax.lax.while_loop(lambda s: ~s[5], body, init)
    return LanczosResult(Q, alpha, beta, size)


class Eigenpairs(NamedTuple):
    """Extreme eigenpairs with their certificates.

    Attributes:
        values: Ritz values, ``(k,)``: top-k descending, bottom-k ascending,
            or for ``"both"`` the bottom k ascending then the top k descending.
        vectors: the Ritz vectors, shaped like the params with a leading ``k`` axis.
        residuals: ``|H y - theta y|`` for each pair: a true eigenvalue lies
            within it of the Ritz value.
        converged: whether each residual is below ``tol * scale``.
        tol: the absolute residual tolerance that was applied.
        num_matvecs: Hessian-vector products used.
        invariant: True if the Krylov space became invariant ("breakdown"):
            the Ritz values are then exact eigenvalues, and with a random
            start every distinct eigenvalue is among them (almost surely).
        finite: False when a Hessian-vector product came out NaN or infinite;
            no pair then counts as converged.
    """

    values: jax.Array
    vectors: Any
    residuals: jax.Array
    converged: jax.Array
    tol: jax.Array
    num_matvecs: jax.Array
    invariant: jax.Array
    finite: jax.Array


def _requested(result: LanczosResult, k: int, which: str):
    """The requested Ritz values, their T-eigenvectors, residuals, and the spectral scale."""
    theta, S, residual, real = ritz_pairs(result)
    count = jnp.sum(real)
    ascending = jnp.arange(k)
    bottom, top = ascending, count - 1 - ascending
    idx = {"bottom": bottom, "top": top, "both": jnp.concatenate([bottom, top])}[which]
    idx = jnp.clip(idx, 0, jnp.maximum(count - 1, 0))
    return theta[idx], S[:, idx], residual[idx], jnp.nanmax(jnp.abs(theta))


def eigenpairs(
    operator: FlatOperator,
    k: int = 1,
    which: str = "top",
    *,
    tol: float | None = None,
    max_matvecs: int = 60,
    key: jax.Array | None = None,
    float64_accumulation: bool = False,
) -> Eigenpairs:
    """The ``k`` largest, smallest or both extreme eigenpairs of a symmetric operator.

    Runs Lanczos with full reorthogonalisation from a random start, checking
    after every product whether every requested Ritz pair has residual
    ``<= tol * scale`` (``scale`` = the largest Ritz value magnitude), and
    stops there or after ``max_matvecs`` products. Pairs that did not meet
    the tolerance are flagged in ``converged``: an answer is never silently
    unconverged.

    Args:
        operator: the :class:`FlatOperator` (see :func:`hessian_eigenpairs`
            for ``f, params``).
        k: pairs per end (a Python int).
        which: ``"top"``, ``"bottom"`` or ``"both"``.
        tol: relative residual tolerance; default ``sqrt(eps)`` of the working dtype.
        max_matvecs: the product budget, which is also the largest basis.
        key: PRNG key for the starting vector (default ``PRNGKey(0)``).
        float64_accumulation: keep the basis and ``T`` in float64 while the
            products run in the params' dtype (needs ``jax_enable_x64``).
    """
    if which not in ("top", "bottom", "both"):
        raise ValueError(f"which must be 'top', 'bottom' or 'both'; got {which!r}")
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an integer >= 1; got {k!r}")
    if not isinstance(max_matvecs, int) or max_matvecs < 1:
        raise ValueError(f"max_matvecs must be an integer >= 1; got {max_matvecs!r}")
    if float64_accumulation and not jax.config.jax_enable_x64:
        raise ValueError("float64_accumulation=True needs jax_enable_x64 (jax.enable_x64(True))")
    work = jnp.float64 if float64_accumulation else operator.dtype
    steps = min(max_matvecs, operator.size)
    k = min(k, operator.size)
    if tol is None:
        tol = float(np.sqrt(np.finfo(work).eps))
    if not tol > 0:
        raise ValueError(f"tol must be > 0; got {tol!r}")
    key = jax.random.PRNGKey(0) if key is None else key
    v0 = jax.random.normal(key, (operator.size,), operator.dtype)

    def converged_all(result):
        _, _, residual, scale = _requested(result, k, which)
        return (result.size >= min(k, steps)) & jnp.all(residual <= tol * scale)

    result = lanczos(operator.matvec, v0, steps, stop=converged_all, dtype=work)
    values, S, residuals, scale = _requested(result, k, which)
    vectors_flat = (S.T @ result.basis).astype(operator.dtype)
    return Eigenpairs(
        values=values,
        vectors=jax.vmap(operator.unravel)(vectors_flat),
        residuals=residuals,
        converged=residuals <= tol * scale,
        tol=tol * scale,
        num_matvecs=result.size,
        invariant=jnp.take(result.beta, jnp.maximum(result.size - 1, 0)) == 0,
        finite=jnp.all(jnp.isfinite(values)) & jnp.all(jnp.isfinite(residuals)),
    )


def hessian_eigenpairs(f, params, k: int = 1, which: str = "top", **options) -> Eigenpairs:
    """:func:`eigenpairs` of the Hessian of ``f`` at ``params`` (linearised once).

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> f = lambda p: 0.5 * jnp.sum(jnp.arange(1.0, 6.0) * p**2)  # eigenvalues 1..5
        >>> pairs = gx.hessian.hessian_eigenpairs(f, jnp.zeros(5), k=2, which="both")
        >>> [round(float(v), 4) for v in pairs.values], bool(pairs.converged.all())
        ([1.0, 2.0, 5.0, 4.0], True)
    """
    key = options.pop("key", None)
    key = jax.random.PRNGKey(0) if key is None else key
    return on_hessian(_eigenpairs_of_operator, f, params, key, k=k, which=which, **options)


def _eigenpairs_of_operator(operator, key, **options):
    return eigenpairs(operator, key=key, **options)
