"""L-BFGS-B's model: the compact limited-memory matrix, the Cauchy point, the subspace step.

Byrd, Lu, Nocedal & Zhu, "A limited memory algorithm for bound constrained
optimization", SIAM J. Sci. Comput. 16(5), 1190-1208 (1995), with the
subspace step of Morales & Nocedal's 2011 remark (L-BFGS-B 3.0, the version
scipy runs). The quasi-Newton matrix is kept in compact form (Byrd, Nocedal &
Schnabel 1994),

    B = theta I - W M W^T,   W = [Y, theta S],
    M = [[-D, L^T], [L, theta S^T S]]^-1,

with ``S``, ``Y`` the last ``m`` steps and gradient differences, ``D`` the
diagonal and ``L`` the strictly lower triangle of ``S^T Y``. Everything is on
flat vectors of a fixed length ``n`` with masks instead of index lists, so
shapes never depend on the active set (``jit`` and ``vmap`` friendly); the
memory keeps its pairs oldest first in rows ``0 .. col - 1`` of fixed
``(m, n)`` buffers (the rest zero, and the matrices padded with identity so
the empty rows decouple).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from gradxform import _linalg

__all__ = ["Box", "Compact", "cauchy_point", "empty", "push", "subspace_step"]


class Box(NamedTuple):
    """The bounds on a flat vector.

    Attributes:
        lower: lower bounds (``-inf`` where there is none).
        upper: upper bounds (``inf`` where there is none).
        has_lower: ``lower`` is finite.
        has_upper: ``upper`` is finite.
        fixed: both finite and equal (the variable never moves).
    """

    lower: jax.Array
    upper: jax.Array
    has_lower: jax.Array
    has_upper: jax.Array
    fixed: jax.Array


class Compact(NamedTuple):
    """The limited-memory matrix in compact form.

    Attributes:
        s: ``(m, n)``, the steps, oldest first in rows ``0 .. col - 1``.
        y: ``(m, n)``, the gradient differences, likewise.
        sy: ``(m, m)``, ``sy[i, j] = s_i . y_j`` on and below the diagonal.
        ss: ``(m, m)``, ``ss[i, j] = s_i . s_j``.
        theta: the scaling ``B_0 = theta I`` (``y.y / s.y`` of the newest pair).
        col: the number of pairs held.
        middle: ``(2m, 2m)``, the middle matrix ``M`` (zero while ``col = 0``).
    """

    s: jax.Array
    y: jax.Array
    sy: jax.Array
    ss: jax.Array
    theta: jax.Array
    col: jax.Array
    middle: jax.Array


def empty(n: int, m: int, dtype) -> Compact:
    """The empty memory (``B = I``) for ``n`` variables and ``m`` pairs."""
    zeros = jnp.zeros((m, n), dtype)
    square = jnp.zeros((m, m), dtype)
    return Compact(
        zeros,
        zeros,
        square,
        square,
        jnp.ones([], dtype),
        jnp.zeros([], jnp.int32),
        jnp.zeros((2 * m, 2 * m), dtype),
    )


def _valid(mem: Compact) -> jax.Array:
    return jnp.arange(mem.sy.shape[0]) < mem.col


def _padded_solve(blocks, valid, rhs) -> tuple[jax.Array, jax.Array]:
    """``(X, ok)``: ``[[A, B^T], [B, C]] X = rhs`` on the pairs held, by one LU solve.

    The rows and columns of the pairs not held get ``-1`` / ``+1`` on the
    diagonal (decoupled), and their rows of ``X`` are zeroed. ``ok`` is False
    where the solution is not finite (a singular system).
    """
    a, b, c = blocks
    pair = valid[:, None] & valid[None, :]
    pad = jnp.diag(jnp.where(valid, 0, 1).astype(a.dtype))
    k = jnp.block(
        [
            [jnp.where(pair, a, 0) - pad, jnp.where(pair, b.T, 0)],
            [jnp.where(pair, b, 0), jnp.where(pair, c, 0) + pad],
        ]
    )
    both = jnp.concatenate([valid, valid])
    x = jnp.where(both.reshape(-1, *([1] * (rhs.ndim - 1))), _linalg.solve(k, rhs), 0)
    return x, jnp.all(jnp.isfinite(x))


def _middle(mem: Compact) -> tuple[jax.Array, jax.Array]:
    """``(M, ok)``: ``M = [[-D, L^T], [L, theta S^T S]]^-1`` (scipy forms it by Cholesky)."""
    m = mem.sy.shape[0]
    valid = _valid(mem)
    blocks = (-jnp.diag(jnp.diagonal(mem.sy)), jnp.tril(mem.sy, -1), mem.theta * mem.ss)
    both = jnp.concatenate([valid, valid])
    middle, ok = _padded_solve(blocks, valid, jnp.eye(2 * m, dtype=mem.sy.dtype))
    return jnp.where(ok & both[None, :], middle, 0), ok


def push(mem: Compact, s, y, sy_new, ss_new) -> tuple[Compact, jax.Array]:
    """Adds the pair ``(s, y)`` (dropping the oldest when full), as scipy's ``matupd``.

    Args:
        mem: the memory.
        s: the step.
        y: the gradient difference.
        sy_new: ``s . y`` as the caller measured it.
        ss_new: ``s . s`` likewise.

    Returns:
        ``(memory, ok)``; where the new middle matrix does not exist (``ok``
        False) the memory is emptied, as L-BFGS-B refreshes it.
    """
    m = mem.sy.shape[0]
    full = mem.col == m

    def shifted(a, axes):
        return jnp.where(full, jnp.roll(a, -1, axis=axes), a)

    row = jnp.minimum(mem.col, m - 1)
    s_rows = shifted(mem.s, 0).at[row].set(s)
    y_rows = shifted(mem.y, 0).at[row].set(y)
    index = jnp.arange(m)
    sy_row = jnp.where(index < row, y_rows @ s, jnp.where(index == row, sy_new, 0))
    ss_row = jnp.where(index < row, s_rows @ s, jnp.where(index == row, ss_new, 0))
    sy = (
        shifted(mem.sy, (0, 1))
        .at[row]
        .set(sy_row)
        .at[:, row]
        .set(jnp.where(index < row, 0, sy_row))
    )
    ss = shifted(mem.ss, (0, 1)).at[row].set(ss_row).at[:, row].set(ss_row)
    theta = jnp.vdot(y, y) / sy_new
    new = Compact(s_rows, y_rows, sy, ss, theta, jnp.minimum(mem.col + 1, m), mem.middle)
    middle, ok = _middle(new)
    reset = empty(s.shape[0], m, mem.sy.dtype)
    return jax.tree.map(lambda a, b: jnp.where(ok, a, b), new._replace(middle=middle), reset), ok


def _w_t(mem: Compact, v) -> jax.Array:
    """``W^T v``, a ``2m`` vector."""
    return jnp.concatenate([mem.y @ v, mem.theta * (mem.s @ v)])


def _w(mem: Compact, u) -> jax.Array:
    """``W u`` for a ``2m`` vector ``u``."""
    m = mem.sy.shape[0]
    return mem.y.T @ u[:m] + mem.theta * (mem.s.T @ u[m:])


class _Segment(NamedTuple):
    """The search along the projected-gradient path, between two breakpoints."""

    i: jax.Array  # breakpoints passed
    tj: jax.Array  # the latest breakpoint
    tsum: jax.Array  # path parameter reached
    f1: jax.Array  # slope of the model along the current segment
    f2: jax.Array  # its curvature
    dtm: jax.Array  # step to the model's minimizer on this segment
    p: jax.Array  # W^T d
    c: jax.Array  # W^T (xcp - x)
    d: jax.Array  # the path's direction (zero for the variables fixed so far)
    xcp: jax.Array
    at_bound: jax.Array  # 1 fixed at lower, 2 at upper, 0 not (yet)
    found: jax.Array  # the last breakpoint was passed


def _path_start(x, g, box: Box):
    """The path ``P(x - t g)``: its direction, breakpoints, and the variables it cannot move.

    Returns ``(d, t, has_break, bnded, blocked)``: ``blocked`` are at a bound
    the gradient pushes against (scipy's ``iwhere`` 1 or 2), ``bnded`` is True
    when every moving variable reaches a bound somewhere along the path.
    """
    neg = -g
    bounded = (box.has_lower | box.has_upper) & ~box.fixed
    at_lower = box.has_lower & (x - box.lower <= 0)
    at_upper = box.has_upper & (box.upper - x <= 0)
    blocked = bounded & jnp.where(at_lower, neg <= 0, at_upper & (neg >= 0))
    still = bounded & ~at_lower & ~at_upper & (jnp.abs(neg) <= 0)  # scipy's iwhere = -3
    moving = ~box.fixed & ~blocked & ~still
    d = jnp.where(moving, neg, 0)
    down = moving & box.has_lower & (neg < 0)
    up = moving & ~down & box.has_upper & (neg > 0)
    t = jnp.where(down, (x - box.lower) / -neg, jnp.where(up, (box.upper - x) / neg, jnp.inf))
    bnded = ~jnp.any(moving & ~down & ~up & (jnp.abs(neg) > 0))
    return d, t, down | up, bnded, blocked


def cauchy_point(x, g, box: Box, mem: Compact, eps):
    """The generalized Cauchy point: the first local minimizer of the model along ``P(x - t g)``.

    The path is examined segment by segment between the breakpoints (where
    a variable reaches its bound), in increasing order, updating the model's
    slope ``f1`` and curvature ``f2`` on each (BLNZ Alg. CP, as scipy's
    ``cauchy``: ``f2`` is kept above ``eps`` times its first value).

    Args:
        x: the iterate (in the box).
        g: the gradient there.
        box: the bounds.
        mem: the memory.
        eps: machine epsilon of the working dtype.

    Returns:
        ``(xcp, c, free)``: the point, ``W^T (xcp - x)``, and the variables
        free there (not fixed at a bound).
    """
    d, t, has_break, bnded, blocked = _path_start(x, g, box)
    p = _w_t(mem, d)
    f1 = -jnp.vdot(d, d)
    f2_org = -mem.theta * f1
    f2 = f2_org - jnp.vdot(p, mem.middle @ p)
    order = jnp.argsort(t, stable=True)
    nbreak = jnp.sum(has_break)
    zero = jnp.zeros_like(f1)
    start = _Segment(
        jnp.zeros([], jnp.int32), zero, zero, f1, f2, -f1 / f2, p, jnp.zeros_like(p), d, x,
        jnp.zeros(x.shape, jnp.int32), jnp.array(False),
    )  # fmt: skip

    def reaches_next(s: _Segment) -> jax.Array:
        """The model still decreases at the next breakpoint: the segment is passed."""
        return ~s.found & (s.i < nbreak) & (s.dtm >= t[order[jnp.minimum(s.i, t.size - 1)]] - s.tj)

    def body(s: _Segment) -> _Segment:
        b = order[s.i]
        dt = t[b] - s.tj
        db = s.d[b]
        bound = jnp.where(db > 0, box.upper[b], box.lower[b])
        f1 = s.f1 + dt * s.f2 + db * db - mem.theta * db * (bound - x[b])
        f2 = s.f2 - mem.theta * db * db
        c = s.c + dt * s.p
        wb = jnp.concatenate([mem.y[:, b], mem.theta * mem.s[:, b]])
        v = mem.middle @ wb
        f1 = f1 + db * jnp.vdot(c, v)
        f2 = jnp.maximum(eps * f2_org, f2 + 2 * db * jnp.vdot(s.p, v) - db * db * jnp.vdot(wb, v))
        last = s.i + 1 >= nbreak
        return _Segment(
            s.i + 1, t[b], s.tsum + dt, f1, f2, jnp.where(last & bnded, 0, -f1 / f2),
            s.p - db * wb, c, s.d.at[b].set(0), s.xcp.at[b].set(bound),
            s.at_bound.at[b].set(jnp.where(db > 0, 2, 1)), last,
        )  # fmt: skip

    out = jax.lax.while_loop(reaches_next, body, start)
    dtm = jnp.maximum(out.dtm, 0)
    xcp = out.xcp + (out.tsum + dtm) * out.d
    c = out.c + dtm * out.p
    trivial = ~jnp.any(d != 0)  # nothing can move: the Cauchy point is x
    # free at the Cauchy point: neither blocked at x nor fixed along the path
    free = ~(box.fixed | blocked | (out.at_bound > 0))
    return jnp.where(trivial, x, xcp), jnp.where(trivial, 0, c), free


def _solve_reduced(mem: Compact, free, w) -> tuple[jax.Array, jax.Array]:
    """``(K^-1 w, ok)`` with ``K = M^-1 - A^T A / theta``, ``A = Z^T W`` (scipy's ``formk``):

    ``K = [[-D - Y^T Z Z^T Y / theta, L_a^T - R_z^T], [L_a - R_z, theta S^T A A^T S]]``,
    ``L_a`` the strictly lower triangle of ``S^T A A^T Y`` and ``R_z`` the upper
    triangle (with the diagonal) of ``S^T Z Z^T Y`` (``Z``: the free variables,
    ``A``: the others). scipy factors ``K`` by two Choleskys; one LU solve here.
    """
    yz, sz, sa = mem.y * free, mem.s * free, mem.s * ~free
    blocks = (
        -jnp.diag(jnp.diagonal(mem.sy)) - (yz @ yz.T) / mem.theta,
        jnp.tril(sa @ mem.y.T, -1) - jnp.triu(sz @ mem.y.T),
        mem.theta * (sa @ sa.T),
    )
    return _padded_solve(blocks, _valid(mem), w)


def _project_or_backtrack(x, g, z, d, free, box: Box):
    """L-BFGS-B 3.0's use of the subspace step ``d`` from the Cauchy point ``z``.

    The step is projected onto the box; if that hits a bound and the
    projected point is not a descent direction from ``x``, the step is cut at
    the first bound it meets instead (that variable set exactly to its bound).
    """
    moved = jnp.where(free, jnp.clip(z + d, box.lower, box.upper), z)
    hit = free & ((box.has_lower & (moved == box.lower)) | (box.has_upper & (moved == box.upper)))
    use_projection = ~jnp.any(hit) | (jnp.vdot(moved - x, g) <= 0)
    down = free & box.has_lower & (d < 0)
    up = free & box.has_upper & (d > 0)
    gap = jnp.where(down, box.lower - z, box.upper - z)
    ratio = jnp.where(
        down,
        jnp.where(gap >= 0, 0, gap / d),
        jnp.where(up, jnp.where(gap <= 0, 0, gap / d), jnp.inf),
    )
    first = jnp.argmin(ratio)
    alpha = jnp.minimum(1, ratio[first])
    cut = alpha < 1
    d = jnp.where(cut, d.at[first].set(0), d)
    bound = jnp.where(down[first], box.lower[first], box.upper[first])
    z_cut = jnp.where(cut, z.at[first].set(bound), z)
    backtracked = jnp.where(free, z_cut + alpha * d, z_cut)
    return jnp.where(use_projection, moved, backtracked)


def subspace_step(x, g, z, c, free, box: Box, mem: Compact):
    """The minimizer of the model over the free variables from the Cauchy point ``z``.

    ``d = -(Z^T B Z)^-1 r`` with ``r = Z^T (g + B (z - x))`` the reduced
    gradient, by the Sherman-Morrison-Woodbury form
    ``d = (r' + Z^T W K^-1 W^T Z r' / theta) / theta`` (``r' = -r``), then
    projected or cut back into the box (:func:`_project_or_backtrack`).

    Args:
        x: the iterate.
        g: its gradient.
        z: the Cauchy point.
        c: ``W^T (z - x)``.
        free: the free variables at ``z``.
        box: the bounds.
        mem: the memory (``col > 0``).

    Returns:
        ``(point, ok)``; ``ok`` False where a factorisation failed (L-BFGS-B
        then refreshes the memory and computes the iteration again).
    """
    m = mem.sy.shape[0]
    r = jnp.where(free, -mem.theta * (z - x) - g + _w(mem, mem.middle @ c), 0)
    v, ok = _solve_reduced(mem, free, _w_t(mem, r))
    d = (r + (mem.y.T @ v[:m]) / mem.theta + mem.s.T @ v[m:]) / mem.theta
    d = jnp.where(free, d, 0)
    return _project_or_backtrack(x, g, z, d, free, box), ok
