"""The curvature models and directions of the second-order methods, as pure functions.

L-BFGS works on pytrees (its memory has a leading axis of size ``m`` on each
leaf, inner products are summed over leaves, so sharded parameters stay
sharded); BFGS and Newton work on flat vectors (a dense ``n x n`` matrix);
Newton-CG works on pytrees through Hessian-vector products. The methods built
from these functions are in :mod:`gradxform.second_order.methods`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform import _linalg
from gradxform.second_order import _tree

__all__ = [
    "LbfgsMemory",
    "NewtonDirection",
    "bfgs_inverse_update",
    "lbfgs_init",
    "lbfgs_two_loop",
    "lbfgs_update",
    "newton_cg_direction",
    "newton_direction",
]


# --- L-BFGS -----------------------------------------------------------------------------


class LbfgsMemory(NamedTuple):
    """The last ``m`` pairs ``s = x_{k+1} - x_k``, ``y = g_{k+1} - g_k`` (a ring buffer).

    Attributes:
        s: pytree shaped like the params with a leading axis of size ``m`` on
            every leaf; row ``num_pairs % m`` is written next.
        y: likewise, the gradient differences.
        rho: ``1 / Re<y, s>`` per pair, shape ``(m,)``; its dtype is the dtype
            of the inner products.
        num_pairs: pairs stored since the start or the latest reset (rows
            beyond ``min(num_pairs, m)`` are unused).
    """

    s: Any
    y: Any
    rho: jax.Array
    num_pairs: jax.Array


def lbfgs_init(params: Any, memory_size: int, dtype=None) -> LbfgsMemory:
    """An empty L-BFGS memory for parameters shaped like ``params``.

    Args:
        params: a pytree of arrays or ``jax.ShapeDtypeStruct``, or an int ``n``
            for a flat vector of length ``n``.
        memory_size: the number ``m`` of pairs kept.
        dtype: the memory's dtype; default each leaf's dtype.

    Returns:
        An :class:`LbfgsMemory` with ``num_pairs = 0``.
    """
    if isinstance(params, int):
        params = jax.ShapeDtypeStruct((params,), jnp.float32 if dtype is None else dtype)
    s, y = (_tree.stacked_zeros(params, memory_size, dtype) for _ in range(2))  # own buffers
    scalars = _tree.scalar_dtype(params) if dtype is None else jnp.dtype(dtype)
    return LbfgsMemory(s, y, jnp.zeros(memory_size, scalars), jnp.zeros([], jnp.int32))


def _row(stack: Any, row: jax.Array) -> Any:
    return jax.tree.map(lambda leaf: leaf[row], stack)


def lbfgs_update(memory: LbfgsMemory, s: Any, y: Any) -> LbfgsMemory:
    """Stores ``(s, y)`` unless ``Re<y, s> <= 1e-10 |s| |y|`` (the curvature condition fails).

    Args:
        memory: the current memory.
        s: the step, shaped like the params.
        y: the gradient difference, shaped like the params.

    Returns:
        The memory with the pair written over the oldest one, or unchanged.
    """
    dtype = memory.rho.dtype
    m = memory.rho.shape[0]
    sy = _tree.inner(s, y, dtype)
    ok = jnp.isfinite(sy) & (sy > 1e-10 * _tree.norm(s, dtype) * _tree.norm(y, dtype))
    row = memory.num_pairs % m

    def put(stack, v):
        return jax.tree.map(lambda leaf, x: leaf.at[row].set(x.astype(leaf.dtype)), stack, v)

    new = LbfgsMemory(
        put(memory.s, s),
        put(memory.y, y),
        memory.rho.at[row].set(1 / jnp.where(ok, sy, 1)),
        memory.num_pairs + 1,
    )
    return _tree.select(ok, new, memory)


def lbfgs_two_loop(memory: LbfgsMemory, g: Any, scale_initial: bool = True) -> Any:
    """``H g`` for the L-BFGS inverse-Hessian approximation (N&W Alg. 7.4).

    ``H`` is the BFGS recursion ``H <- V^T H V + rho s s^T``, ``V = I - rho y s^T``,
    applied to the stored pairs oldest first, from ``H_0 = gamma I`` with
    ``gamma = Re<s, y> / Re<y, y>`` of the newest pair (N&W eq. 7.20) when
    ``scale_initial``, else ``I``.

    Args:
        memory: the stored pairs.
        g: the vector, shaped like the params (in the memory's dtypes).
        scale_initial: whether ``H_0`` is scaled by ``gamma``.

    Returns:
        ``H g``, shaped like ``g``.
    """
    dtype = memory.rho.dtype
    m = memory.rho.shape[0]
    stored = jnp.minimum(memory.num_pairs, m)
    newest = (memory.num_pairs - 1) % m

    def first(i, carry):
        q, alphas = carry
        row = (newest - i) % m
        valid = i < stored
        alpha = jnp.where(valid, memory.rho[row] * _tree.inner(_row(memory.s, row), q, dtype), 0)
        q_next = jax.tree.map(
            lambda a, b: jnp.where(valid, a - (alpha * b).astype(a.dtype), a),
            q,
            _row(memory.y, row),
        )
        return q_next, alphas.at[row].set(alpha)

    q, alphas = jax.lax.fori_loop(0, m, first, (g, jnp.zeros(m, dtype)))
    y_new, s_new = _row(memory.y, newest), _row(memory.s, newest)
    gamma = _tree.inner(s_new, y_new, dtype) / _tree.inner(y_new, y_new, dtype)
    gamma = jnp.where((stored > 0) & scale_initial & jnp.isfinite(gamma), gamma, 1)
    r = _tree.scale(gamma, q)

    def second(i, r):
        row = (newest - (m - 1 - i)) % m
        valid = (m - 1 - i) < stored
        beta = memory.rho[row] * _tree.inner(_row(memory.y, row), r, dtype)
        coefficient = alphas[row] - beta
        return jax.tree.map(
            lambda a, b: jnp.where(valid, a + (b * coefficient).astype(a.dtype), a),
            r,
            _row(memory.s, row),
        )

    return jax.lax.fori_loop(0, m, second, r)


# --- BFGS -------------------------------------------------------------------------------


def bfgs_inverse_update(H: jax.Array, s: jax.Array, y: jax.Array, first: Any = False) -> jax.Array:
    """BFGS update of the inverse Hessian in O(n^2) (N&W eq. 6.17), no matrix products.

    ``H+ = (I - rho s y^T) H (I - rho y s^T) + rho s s^T``, ``rho = 1 / y.s``,
    expanded as ``H - rho (s (H y)^T + (H y) s^T) + (rho^2 y^T H y + rho) s s^T``.
    Where ``first`` holds, ``H`` is first replaced by ``(s.y / y.y) I``
    (N&W eq. 6.20). The update is skipped when ``s.y <= 1e-10 |s| |y|``.

    Args:
        H: the ``(n, n)`` inverse Hessian approximation.
        s: the step, a flat vector.
        y: the gradient difference, a flat vector.
        first: (bool, may be traced) rescale ``H`` before updating it.

    Returns:
        The updated ``(n, n)`` matrix.
    """
    sy = jnp.vdot(s, y)
    ok = jnp.isfinite(sy) & (sy > 1e-10 * jnp.linalg.norm(s) * jnp.linalg.norm(y))
    if first is not False:
        scaled = (sy / jnp.vdot(y, y)) * jnp.eye(H.shape[0], dtype=H.dtype)
        H = jnp.where(first & ok, scaled, H)
    rho = 1 / jnp.where(ok, sy, 1)
    Hy = H @ y
    updated = (
        H
        - rho * (jnp.outer(s, Hy) + jnp.outer(Hy, s))
        + (rho * rho * jnp.vdot(y, Hy) + rho) * jnp.outer(s, s)
    )
    return jnp.where(ok, updated, H)


# --- Newton -----------------------------------------------------------------------------


class NewtonDirection(NamedTuple):
    """What :func:`newton_direction` found.

    Attributes:
        direction: the search direction ``d``.
        lam_min: the smallest eigenvalue of ``H`` where the eigendecomposition
            ran; on the Cholesky path the smallest squared pivot, a stand-in
            that is positive exactly there.
        negative: ``lam_min < -delta`` (a saddle or maximum: no stopping there).
        modified: the factorisation failed, so the eigendecomposition ran (and
            ``recompute``, if given, computed the Hessian a second time).
    """

    direction: jax.Array
    lam_min: jax.Array
    negative: jax.Array
    modified: jax.Array


def _positive_definite(chol: jax.Array, hessian: jax.Array) -> jax.Array:
    """True where the Cholesky factor exists with every squared pivot above
    ``n eps max_i H_ii``: below that, rounding decides whether the factorisation succeeds."""
    n = hessian.shape[0]
    pivots = jnp.diagonal(chol)  # NaN throughout where the factorisation failed
    scale = n * jnp.finfo(chol.dtype).eps * jnp.max(jnp.abs(jnp.diagonal(hessian)))
    return jnp.all(pivots**2 > scale)  # False for NaN, and for a zero Hessian


def _modified_newton(hessian: jax.Array, g: jax.Array, x: jax.Array | None) -> NewtonDirection:
    """The absolute-value modification of ``H`` and, at negative curvature, the escape."""
    lam, V = _linalg.eigh(hessian)
    root_eps = jnp.sqrt(jnp.finfo(g.dtype).eps)
    size = jnp.max(jnp.abs(lam))
    delta = root_eps * jnp.where(size > 0, size, 1)
    coeffs = V.T @ g
    d = -V @ (coeffs / jnp.maximum(jnp.abs(lam), delta))
    negative = lam[0] < -delta
    # as long as the modified step; near a saddle that vanishes with the gradient, so at
    # least (|lam_min| / |lam|max) |x|; of unit length at a stationary point x = 0
    length = jnp.linalg.norm(d)
    if x is not None:
        relative = -lam[0] / jnp.where(size > 0, size, 1)
        length = jnp.maximum(length, relative * jnp.linalg.norm(x).astype(length.dtype))
    length = jnp.where(length > 0, length, 1)
    escape = -jnp.where(coeffs[0] > 0, 1, -1) * length * V[:, 0]
    return NewtonDirection(jnp.where(negative, d + escape, d), lam[0], negative, jnp.array(True))


def newton_direction(
    hessian: jax.Array,
    g: jax.Array,
    recompute: Callable[[], jax.Array] | None = None,
    x: jax.Array | None = None,
) -> NewtonDirection:
    """A descent direction from the exact (symmetric) Hessian, safe at saddles and maxima.

    First a Cholesky factorisation of the lower triangle: where it succeeds
    with every squared pivot above ``n eps max_i H_ii`` (``H`` positive
    definite in working precision), ``d = -H^-1 g``, the exact Newton step
    however ill-conditioned ``H`` is. Otherwise, with ``H = V diag(lam) V^T``
    and ``delta = sqrt(eps) max|lam|`` (relative to ``H``'s own scale):
    ``d = -V diag(1 / max(|lam|, delta)) V^T g`` (the absolute-value
    modification, so negative-curvature components move downhill), plus, when
    ``lam_min < -delta``, the eigenvector of ``lam_min`` signed to descend and
    scaled to the length of that modified step, so the step leaves a saddle
    or maximum at the problem's own scale and the line search's first trial
    is usually accepted. Near a saddle that step vanishes with the gradient:
    the escape is never shorter than ``(|lam_min| / max|lam|) |x|`` (given
    ``x``), and is of unit length where both are zero. The eigendecomposition
    runs only when the factorisation fails.

    Args:
        hessian: the ``(n, n)`` Hessian.
        g: the gradient, a flat vector.
        recompute: a zero-argument function returning the Hessian again; the
            eigendecomposition branch calls it instead of keeping ``hessian``,
            so the factorisation can overwrite ``hessian`` in place.
        x: the point (a flat vector), for the escape's shortest length
            (without it, the escape may vanish with the gradient).

    Returns:
        A :class:`NewtonDirection`.
    """
    chol = _linalg.cholesky(hessian)
    positive = _positive_definite(chol, hessian)
    # solved on both paths (NaN where the factorisation failed), so the factor never
    # crosses into the conditional, which would copy it into another layout
    newton = -jax.scipy.linalg.cho_solve((chol, True), g)
    smallest_pivot = jnp.min(jnp.diagonal(chol) ** 2)

    def newton_step(_):
        return NewtonDirection(newton, smallest_pivot, jnp.array(False), jnp.array(False))

    def modified_step(_):
        return _modified_newton(hessian if recompute is None else recompute(), g, x)

    return jax.lax.cond(positive, newton_step, modified_step, None)


def newton_cg_direction(hvp: Callable[[Any], Any], g: Any, max_steps: int) -> tuple[Any, jax.Array]:
    """Truncated CG on ``H d = -g`` (N&W Alg. 7.1), matrix-free through ``hvp(v) = H v``.

    Stops when ``|r| <= min(0.5, sqrt|g|) |g|`` (``r = H d + g``, the
    forcing term of N&W eq. 7.3 and scipy), after ``max_steps``, or at
    non-positive curvature ``Re<p, H p> <= 0``, returning the iterate so far;
    at the first step that is steepest descent scaled by the curvature met,
    ``-(|g|^2 / |Re<g, H g>|) g`` (scipy's fallback), or ``-g`` where that
    curvature is zero.

    Args:
        hvp: ``v -> H v`` on pytrees shaped like ``g``.
        g: the gradient, a pytree.
        max_steps: the most CG steps (Hessian-vector products).

    Returns:
        ``(d, number of Hessian-vector products)``.
    """
    dtype = _tree.scalar_dtype(g)
    gnorm = _tree.norm(g, dtype)
    tol = jnp.minimum(0.5, jnp.sqrt(gnorm)) * gnorm

    def cond(c):
        i, _, r, _, done = c
        return (~done) & (i < max_steps) & (_tree.norm(r, dtype) > tol)

    def body(c):
        i, z, r, p, _ = c
        Hp = hvp(p)
        curvature = _tree.inner(p, Hp, dtype)
        negative = curvature <= 0
        rr = _tree.inner(r, r, dtype)
        alpha = rr / jnp.where(negative, 1, curvature)
        z_new = _tree.axpy(alpha, p, z)
        r_new = _tree.axpy(alpha, Hp, r)
        beta = _tree.inner(r_new, r_new, dtype) / rr
        p_new = jax.tree.map(lambda a, b: (-a + beta * b).astype(a.dtype), r_new, p)
        # at the first step p = -g: the steepest-descent step the curvature met scales
        scaled = _tree.scale(jnp.where(curvature < 0, rr / -curvature, 1), p)
        z_out = _tree.select(negative, _tree.select(i == 0, scaled, z), z_new)
        return i + 1, z_out, _tree.select(negative, r, r_new), p_new, negative

    init = (jnp.zeros([], jnp.int32), _tree.zeros(g), g, _tree.neg(g), jnp.array(False))
    i, z, _, _, _ = jax.lax.while_loop(cond, body, init)
    # already converged: steepest descent (zero at a stationary point)
    return _tree.select(i == 0, _tree.neg(g), z), i
