"""Lanczos with full reorthogonalisation, and certified extreme eigenpairs.

:func:`lanczos` builds an orthonormal Krylov basis ``Q`` and the tridiagonal
``T = Q^T H Q`` in one compiled loop. :func:`eigenpairs` runs it until every
requested Ritz pair's residual ``|H y - theta y| = |beta_m s_m|`` is below
tolerance, or the matrix-vector budget is spent, and says which pairs
converged. Residuals are certificates: each Ritz value lies within its
residual of a true eigenvalue.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradxform import checks
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


def ritz_pairs(result: LanczosResult) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """The Ritz pairs of a Lanczos run: eigenpairs of ``T`` and their residual norms.

    With ``T = S diag(theta) S^T``, the Ritz vector ``y_j = Q^T s_j`` has
    residual ``|H y_j - theta_j y_j| = |beta_m s_{mj}|`` (``m`` = steps taken),
    and some eigenvalue of ``H`` lies within it of ``theta_j``.

    Args:
        result: a :class:`LanczosResult`.

    Returns:
        ``(theta, S, residual, real)``: the Ritz values ascending (NaN in the
        padding beyond ``result.size``), the eigenvectors of ``T`` as columns in
        the same order, the residual norms, and which columns are real pairs
        rather than padding.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> A = jnp.diag(jnp.array([1.0, 2.0, 3.0]))
        >>> result = gx.hessian.lanczos(lambda v: A @ v, jnp.ones(3), 3)
        >>> theta, _, residual, real = gx.hessian.ritz_pairs(result)
        >>> [round(float(t), 4) for t in theta], bool(real.all())
        ([1.0, 2.0, 3.0], True)
    """
    T, used = _tridiagonal(result.alpha, result.beta, result.size)
    theta, S = jnp.linalg.eigh(T)
    real = jnp.sum(jnp.where(used[:, None], S, 0) ** 2, axis=0) > 0.5
    last = jnp.take(S, jnp.maximum(result.size - 1, 0), axis=0)
    beta_last = jnp.take(result.beta, jnp.maximum(result.size - 1, 0))
    residual = jnp.abs(beta_last * last)
    theta = jnp.where(real, theta, jnp.nan)
    order = jnp.argsort(jnp.where(real, theta, jnp.inf))
    return theta[order], S[:, order], residual[order], real[order]


def _initial_carry(q0, steps, work):
    """``(j, Q, alpha, beta, size, done, scale)`` before the first step."""
    Q = jnp.zeros((steps, q0.shape[0]), work).at[0].set(q0)
    zeros = jnp.zeros(steps, work)
    count = jnp.zeros([], jnp.int32)
    return count, Q, zeros, zeros, count, jnp.array(False), jnp.zeros([], work)


def lanczos(
    matvec: Callable[[jax.Array], jax.Array],
    v0: jax.Array,
    steps: int,
    *,
    stop: Callable[[LanczosResult], Any] | None = None,
    check_every: int = 1,
    dtype: Any = None,
) -> LanczosResult:
    """``steps`` Lanczos steps from ``v0`` with full (twice-applied) Gram-Schmidt.

    Builds orthonormal ``q_0 = v0 / |v0|, q_1, ...`` with
    ``H Q^T = Q^T T + beta_m q_m e_m^T``, ``T`` tridiagonal with diagonal
    ``alpha`` and off-diagonal ``beta``; each step costs one product. The loop
    stops early at an invariant subspace (``beta`` numerically zero).

    Args:
        matvec: ``v -> H v`` on flat vectors (``H`` symmetric).
        v0: the starting vector (normalised here).
        steps: the basis size, a Python int (it fixes the shapes).
        stop: optional ``LanczosResult -> bool`` checked every ``check_every``
            steps; the loop ends early when it returns True.
        check_every: how many steps between calls of ``stop``.
        dtype: the dtype of the basis and of ``T`` (e.g. float64 for float32
            products: the products run in ``v0``'s dtype, the recurrences in this).

    Returns:
        A :class:`LanczosResult`.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> A = jnp.diag(jnp.array([1.0, 2.0, 3.0]))
        >>> result = gx.hessian.lanczos(lambda v: A @ v, jnp.ones(3), 3)
        >>> int(result.size), round(float(result.alpha[0]), 4)  # alpha_0 = q_0^T A q_0
        (3, 2.0)
    """
    steps = checks.integer("steps", steps, minimum=1)
    check_every = checks.integer("check_every", check_every, minimum=1)
    if stop is not None:
        checks.callable_arg("stop", stop, "stop(result) -> bool")
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

    init = _initial_carry(q0, steps, work)
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

    Returns:
        An :class:`Eigenpairs` record; ``vectors`` are mapped back by ``operator.unravel``.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> A = jnp.diag(jnp.arange(1.0, 7.0))
        >>> op = gx.hessian.FlatOperator(lambda v: A @ v, 6, jnp.float32, lambda v: v)
        >>> pairs = gx.hessian.eigenpairs(op, k=1, which="top")
        >>> round(float(pairs.values[0]), 3), bool(pairs.converged[0])
        (6.0, True)
    """
    checks.choice("which", which, ("top", "bottom", "both"))
    k = checks.integer("k", k, minimum=1)
    max_matvecs = checks.integer("max_matvecs", max_matvecs, minimum=1)
    float64_accumulation = checks.boolean("float64_accumulation", float64_accumulation)
    if float64_accumulation and not jax.config.read("jax_enable_x64"):
        what = "False unless jax_enable_x64 is set (jax.config.update('jax_enable_x64', True))"
        checks.fail("float64_accumulation", what, True)
    work = jnp.float64 if float64_accumulation else operator.dtype
    steps = min(max_matvecs, operator.size)
    k = min(k, operator.size)
    if tol is None:
        tol = float(np.sqrt(np.finfo(work).eps))
    tol = checks.real("tol", tol, lower=0, lower_open=True)
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


def hessian_eigenpairs(
    f: Any, params: Any, k: int = 1, which: str = "top", **options: Any
) -> Eigenpairs:
    """:func:`eigenpairs` of the Hessian of ``f`` at ``params`` (linearised once).

    Args:
        f: the objective ``f(params) -> scalar``, or a :class:`FlatOperator`.
        params: the point, a pytree of float arrays (unused for a :class:`FlatOperator`).
        k, which: as for :func:`eigenpairs`.
        **options: ``tol``, ``max_matvecs``, ``key``, ``float64_accumulation``, as for
            :func:`eigenpairs`.

    Returns:
        An :class:`Eigenpairs` record whose ``vectors`` are shaped like ``params``
        with a leading axis.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> f = lambda p: 0.5 * jnp.sum(jnp.arange(1.0, 6.0) * p**2)  # eigenvalues 1..5
        >>> pairs = gx.hessian.hessian_eigenpairs(f, jnp.zeros(5), k=2, which="both")
        >>> [round(float(v), 4) for v in pairs.values], bool(pairs.converged.all())
        ([1.0, 2.0, 5.0, 4.0], True)
    """
    key = options.pop("key", None)
    return on_hessian(_eigenpairs_of_operator, f, params, key, k=k, which=which, **options)


def _eigenpairs_of_operator(operator, key, **options):
    return eigenpairs(operator, key=key, **options)
