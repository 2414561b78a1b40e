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

from gradxform import _linalg, checks
from gradxform.hessian import _vectors as V

__all__ = ["LanczosResult", "lanczos", "ritz_pairs"]


class LanczosResult(NamedTuple):
    """A Lanczos run of ``steps`` steps (rows beyond ``size`` are unused).

    Attributes:
        basis: the orthonormal vectors ``q_0, q_1, ...`` as one pytree shaped like
            the start vector with a leading axis of ``steps`` rows (``(steps, n)``
            for a flat start vector).
        alpha, beta: the diagonal and off-diagonal of ``T`` (``beta[j]``
            couples ``q_j`` and ``q_{j+1}``).
        size: steps actually taken (fewer at an invariant subspace, "breakdown").
    """

    basis: Any
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
    theta, S = _linalg.eigh(T)
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


def _on_window(size, steps: int, branch: Callable[[int], Any]) -> Any:
    """``branch(s)`` for the smallest window ``s >= size``, chosen by ``lax.switch``.

    Each branch works on the leading ``s`` rows of the basis only, so the cost of
    a step follows the steps taken, not the budget ``steps``; the windows do not
    depend on ``steps`` below it, so two budgets stopping at the same size run the
    same computations.
    """
    sizes = _windows(steps)
    if len(sizes) == 1:
        return branch(sizes[0])
    index = jnp.minimum(jnp.searchsorted(jnp.asarray(sizes), size), len(sizes) - 1)
    return jax.lax.switch(index, [functools.partial(branch, s) for s in sizes])


def _used_rows(Q, size, s):
    """The leading ``s`` rows of the stack ``Q`` with the rows from ``size`` on zeroed
    (stale there)."""
    return V.where_rows(jnp.arange(s) < size, V.head(Q, s))


def _reorthogonalise(Q, size, w, s):
    Qs = _used_rows(Q, size, s)
    for _ in range(2):  # twice is enough (Kahan's "twice is enough")
        w = V.project_out(Qs, w)
    return w


def _breakdown(b, scale, n: int, eps):
    """An invariant subspace: ``beta`` at the level of rounding, ``sqrt(n) eps |H|``."""
    return b <= np.sqrt(n) * eps * scale


class _Step(NamedTuple):
    """The Lanczos loop's carry."""

    j: jax.Array
    Q: Any
    alpha: jax.Array
    beta: jax.Array
    done: jax.Array
    scale: jax.Array
    seen: Any


def _run(matvec, q0, Q, limit, stop, check_every, like, stop_basis=True, seen=None):
    """Lanczos from unit ``q0`` in the buffer ``Q`` (stale rows allowed), ``limit`` products.

    ``q0`` and ``Q`` are pytrees (``Q`` with a leading axis of ``steps`` rows) in the
    working dtype; the products take and give pytrees like ``like`` (its leaves' dtypes
    and shardings). With ``seen`` (its initial value), ``stop`` returns ``(flag, seen)``
    and is also called at the step that ends the run, so that the ``seen`` returned
    beside the result describes the final run (the caller need not compute it again).
    """
    steps = V.leading(Q)
    n = V.size_of(like)
    work = jax.tree.leaves(Q)[0].dtype
    eps = jnp.finfo(work).eps

    def body(c: _Step) -> _Step:
        j, Q = c.j, c.Q
        q = V.row(Q, j)
        w = V.cast(matvec(V.cast_like(q, like)), work)
        a = V.dot(q, w, work)
        previous = V.scale(c.beta[jnp.maximum(j - 1, 0)], V.row(Q, jnp.maximum(j - 1, 0)))
        w = jax.tree.map(lambda w, q, p: w - a * q - jnp.where(j > 0, p, 0), w, q, previous)
        w = _on_window(j + 1, steps, functools.partial(_reorthogonalise, Q, j + 1, w))
        b = V.norm(w, work)
        scale = jnp.maximum(c.scale, jnp.abs(a) + b)
        breakdown = _breakdown(b, scale, n, eps)
        alpha = c.alpha.at[j].set(a)
        beta = c.beta.at[j].set(b)  # kept at breakdown too: the residuals stay honest
        nxt = jax.tree.map(lambda x: jnp.where(b > 0, x / jnp.where(b > 0, b, 1), 0), w)
        row = jnp.minimum(j + 1, steps - 1)
        Q = V.set_row(Q, row, V.where(j + 1 < steps, nxt, V.row(Q, row)))
        Q = V.constrain(Q, like, 1)
        done = breakdown | (j + 1 >= jnp.minimum(limit, steps))
        seen = c.seen
        if stop is not None:
            check = ((j + 1) % check_every == 0) & (~done | (seen is not None))
            result = LanczosResult(Q if stop_basis else V.head(Q, 0), alpha, beta, j + 1)
            if seen is None:
                flag = jax.lax.cond(check, stop, lambda r: False, result)
            else:
                flag, seen = jax.lax.cond(check, stop, lambda r: (False, seen), result)
            done = done | (check & flag)
        return _Step(j + 1, Q, alpha, beta, done, scale, seen)

    zeros = jnp.zeros(steps, work)
    count = jnp.zeros([], jnp.int32)
    Q = V.constrain(V.set_row(Q, 0, q0), like, 1)
    init = _Step(count, Q, zeros, zeros, jnp.array(False), zeros[0], seen)
    c = jax.lax.while_loop(lambda c: ~c.done, body, init)
    return LanczosResult(c.Q, c.alpha, c.beta, c.j), c.seen


def lanczos(
    matvec: Callable[[Any], Any],
    v0: Any,
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
        matvec: ``v -> H v`` (``H`` symmetric) on vectors shaped like ``v0``.
        v0: the starting vector (normalised here): a flat array, or any pytree of
            arrays (the params' shape: the basis is then that pytree with a leading
            axis, never flattened, so sharded leaves stay sharded).
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
    like = V.space(v0)
    work = jnp.dtype(dtype or V.dtype_of(like))
    return run(matvec, v0, steps, like, work, stop=stop, check_every=check_every)


def run(matvec, v0, steps: int, like, work, *, stop=None, check_every: int = 1) -> LanczosResult:
    """:func:`lanczos` without the argument checks: ``v0`` a pytree in the space ``like``
    (its leaves' dtypes and shardings), the basis and ``T`` in ``work``."""
    common = V.dtype_of(like)
    norm = V.norm(v0, common)
    q0 = jax.tree.map(lambda x: (x.astype(common) / norm).astype(work), v0)
    Q = V.stacked_zeros(like, steps, work)
    return _run(matvec, q0, Q, steps, stop, check_every, like)[0]
