"""Lanczos with full reorthogonalisation.

:func:`lanczos` builds an orthonormal Krylov basis ``Q`` and the tridiagonal
``T = Q^T H Q`` in one compiled loop; a step works on the filled part of the
basis only (the smallest of the windows ``16, 64, 256, ...`` rows that holds
it), so its cost follows the steps taken, not the budget. :func:`ritz_pairs`
gives the Ritz pairs of a run with their residual certificates. The certified
extreme eigenpairs built on it are in :mod:`gradxform.hessian.extreme`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradxform import checks

__all__ = ["LanczosResult", "lanczos", "ritz_pairs"]


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


def _sturm_counts(d, e2, pivmin, first_q, x):
    """How many eigenvalues of the tridiagonal ``(d, e)`` lie below each ``x`` (Sturm
    sequence: the negative pivots of ``LDL^T`` of ``T - x I``, tiny pivots set to
    ``-pivmin``), in one rolled loop over the rows."""

    def row(i, carry):
        q, count = carry
        q = d[i] - e2[i - 1] / q - x
        below = q <= pivmin
        return jnp.where(below, jnp.minimum(q, -pivmin), q), count + below.astype(jnp.int32)

    q = d[0] - x
    count = (q < 0).astype(jnp.int32)
    q = jnp.where(d[0] == x, first_q, q)
    return jax.lax.fori_loop(1, d.shape[0], row, (q, count))[1]


def _tridiagonal_eigenvalues(d, e, target):
    """The eigenvalues of indices ``target`` (0-based, ascending order) of the symmetric
    tridiagonal with diagonal ``d`` and off-diagonal ``e``, by bisection on Sturm counts.

    All of them at once from the Gershgorin interval (widened by ``2.1 n eps |T|``
    and a few ``pivmin``) until every bracket is below ``eps |T|`` or the mantissa's
    bits are spent: the arithmetic of ``jax.scipy.linalg.eigh_tridiagonal(...,
    select="i")``, whose values it reproduces bitwise (tested), with the Sturm
    recurrence as one rolled loop: about 150 operations where that one lowers to
    about 940 (a 16-fold unrolled loop and its peeled remainder), which each Ritz
    check of a Lanczos run compiled again.
    """
    n = d.shape[0]
    if n == 1:
        return jnp.broadcast_to(d, target.shape)
    info = np.finfo(d.dtype)
    e_abs, e2 = jnp.abs(e), jnp.square(e)
    radius = jnp.concatenate([e_abs[:1], e_abs[:-1] + e_abs[1:], e_abs[-1:]])
    top, bottom = jnp.max(d + radius), jnp.min(d - radius)
    t_norm = jnp.maximum(jnp.abs(bottom), jnp.abs(top))
    one = np.ones([], d.dtype)
    pivmin = np.maximum(one / info.max, (one + info.eps) * info.tiny) * jnp.maximum(1, jnp.max(e2))
    slack = jnp.array(n, d.dtype) * 2.1 * info.eps * t_norm
    lower = jnp.broadcast_to(bottom - slack - 2 * 2.1 * pivmin, target.shape)
    upper = jnp.broadcast_to(top + slack + 2.1 * pivmin, target.shape)
    first_q = jnp.broadcast_to(jnp.square(info.eps * e_abs[0]), target.shape)
    pivmin = jnp.broadcast_to(pivmin, target.shape)

    def unsettled(c):
        i, lower, _, upper = c
        return (i < info.nmant + 1) & (info.eps * t_norm < jnp.max(upper - lower))

    def halve(c):
        i, lower, mid, upper = c
        counts = _sturm_counts(d, e2, pivmin, first_q, mid)
        lower = jnp.where(counts <= target, mid, lower)
        upper = jnp.where(counts > target, mid, upper)
        return i + 1, lower, 0.5 * (lower + upper), upper

    return jax.lax.while_loop(unsettled, halve, (0, lower, 0.5 * (upper + lower), upper))[2]


_FIRST_WINDOW = 16


def _windows(steps: int) -> tuple[int, ...]:
    """The static window sizes ``16, 64, 256, ...`` below ``steps``, then ``steps``."""
    sizes, s = [], _FIRST_WINDOW
    while s < steps:
        sizes.append(s)
        s *= 4
    return (*sizes, steps)


def _on_window(size, steps: int, branch: Callable[[int], Any], first: int = 0) -> Any:
    """``branch(s)`` for the smallest window ``s >= size``, chosen by ``lax.switch``.

    Each branch works on the leading ``s`` rows of the basis or of ``T`` only,
    so the cost of a step follows the steps taken, not the budget ``steps``;
    the windows do not depend on ``steps`` below it, so two budgets stopping
    at the same size run the same computations.
    """
    sizes = tuple(s for s in _windows(steps) if s >= min(first, steps))
    if len(sizes) == 1:
        return branch(sizes[0])
    index = jnp.minimum(jnp.searchsorted(jnp.asarray(sizes), size), len(sizes) - 1)
    return jax.lax.switch(index, [functools.partial(branch, s) for s in sizes])


def _used_rows(Q, size, s):
    """The leading ``s`` rows of ``Q`` with the rows from ``size`` on zeroed (stale there)."""
    return jnp.where((jnp.arange(s) < size)[:, None], Q[:s], 0)


def _reorthogonalise(Q, size, w, s):
    Qs = _used_rows(Q, size, s)
    for _ in range(2):  # twice is enough (Kahan's "twice is enough")
        w = w - Qs.T @ (Qs @ w)
    return w


def _breakdown(b, scale, n: int, eps):
    """An invariant subspace: ``beta`` at the level of rounding, ``sqrt(n) eps |H|``."""
    return b <= np.sqrt(n) * eps * scale


class _Step(NamedTuple):
    """The Lanczos loop's carry."""

    j: jax.Array
    Q: jax.Array
    alpha: jax.Array
    beta: jax.Array
    done: jax.Array
    scale: jax.Array
    seen: Any


def _run(matvec, q0, Q, limit, stop, check_every, mv_dtype, stop_basis=True, seen=None):
    """Lanczos from unit ``q0`` in the buffer ``Q`` (stale rows allowed), ``limit`` products.

    With ``seen`` (its initial value), ``stop`` returns ``(flag, seen)`` and is also
    called at the step that ends the run, so that the ``seen`` returned beside the
    result describes the final run (the caller need not compute it again).
    """
    steps, n = Q.shape
    work = Q.dtype
    eps = jnp.finfo(work).eps

    def body(c: _Step) -> _Step:
        j, Q = c.j, c.Q
        q = Q[j]
        w = matvec(q.astype(mv_dtype)).astype(work)
        a = jnp.vdot(q, w)
        w = w - a * q - jnp.where(j > 0, c.beta[j - 1] * Q[jnp.maximum(j - 1, 0)], 0)
        w = _on_window(j + 1, steps, functools.partial(_reorthogonalise, Q, j + 1, w))
        b = jnp.linalg.norm(w)
        scale = jnp.maximum(c.scale, jnp.abs(a) + b)
        breakdown = _breakdown(b, scale, n, eps)
        alpha = c.alpha.at[j].set(a)
        beta = c.beta.at[j].set(b)  # kept at breakdown too: the residuals stay honest
        nxt = jnp.where(b > 0, w / jnp.where(b > 0, b, 1), 0)
        row = jnp.minimum(j + 1, steps - 1)
        Q = Q.at[row].set(jnp.where(j + 1 < steps, nxt, Q[row]))
        done = breakdown | (j + 1 >= jnp.minimum(limit, steps))
        seen = c.seen
        if stop is not None:
            check = ((j + 1) % check_every == 0) & (~done | (seen is not None))
            result = LanczosResult(Q if stop_basis else Q[:0], alpha, beta, j + 1)
            if seen is None:
                flag = jax.lax.cond(check, stop, lambda r: False, result)
            else:
                flag, seen = jax.lax.cond(check, stop, lambda r: (False, seen), result)
            done = done | (check & flag)
        return _Step(j + 1, Q, alpha, beta, done, scale, seen)

    zeros = jnp.zeros(steps, work)
    count = jnp.zeros([], jnp.int32)
    init = _Step(count, Q.at[0].set(q0), zeros, zeros, jnp.array(False), zeros[0], seen)
    c = jax.lax.while_loop(lambda c: ~c.done, body, init)
    return LanczosResult(c.Q, c.alpha, c.beta, c.j), c.seen


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
    stops early at an invariant subspace (``beta`` numerically zero). Step
    ``j`` reorthogonalises against the smallest window of rows (16, 64, 256,
    ... rows) holding the ``j + 1`` rows filled so far, so a step costs
    ``O(j n)``, whatever ``steps`` is.

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
    q0 = (v0 / jnp.linalg.norm(v0)).astype(work)
    Q = jnp.zeros((steps, v0.shape[0]), work)
    return _run(matvec, q0, Q, steps, stop, check_every, v0.dtype)[0]
