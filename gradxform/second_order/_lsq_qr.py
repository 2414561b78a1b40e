"""MINPACK's linear algebra for Levenberg-Marquardt, in JAX: pivoted QR, qrsolv, lmpar.

The dense path of :func:`gradxform.least_squares` takes MINPACK's steps
(``lmder``, which ``scipy.optimize.least_squares(method="lm")`` wraps) with
the same arithmetic, so that it reaches the same points in the same number of
evaluations, including where ``J`` is singular (there an exact zero on the
diagonal of ``R`` decides the step). Written from the algorithms' published
description (Moré, "The Levenberg-Marquardt algorithm: implementation and
theory", 1978; the MINPACK-1 user guide, Moré, Garbow and Hillstrom 1980):

* :func:`pivoted_qr`: Householder QR with column pivoting, ``J P = Q R``,
  the pivot the largest remaining column norm, the norms downdated and
  recomputed where cancellation makes the downdate inaccurate (``qrfac``).
* :func:`qrsolv`: for a diagonal ``D``, the ``x`` minimising
  ``|J x - b|^2 + |D x|^2`` from ``R`` and ``Q^T b``, by Givens rotations
  eliminating ``D`` below ``R`` (``qrsolv``); singular ``S`` handled as ``R``'s.
* :func:`lm_parameter`: the damping ``par`` whose step has ``|D p|``
  within 10% of the trust radius, Moré's safeguarded Newton iteration
  (``lmpar``), and that step.

Every loop is a ``lax`` loop over static shapes (``m >= n``: the caller pads
``J`` with zero rows), so all of it is jit- and vmap-able.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

_P05 = 0.05  # qrfac: recompute a downdated column norm when it lost this much


class QR(NamedTuple):
    """``J P = Q R`` with ``Q`` held as Householder vectors.

    Attributes:
        r: ``R``, upper triangular ``(n, n)``.
        house: the Householder vectors, column ``j`` in rows ``j..m-1`` of ``(m, n)``.
        perm: ``P`` as indices: column ``j`` of ``J P`` is column ``perm[j]`` of ``J``.
        acnorm: the column norms of ``J`` (unpermuted).
    """

    r: jax.Array
    house: jax.Array
    perm: jax.Array
    acnorm: jax.Array


def rounded(x: jax.Array) -> jax.Array:
    """``x``, rounded before any addition it feeds: XLA's CPU compiler always fuses ``a * b + c``
    into one fused multiply-add (one rounding); MINPACK rounds the product first, and its
    steps on singular problems depend on that last bit. ``x * 1`` with a ``1`` the compiler
    cannot see through keeps the product's rounding (``2 NaN`` is ``NaN``)."""
    return x * jnp.where(jnp.isnan(x), 2, 1).astype(x.dtype)


def divide(x: jax.Array, y: jax.Array) -> jax.Array:
    """``x / y`` for a vector ``x`` and a scalar ``y``, rounded entry by entry as MINPACK's: XLA
    rewrites a division by a broadcast scalar as a product with its reciprocal."""
    return x / (y * jnp.where(jnp.isnan(x), 2, 1).astype(x.dtype))


def seq_sum(t: jax.Array) -> jax.Array:
    """The sum over the first axis in index order, MINPACK's ``do`` loops (rounding as theirs)."""
    t = rounded(t)  # where ``t`` is a product, XLA would fuse it into the sum (short loops unroll)
    return jax.lax.fori_loop(1, t.shape[0], lambda i, acc: acc + t[i], t[0])


def enorm(v: jax.Array) -> jax.Array:
    """The Euclidean norm over the first axis, summed in order (MINPACK's ``enorm``, mid range)."""
    return jnp.sqrt(seq_sum(v * v))


def _col_norms(a):
    return enorm(a)


def pivoted_qr(a: jax.Array) -> QR:
    """Householder QR of ``a`` (``m >= n``) with column pivoting, as MINPACK's ``qrfac``."""
    m, n = a.shape
    eps = jnp.finfo(a.dtype).eps
    rows, cols = jnp.arange(m), jnp.arange(n)
    acnorm = _col_norms(a)

    def body(j, c):
        a, rdiag, wa, perm = c
        kmax = jnp.argmax(jnp.where(cols >= j, rdiag, -1))  # the first largest
        swap = jnp.where(cols == j, kmax, jnp.where(cols == kmax, j, cols))
        a, perm = a[:, swap], perm[swap]
        rdiag = rdiag.at[kmax].set(rdiag[j])
        wa = wa.at[kmax].set(wa[j])
        below = rows >= j
        col = jnp.where(below, a[:, j], 0)
        ajnorm = enorm(col)
        ajnorm = jnp.where(a[j, j] < 0, -ajnorm, ajnorm)
        live = ajnorm != 0
        v = divide(col, jnp.where(live, ajnorm, 1))
        v = v.at[j].add(1)
        later = live & (cols > j)
        coef = divide(seq_sum(v[:, None] * a), v[j])
        a = jnp.where(later & below[:, None], a - rounded(v[:, None] * coef), a)
        # downdate the remaining column norms, recomputing them after cancellation
        t = a[j] / jnp.where(rdiag != 0, rdiag, 1)
        down = rdiag * jnp.sqrt(jnp.maximum(0, 1 - rounded(t * t)))
        redo = _P05 * (down / jnp.where(wa != 0, wa, 1)) ** 2 <= eps
        fresh = _col_norms(jnp.where((rows > j)[:, None], a, 0))
        new = jnp.where(redo, fresh, down)
        upd = later & (rdiag != 0)
        wa = jnp.where(upd & redo, fresh, wa)
        rdiag = jnp.where(upd, new, rdiag)
        a = a.at[:, j].set(jnp.where(below & live, v, a[:, j]))
        rdiag = rdiag.at[j].set(-ajnorm)
        return a, rdiag, wa, perm

    init = (a, acnorm, acnorm, cols)
    a, rdiag, _, perm = jax.lax.fori_loop(0, n, body, init)
    upper = cols[:, None] < cols[None, :]
    r = jnp.where(upper, a[:n], 0) + jnp.diag(rdiag)
    return QR(r, jnp.where(rows[:, None] >= cols[None, :], a, 0), perm, acnorm)


def apply_qt(qr: QR, b: jax.Array) -> jax.Array:
    """The first ``n`` entries of ``Q^T b`` (lmder's ``qtf``)."""
    n = qr.r.shape[0]

    def body(j, w):
        v = qr.house[:, j]
        vjj = v[j]
        t = -seq_sum(v * w) / jnp.where(vjj != 0, vjj, 1)
        return jnp.where(vjj != 0, w + rounded(v * t), w)

    return jax.lax.fori_loop(0, n, body, b)[:n]


def _leading_nonzero(d: jax.Array) -> jax.Array:
    """``1`` on the entries before the first zero of ``d``, ``0`` from it on (MINPACK's nsing)."""
    return jnp.cumprod(d != 0).astype(bool)


def _upper_solve(r: jax.Array, b: jax.Array) -> jax.Array:
    """``R w = b`` by columns from the last, where ``diag(R)`` is nonzero up to the first zero;
    ``w`` is zero from the first zero on (lmpar's rank-deficient Gauss-Newton step)."""
    n = r.shape[0]
    keep = _leading_nonzero(jnp.diag(r))
    w0 = jnp.where(keep, b, 0)

    def body(k, w):
        j = n - 1 - k
        wj = jnp.where(keep[j], w[j] / jnp.where(keep[j], r[j, j], 1), 0)
        w = w.at[j].set(wj)
        return w - jnp.where(jnp.arange(n) < j, rounded(r[:, j] * wj), 0)

    return jax.lax.fori_loop(0, n, body, w0)


def _lower_solve(s: jax.Array, sdiag: jax.Array, b: jax.Array) -> jax.Array:
    """``L w = b`` for ``L`` = the strict lower part of ``s`` plus ``diag(sdiag)``, by columns."""
    n = s.shape[0]

    def body(j, w):
        wj = w[j] / sdiag[j]
        w = w.at[j].set(wj)
        return w - jnp.where(jnp.arange(n) > j, rounded(s[:, j] * wj), 0)

    return jax.lax.fori_loop(0, n, body, b)


def _givens(a, b):
    """MINPACK's rotation ``(cos, sin)`` taking ``(a, b)`` to ``(rho, 0)``; ``b != 0``."""
    small = jnp.abs(a) < jnp.abs(b)
    cotan = a / jnp.where(small, b, 1)
    sin1 = 0.5 / jnp.sqrt(0.25 + rounded(0.25 * cotan**2))
    tan = b / jnp.where(small, 1, a)
    cos2 = 0.5 / jnp.sqrt(0.25 + rounded(0.25 * tan**2))
    return jnp.where(small, sin1 * cotan, cos2), jnp.where(small, sin1, cos2 * tan)


class Solved(NamedTuple):
    """:func:`qrsolv`'s answer: ``x``, and ``S^T`` (``P^T (J^T J + D^2) P = S^T S``).

    Attributes:
        x: the minimiser of ``|J x - b|^2 + |D x|^2``.
        s: ``S^T`` below the diagonal (lower triangular, diagonal unused).
        sdiag: ``S``'s diagonal.
    """

    x: jax.Array
    s: jax.Array
    sdiag: jax.Array


def qrsolv(qr: QR, diag: jax.Array, qtb: jax.Array) -> Solved:
    """The ``x`` minimising ``|J x - b|^2 + |D x|^2`` (``D = diag(diag)``), MINPACK's way."""
    n = qr.r.shape[0]
    idx = jnp.arange(n)

    def column(j, c):
        s, wa, sd = c
        sd = jnp.where(idx == j, diag[qr.perm[j]], jnp.where(idx > j, 0, sd))

        def rotate(k, c):
            s, wa, sd, qtbpj = c
            cos, sin = _givens(s[k, k], sd[k])
            act = sd[k] != 0
            below = act & (idx > k)
            skk = rounded(cos * s[k, k]) + rounded(sin * sd[k])
            wk = rounded(cos * wa[k]) + rounded(sin * qtbpj)
            qtbpj = jnp.where(act, rounded(-sin * wa[k]) + rounded(cos * qtbpj), qtbpj)
            sk = jnp.where(below, rounded(cos * s[:, k]) + rounded(sin * sd), s[:, k])
            sd = jnp.where(below, rounded(-sin * s[:, k]) + rounded(cos * sd), sd)
            s = s.at[:, k].set(sk).at[k, k].set(jnp.where(act, skk, s[k, k]))
            return s, wa.at[k].set(jnp.where(act, wk, wa[k])), sd, qtbpj

        zero = jnp.zeros([], wa.dtype)
        s, wa, sd = jax.lax.cond(
            diag[qr.perm[j]] != 0,
            lambda c: jax.lax.fori_loop(j, n, rotate, (*c, zero))[:3],
            lambda c: c,
            (s, wa, sd),
        )
        return s, wa, sd.at[j].set(s[j, j])

    init = (qr.r.T, qtb, jnp.zeros_like(qtb))
    s, wa, sdiag = jax.lax.fori_loop(0, n, column, init)
    keep = _leading_nonzero(sdiag)
    wa = jnp.where(keep, wa, 0)
    lower = jnp.where(idx[:, None] > idx[None, :], s, 0)

    def back(k, w):  # w_j = (w_j - sum_{i > j} S^T_ij w_i) / sdiag_j, j from the last
        j = n - 1 - k
        wj = (w[j] - seq_sum(lower[:, j] * w)) / jnp.where(keep[j], sdiag[j], 1)
        return w.at[j].set(jnp.where(keep[j], wj, 0))

    wa = jax.lax.fori_loop(0, n, back, wa)
    return Solved(jnp.zeros_like(wa).at[qr.perm].set(wa), s, sdiag)


class _Lmpar(NamedTuple):
    i: jax.Array
    par: jax.Array
    parl: jax.Array
    paru: jax.Array
    fp: jax.Array
    x: jax.Array
    done: jax.Array


def _newton_correction(diag, perm, x, dxnorm, solve_lower, fp, delta):
    """``parc``: the Newton step of ``phi(par) = |D x(par)| - delta`` (Moré's eq. 5.5)."""
    wa = diag[perm] * divide((diag * x)[perm], dxnorm)
    wa = solve_lower(wa)
    temp = enorm(wa)
    return ((fp / delta) / temp) / temp


def lm_parameter(qr: QR, diag: jax.Array, qtb: jax.Array, delta, par0):
    """``(par, x)``: the damping and ``x`` with ``p = -x`` the step, MINPACK's ``lmpar``.

    ``par = 0`` and ``x`` the Gauss-Newton step (columns past ``R``'s first zero
    diagonal entry dropped) when ``|D x| <= 1.1 delta``; otherwise Moré's
    safeguarded Newton iteration on ``|D x(par)| - delta`` from ``par0``, kept
    inside ``[parl, paru]``, until within ``0.1 delta`` (at most 10 iterations).
    """
    r, perm, dtype = qr.r, qr.perm, qtb.dtype
    dwarf = jnp.finfo(dtype).tiny
    x_gn = jnp.zeros_like(qtb).at[perm].set(_upper_solve(r, qtb))
    dxnorm = enorm(diag * x_gn)
    fp = dxnorm - delta
    full_rank = jnp.all(jnp.diag(r) != 0)

    def upper_t_solve(b):  # R^T w = b, by rows (lmpar's parl)
        def body(j, w):
            return w.at[j].set((w[j] - seq_sum(jnp.where(idx < j, r[:, j], 0) * w)) / r[j, j])

        idx = jnp.arange(b.size)
        return jax.lax.fori_loop(0, b.size, body, b)

    safe = jnp.where(dxnorm > 0, dxnorm, 1)
    parl = _newton_correction(diag, perm, x_gn, safe, upper_t_solve, fp, delta)
    parl = jnp.where(full_rank, parl, 0)  # MINPACK's lower bound needs R nonsingular
    gnorm = enorm(seq_sum(r * qtb[:, None]) / diag[perm])
    paru = gnorm / delta
    paru = jnp.where(paru == 0, dwarf / jnp.minimum(delta, 0.1), paru)
    par = jnp.minimum(jnp.maximum(par0, parl), paru)
    par = jnp.where(par == 0, gnorm / safe, par)

    def body(s: _Lmpar) -> _Lmpar:
        par = jnp.where(s.par == 0, jnp.maximum(dwarf, 0.001 * s.paru), s.par)
        sol = qrsolv(qr, jnp.sqrt(par) * diag, qtb)
        dxnorm = enorm(diag * sol.x)
        fp = dxnorm - delta
        done = (
            (jnp.abs(fp) <= 0.1 * delta)
            | ((s.parl == 0) & (fp <= s.fp) & (s.fp < 0))
            | (s.i + 1 >= 10)
        )

        def lower(b):
            return _lower_solve(sol.s, sol.sdiag, b)

        parc = _newton_correction(diag, perm, sol.x, dxnorm, lower, fp, delta)
        parl = jnp.where(fp > 0, jnp.maximum(s.parl, par), s.parl)
        paru = jnp.where(fp < 0, jnp.minimum(s.paru, par), s.paru)
        new_par = jnp.where(done, par, jnp.maximum(parl, par + parc))
        return _Lmpar(s.i + 1, new_par, parl, paru, fp, sol.x, done)

    gauss_newton = fp <= 0.1 * delta
    init = _Lmpar(jnp.zeros([], jnp.int32), par, parl, paru, fp, x_gn, gauss_newton)
    out = jax.lax.while_loop(lambda s: ~s.done, body, init)
    return jnp.where(gauss_newton, 0, out.par).astype(dtype), out.x
