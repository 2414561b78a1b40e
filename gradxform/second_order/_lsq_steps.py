"""The linear models and steps of :func:`gradxform.least_squares`, on flat vectors.

With ``r`` the residual vector at ``x``, ``J`` its Jacobian and ``D`` the
diagonal scaling, the Gauss-Newton model of ``|r(x + p)|^2`` is
``|r + J p|^2``. Two representations of ``J`` are used:

* :class:`DenseModel`: ``J`` as an ``(m, n)`` matrix (``jax.jacfwd`` when
  ``n <= m``, else ``jax.jacrev``) and the SVD of ``J D^-1``, from which the
  Levenberg-Marquardt step of any damping ``par``,
  ``(J^T J + par D^2) p = -J^T r``, costs ``O(n k)`` with ``k = min(m, n)``.
  :func:`lm_parameter` finds the ``par`` whose step has ``|D p|`` within 10%
  of the trust radius, by the safeguarded Newton iteration of Moré (1978),
  the algorithm of MINPACK's ``lmpar``, on the SVD instead of a pivoted QR.
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

from gradxform import _linalg
from gradxform.second_order import directions


class DenseModel(NamedTuple):
    """The Jacobian at ``x`` and the SVD of ``J D^-1 = U diag(s) V^T``.

    Attributes:
        jac: ``J``, shape ``(m, n)``.
        s: the singular values of ``J D^-1``, shape ``(k,)``.
        vt: ``V^T``, shape ``(k, n)``.
        u: ``U``, shape ``(m, k)``.
        c: ``U^T r``, shape ``(k,)``.
        kept: the singular values above the rank threshold ``s_max max(m, n) eps``.
        full_rank: whether ``J`` has rank ``n``.
    """

    jac: jax.Array
    s: jax.Array
    vt: jax.Array
    u: jax.Array
    c: jax.Array
    kept: jax.Array
    full_rank: jax.Array


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


def dense_model(jac: jax.Array, r: jax.Array, diag: jax.Array, rcond) -> DenseModel:
    """The SVD of ``J D^-1`` and ``U^T r`` (``D = diag(diag)``, positive).

    Singular values at or below ``rcond * s_max`` count as zero.
    """
    u, s, vt = _linalg.svd(jac / diag)
    kept = s > s[0] * rcond
    full_rank = jnp.all(kept) & (s.size == jac.shape[1])
    return DenseModel(jac, s, vt, u, u.T @ r, kept, full_rank)


def _scaled_step_coefficients(model: DenseModel, par: jax.Array) -> jax.Array:
    """``w`` with the scaled step ``q = D p = -V w``: ``w_i = s_i c_i / (s_i^2 + par)``."""
    den = model.s**2 + par
    live = model.kept | (par > 0)
    return jnp.where(live, model.s * model.c / jnp.where(live, den, 1), 0)


def _step_norm(model: DenseModel, par: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(|q(par)|, sum_i w_i^2 / (s_i^2 + par))``: the norm and ``-d|q|^2/dpar / 2``."""
    w = _scaled_step_coefficients(model, par)
    den = model.s**2 + par
    return jnp.sqrt(jnp.sum(w**2)), jnp.sum(jnp.where(w != 0, w**2 / jnp.where(w != 0, den, 1), 0))


class _Lmpar(NamedTuple):
    i: jax.Array
    par: jax.Array
    parl: jax.Array
    paru: jax.Array
    fp: jax.Array
    done: jax.Array


def lm_parameter(model: DenseModel, delta: jax.Array, par0: jax.Array) -> jax.Array:
    """The damping ``par >= 0`` whose step has ``|D p| - delta`` within ``0.1 delta``.

    ``0`` when the Gauss-Newton step (the least-norm one where ``J`` is
    rank-deficient) is already inside ``1.1 delta``. Otherwise Moré's
    safeguarded Newton iteration on ``1/|D p(par)| - 1/delta`` from ``par0``
    (the previous value), kept inside the bracket ``[parl, paru]``, at most
    10 iterations (MINPACK's ``lmpar``).
    """
    dtype = model.s.dtype
    tiny = jnp.finfo(dtype).tiny
    qn0, curv0 = _step_norm(model, jnp.zeros([], dtype))
    fp0 = qn0 - delta
    gnorm = jnp.sqrt(jnp.sum((model.s * model.c) ** 2))  # |(J D^-1)^T r|
    parl = jnp.where(model.full_rank, fp0 * qn0**2 / (delta * jnp.where(curv0 > 0, curv0, 1)), 0)
    paru = gnorm / delta
    paru = jnp.where(paru == 0, tiny / jnp.minimum(delta, 0.1), paru)
    par = jnp.minimum(jnp.maximum(par0, parl), paru)
    par = jnp.where(par == 0, gnorm / jnp.where(qn0 > 0, qn0, 1), par)

    def body(s: _Lmpar) -> _Lmpar:
        par = jnp.where(s.par == 0, jnp.maximum(tiny, 0.001 * s.paru), s.par)
        qn, curv = _step_norm(model, par)
        fp = qn - delta
        done = (
            (jnp.abs(fp) <= 0.1 * delta)
            | ((s.parl == 0) & (fp <= s.fp) & (s.fp < 0))
            | (s.i + 1 >= 10)
        )
        parc = fp * qn**2 / (delta * jnp.where(curv > 0, curv, 1))
        parl = jnp.where(fp > 0, jnp.maximum(s.parl, par), s.parl)
        paru = jnp.where(fp < 0, jnp.minimum(s.paru, par), s.paru)
        new_par = jnp.where(done, par, jnp.maximum(parl, par + parc))
        return _Lmpar(s.i + 1, new_par, parl, paru, fp, done)

    gauss_newton = fp0 <= 0.1 * delta
    init = _Lmpar(jnp.zeros([], jnp.int32), par, parl, paru, fp0, gauss_newton)
    out = jax.lax.while_loop(lambda s: ~s.done, body, init)
    return jnp.where(gauss_newton, 0, out.par).astype(dtype)


def dense_step(model: DenseModel, diag: jax.Array, fnorm: jax.Array, par: jax.Array) -> Step:
    """The Levenberg-Marquardt step of damping ``par`` (MINPACK's reduction formulas)."""
    w = _scaled_step_coefficients(model, par)
    q = -(model.vt.T @ w)
    pnorm = jnp.linalg.norm(q)
    jp = jnp.linalg.norm(model.s * w)  # |J p| = |diag(s) V^T q|
    t1, t2 = jp / fnorm, jnp.sqrt(par) * pnorm / fnorm
    zero = jnp.zeros([], jnp.int32)
    return Step(q / diag, pnorm, par, t1**2 + t2**2 / 0.5, -(t1**2 + t2**2), zero)


def dense_acceleration(model: DenseModel, diag: jax.Array, rvv: jax.Array, par) -> jax.Array:
    """Geodesic acceleration ``a = -(J^T J + par D^2)^-1 J^T r_vv`` (scaled: returns ``D a``)."""
    cvv = model.u.T @ rvv
    den = model.s**2 + par
    live = model.kept | (par > 0)
    return -(model.vt.T @ jnp.where(live, model.s * cvv / jnp.where(live, den, 1), 0))


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
