"""The linear models and steps of :func:`gradxform.least_squares`, on flat vectors.

With ``r`` the residual vector at ``x``, ``J`` its Jacobian and ``D`` the
diagonal scaling, the Gauss-Newton model of ``|r(x + p)|^2`` is
``|r + J p|^2``. Two representations of ``J`` are used:

* :class:`DenseModel`: ``J`` as an ``(m, n)`` matrix (``jax.jacfwd`` when
  ``n <= m``, else ``jax.jacrev``), its pivoted QR and ``Q^T r``; the
  Levenberg-Marquardt damping and step come from MINPACK's ``lmpar`` and
  ``qrsolv`` (:mod:`gradxform.second_order._lsq_qr`), Gauss-Newton's
  least-norm step from ``lstsq``.
* :class:`MatvecModel`: ``v -> J v`` and ``u -> J^T u`` from one
  ``jax.linearize``; steps come from conjugate gradients on ``J^T J``
  (Steihaug-Toint truncated CG inside the trust region for
  Levenberg-Marquardt, :func:`gradxform.second_order.directions.newton_cg_direction`
  for Gauss-Newton), and no ``m x n`` matrix is formed.

Every step is a :class:`Step`: the step ``p``, its scaled norm ``|D p|``, the
damping used, and MINPACK's normalised predicted reduction and directional
derivative, so the driver's trust-region update reads as MINPACK's ``lmder``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from gradxform.second_order import _lsq_qr, directions


class DenseModel(NamedTuple):
    """The Jacobian at ``x``, its pivoted QR and ``Q^T r``.

    Attributes:
        jac: ``J``, shape ``(m, n)``.
        qr: ``J P = Q R`` (``J`` padded with zero rows to ``n`` where ``m < n``).
        qtf: the first ``n`` entries of ``Q^T r``.
    """

    jac: jax.Array
    qr: _lsq_qr.QR
    qtf: jax.Array


class MatvecModel(NamedTuple):
    """``v -> J v`` and ``u -> J^T u`` at ``x`` (one linearisation).

    Attributes:
        jvp: ``v -> J v``.
        vjp: ``u -> J^T u``.
    """

    jvp: Callable[[jax.Array], jax.Array]
    vjp: Callable[[jax.Array], jax.Array]


class Step(NamedTuple):
    """A trial step and what the trust-region update needs of it.

    Attributes:
        p: the step in ``x``'s coordinates.
        pnorm: ``|D p|``.
        par: the damping (``0`` for an interior, undamped step).
        prered: predicted reduction ``(|r|^2 - |r + J p|^2) / |r|^2``.
        dirder: ``<J^T r, p> / |r|^2``.
        products: Gauss-Newton products ``J^T J v`` taken (matrix-free path).
    """

    p: jax.Array
    pnorm: jax.Array
    par: jax.Array
    prered: jax.Array
    dirder: jax.Array
    products: jax.Array


def dense_jacobian(residual: Callable[[jax.Array], jax.Array], x: jax.Array, m: int) -> jax.Array:
    """``J`` at ``x`` by forward mode when ``n <= m`` (``n`` passes), else reverse mode."""
    if x.size <= m:
        return jax.jacfwd(residual)(x)
    return jax.jacrev(residual)(x)


def dense_model(jac: jax.Array, r: jax.Array) -> DenseModel:
    """MINPACK's factorisation of ``J`` (:func:`~gradxform.second_order._lsq_qr.pivoted_qr`)."""
    m, n = jac.shape
    if m < n:  # zero rows change no step
        jac, r = jnp.pad(jac, ((0, n - m), (0, 0))), jnp.pad(r, (0, n - m))
    qr = _lsq_qr.pivoted_qr(jac)
    return DenseModel(jac, qr, _lsq_qr.apply_qt(qr, r))


def gradient_cosine(model: DenseModel, fnorm: jax.Array) -> jax.Array:
    """MINPACK's ``gnorm``: the largest ``|cos|`` between ``r`` and a column of ``J``.

    From ``R`` and ``Q^T r`` as ``lmder`` (``(R^T Q^T r)_j = (J^T r)_perm[j]``);
    zero columns and ``r = 0`` give ``0``.
    """
    qr = model.qr
    g = _lsq_qr.seq_sum(qr.r * _lsq_qr.divide(model.qtf, jnp.where(fnorm > 0, fnorm, 1))[:, None])
    norms = qr.acnorm[qr.perm]
    live = norms > 0
    cos = jnp.abs(g / jnp.where(live, norms, 1))
    return jnp.where(fnorm > 0, jnp.max(jnp.where(live, cos, 0)), 0)


def lm_parameter(model: DenseModel, diag: jax.Array, delta, par0):
    """``(par, p)``: MINPACK's damping and step (``_lsq_qr.lm_parameter``, ``p = -x``)."""
    par, x = _lsq_qr.lm_parameter(model.qr, diag, model.qtf, delta, par0)
    return par, -x


def dense_step(model: DenseModel, diag, fnorm, par, p) -> Step:
    """The step ``p`` of damping ``par``, MINPACK's reduction formulas (``|J p| = |R P^T p|``)."""
    pnorm = _lsq_qr.enorm(diag * p)
    jp = _lsq_qr.enorm(_lsq_qr.seq_sum((model.qr.r * p[model.qr.perm]).T))
    t1, t2 = jp / fnorm, jnp.sqrt(par) * pnorm / fnorm
    t1, t2 = _lsq_qr.rounded(t1**2), _lsq_qr.rounded(t2**2)
    zero = jnp.zeros([], jnp.int32)
    return Step(p, pnorm, par, t1 + t2 / 0.5, -(t1 + t2), zero)


def dense_acceleration(model: DenseModel, diag: jax.Array, rvv: jax.Array, par) -> jax.Array:
    """Geodesic acceleration ``a = -(J^T J + par D^2)^-1 J^T r_vv`` (by ``qrsolv``)."""
    n = diag.size
    rvv = jnp.pad(rvv, (0, max(n - rvv.size, 0)))
    qtb = _lsq_qr.apply_qt(model.qr, rvv)
    return -_lsq_qr.qrsolv(model.qr, jnp.sqrt(par) * diag, qtb).x


def dense_gauss_newton(model: DenseModel, r: jax.Array) -> jax.Array:
    """The least-norm Gauss-Newton step ``argmin |r + J p|`` (``lstsq``'s rank cut-off)."""
    return jnp.linalg.lstsq(model.jac, -r)[0]


def model_reduction(jp: jax.Array, r: jax.Array, g: jax.Array, p: jax.Array, fnorm) -> tuple:
    """``(prered, dirder)`` of any step ``p`` from ``J p``: ``-(2 r.Jp + |Jp|^2)/|r|^2``."""
    f2 = fnorm**2
    return -(2 * jnp.vdot(r, jp) + jnp.vdot(jp, jp)) / f2, jnp.vdot(g, p) / f2


class _Steihaug(NamedTuple):
    i: jax.Array
    z: jax.Array
    res: jax.Array
    d: jax.Array
    reduction: jax.Array  # -(model at z), model = <g, p> + |J p|^2 / 2
    boundary: jax.Array
    done: jax.Array


def _to_boundary(z, d, delta):
    """``tau >= 0`` with ``|z + tau d| = delta`` (``|z| <= delta``)."""
    dd, zd, zz = jnp.vdot(d, d), jnp.vdot(z, d), jnp.vdot(z, z)
    dd = jnp.where(dd > 0, dd, 1)
    return (-zd + jnp.sqrt(jnp.maximum(zd**2 + dd * (delta**2 - zz), 0))) / dd


def steihaug_step(model: MatvecModel, g: jax.Array, fnorm, delta, max_steps: int) -> Step:
    """Steihaug-Toint truncated CG on ``min <g, p> + |J p|^2 / 2`` subject to ``|p| <= delta``.

    Stops inside at the forcing tolerance ``|res| <= min(0.01, sqrt(|g| / |r|)) |g|``,
    at the boundary when a CG step or a direction of zero curvature leaves it,
    or after ``max_steps`` products. ``par`` is returned as ``0`` for an
    interior step and ``1`` on the boundary (the trust-region update only
    asks whether the step was damped).
    """
    gnorm = jnp.linalg.norm(g)
    tol = jnp.minimum(0.01, jnp.sqrt(gnorm / fnorm)) * gnorm

    def body(s: _Steihaug) -> _Steihaug:
        jd = model.jvp(s.d)
        bd = model.vjp(jd)
        curv = jnp.vdot(jd, jd)
        rr = jnp.vdot(s.res, s.res)
        alpha = rr / jnp.where(curv > 0, curv, 1)
        z_in = s.z + alpha * s.d
        leaves = (curv <= 0) | (jnp.linalg.norm(z_in) >= delta)
        tau = jnp.where(leaves, _to_boundary(s.z, s.d, delta), alpha)
        z = s.z + tau * s.d
        # model(z + tau d) - model(z) = -tau <res, d> + tau^2 curv / 2
        reduction = s.reduction + tau * jnp.vdot(s.res, s.d) - 0.5 * tau**2 * curv
        res = s.res - tau * bd
        beta = jnp.vdot(res, res) / jnp.where(rr > 0, rr, 1)
        done = leaves | (jnp.linalg.norm(res) <= tol)
        return _Steihaug(s.i + 1, z, res, res + beta * s.d, reduction, leaves, done)

    zero = jnp.zeros([], g.dtype)
    init = _Steihaug(
        jnp.zeros([], jnp.int32), jnp.zeros_like(g), -g, -g, zero, jnp.array(False), gnorm <= 0
    )
    out = jax.lax.while_loop(lambda s: (~s.done) & (s.i < max_steps), body, init)
    f2 = fnorm**2
    par = jnp.where(out.boundary, 1, 0).astype(g.dtype)
    return Step(
        out.z,
        jnp.linalg.norm(out.z),
        par,
        2 * out.reduction / f2,
        jnp.vdot(g, out.z) / f2,
        out.i,
    )


def matvec_gauss_newton(model: MatvecModel, g: jax.Array, max_steps: int):
    """Truncated CG on ``J^T J p = -g``: ``(p, products)`` (Newton-CG's solver)."""
    return directions.newton_cg_direction(lambda v: model.vjp(model.jvp(v)), g, max_steps)
