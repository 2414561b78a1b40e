"""Second-order directions: Newton, Newton-CG, BFGS and L-BFGS.

Each method is two layers: pure functions on flat vectors (what
:func:`gradxform.minimize` runs), and a ``scale_by_*`` transform that keeps the
curvature model in its state and returns ``H^-1 g`` shaped like the params (a
direction to *descend* along: chain it with ``scale_by_learning_rate`` and a
line search, as :func:`gradxform.lbfgs` does).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from gradxform.base import GradientTransformationExtraArgs

__all__ = [
    "LbfgsMemory",
    "ScaleByBfgsState",
    "ScaleByLbfgsState",
    "ScaleByNewtonState",
    "bfgs_inverse_update",
    "dense_hessian",
    "lbfgs_init",
    "lbfgs_two_loop",
    "lbfgs_update",
    "newton_cg_direction",
    "newton_direction",
    "scale_by_bfgs",
    "scale_by_lbfgs",
    "scale_by_newton",
    "scale_by_newton_cg",
]


# --- L-BFGS -----------------------------------------------------------------------------


class LbfgsMemory(NamedTuple):
    """The last ``m`` pairs ``s = x_{k+1} - x_k``, ``y = g_{k+1} - g_k`` (a ring buffer).

    Attributes:
        s, y: ``(m, n)`` arrays; row ``count % m`` is written next.
        rho: ``1 / (y.s)`` per pair.
        count: number of pairs stored so far (rows beyond it are unused).
    """

    s: jax.Array
    y: jax.Array
    rho: jax.Array
    count: jax.Array


def lbfgs_init(n: int, memory_size: int, dtype) -> LbfgsMemory:
    zeros = jnp.zeros((memory_size, n), dtype)
    return LbfgsMemory(zeros, zeros, jnp.zeros(memory_size, dtype), jnp.zeros([], jnp.int32))


def lbfgs_update(memory: LbfgsMemory, s: jax.Array, y: jax.Array) -> LbfgsMemory:
    """Stores ``(s, y)`` unless ``y.s <= 1e-10 |s| |y|`` (the curvature condition fails)."""
    m = memory.s.shape[0]
    sy = jnp.vdot(s, y)
    ok = jnp.isfinite(sy) & (sy > 1e-10 * jnp.linalg.norm(s) * jnp.linalg.norm(y))
    row = memory.count % m
    new = LbfgsMemory(
        memory.s.at[row].set(s),
        memory.y.at[row].set(y),
        memory.rho.at[row].set(1 / jnp.where(ok, sy, 1)),
        memory.count + 1,
    )
    return jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, memory)


def lbfgs_two_loop(memory: LbfgsMemory, g: jax.Array, scale_initial: bool = True) -> jax.Array:
    """``H g`` for the L-BFGS inverse-Hessian approximation (N&W Alg. 7.4).

    ``H_0 = gamma I`` with ``gamma = s.y / y.y`` of the newest pair (N&W eq.
    7.20) when ``scale_initial``, else ``I``.
    """
    m = memory.s.shape[0]
    stored = jnp.minimum(memory.count, m)
    newest = (memory.count - 1) % m

    def first(i, carry):
        q, alphas = carry
        row = (newest - i) % m
        valid = i < stored
        alpha = jnp.where(valid, memory.rho[row] * jnp.vdot(memory.s[row], q), 0)
        return q - alpha * memory.y[row], alphas.at[row].set(alpha)

    q, alphas = jax.lax.fori_loop(0, m, first, (g, jnp.zeros(m, g.dtype)))
    y_new, s_new = memory.y[newest], memory.s[newest]
    gamma = jnp.vdot(s_new, y_new) / jnp.vdot(y_new, y_new)
    gamma = jnp.where((stored > 0) & scale_initial & jnp.isfinite(gamma), gamma, 1)
    r = gamma * q

    def second(i, r):
        row = (newest - (m - 1 - i)) % m
        valid = (m - 1 - i) < stored
        beta = memory.rho[row] * jnp.vdot(memory.y[row], r)
        return jnp.where(valid, r + memory.s[row] * (alphas[row] - beta), r)

    return jax.lax.fori_loop(0, m, second, r)


# --- BFGS -------------------------------------------------------------------------------


def bfgs_inverse_update(H: jax.Array, s: jax.Array, y: jax.Array, first: jax.Array) -> jax.Array:
    """BFGS update of the inverse Hessian in O(n^2) (N&W eq. 6.17), no matrix products.

    ``H+ = (I - rho s y^T) H (I - rho y s^T) + rho s s^T`` expanded as
    ``H - rho (s (H y)^T + (H y) s^T) + (rho^2 y^T H y + rho) s s^T``. At the
    first update ``H`` is first set to ``(s.y / y.y) I`` (N&W eq. 6.20). The
    update is skipped when ``s.y`` is not safely positive.
    """
    sy = jnp.vdot(s, y)
    ok = jnp.isfinite(sy) & (sy > 1e-10 * jnp.linalg.norm(s) * jnp.linalg.norm(y))
    scale = sy / jnp.vdot(y, y)
    H = jnp.where(first & ok, scale * jnp.eye(H.shape[0], dtype=H.dtype), H)
    rho = 1 / jnp.where(ok, sy, 1)
    Hy = H @ y
    updated = (
        H
        - rho * (jnp.outer(s, Hy) + jnp.outer(Hy, s))
        + (rho * rho * jnp.vdot(y, Hy) + rho) * jnp.outer(s, s)
    )
    return jnp.where(ok, updated, H)


# --- Newton -----------------------------------------------------------------------------


def dense_hessian(f, x: jax.Array) -> jax.Array:
    """The Hessian of ``f`` at the flat vector ``x``, row ``i`` = ``H e_i``.

    Forward-over-reverse like ``jax.hessian``, which stacks the products as
    columns; stacking them as rows gives the same symmetric matrix without the
    transpose XLA otherwise materialises (~15 us per 100x100 on CPU) before the
    column-major LAPACK factorisation.
    """
    basis = jnp.eye(x.size, dtype=x.dtype)
    return jax.vmap(lambda v: jax.jvp(jax.grad(f), (x,), (v,))[1])(basis)


def newton_direction(
    hessian: jax.Array, g: jax.Array, recompute=None
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """A descent direction from the exact (symmetric) Hessian, safe at saddles and maxima.

    First a Cholesky factorisation of the lower triangle: where ``H`` is
    positive definite with every squared pivot above
    ``sqrt(eps) max(1, max_i H_ii)`` (for a positive definite ``H``,
    ``max_i H_ii = max_ij |H_ij|``) this is the Newton step ``-H^-1 g``.
    Otherwise, with ``H = V diag(lam) V^T``:
    ``d = -V diag(1 / max(|lam|, delta)) V^T g`` (the absolute-value
    modification, so negative-curvature components move downhill), plus, when
    ``lam_min < -delta``, the unit eigenvector of ``lam_min`` signed to
    descend, so the step leaves a saddle or maximum even where the gradient
    vanishes; here ``delta = sqrt(eps) max(1, max |lam|)``.
    Returns ``(d, lam_min, negative)`` with ``negative = lam_min < -delta``
    (``lam_min`` is the smallest squared Cholesky pivot when ``H`` is positive
    definite, a stand-in that is positive exactly then).

    The eigendecomposition runs only when the factorisation fails (it costs
    ~10-25 Cholesky factorisations); the positive-definite path reads ``H``
    once. With ``recompute`` (a zero-argument function returning ``H`` again)
    the eigendecomposition branch calls it instead of keeping ``H``, so the
    factorisation can overwrite ``H`` in place (no copy on the common path).
    """
    eps = jnp.finfo(g.dtype).eps
    chol = jax.lax.linalg.cholesky(hessian, symmetrize_input=False)
    pivots = jnp.diagonal(chol)  # NaN throughout where the factorisation failed
    diagonal_scale = jnp.maximum(1, jnp.max(jnp.abs(jnp.diagonal(hessian))))
    positive = jnp.all(pivots**2 > jnp.sqrt(eps) * diagonal_scale)  # False for NaN

    # solved on both paths (NaN where the factorisation failed), so the factor never
    # crosses into the conditional, which would copy it into another layout
    newton = -jax.scipy.linalg.cho_solve((chol, True), g)
    smallest_pivot = jnp.min(pivots**2)

    def newton_step(_):
        return newton, smallest_pivot, jnp.array(False)

    def modified_step(_):
        lam, V = jnp.linalg.eigh(hessian if recompute is None else recompute())
        delta = jnp.sqrt(eps) * jnp.maximum(1, jnp.max(jnp.abs(lam)))
        coeffs = V.T @ g
        d = -V @ (coeffs / jnp.maximum(jnp.abs(lam), delta))
        escape = -jnp.where(coeffs[0] > 0, 1, -1) * V[:, 0]
        negative = lam[0] < -delta
        return jnp.where(negative, d + escape, d), lam[0], negative

    return jax.lax.cond(positive, newton_step, modified_step, None)


def newton_cg_direction(hvp, g: jax.Array, max_steps: int) -> tuple[jax.Array, jax.Array]:
    """Truncated CG on ``H d = -g`` (N&W Alg. 7.1), matrix-free through ``hvp(v) = H v``.

    Stops when ``|r| <= min(0.5, sqrt|g|) |g|``, after ``max_steps``, or at
    negative curvature (returning the iterate so far, or ``-g`` at the first
    step). Returns ``(d, number of Hessian-vector products)``.
    """
    gnorm = jnp.linalg.norm(g)
    tol = jnp.minimum(0.5, jnp.sqrt(gnorm)) * gnorm

    def cond(c):
        i, _, r, _, done = c
        return (~done) & (i < max_steps) & (jnp.linalg.norm(r) > tol)

    def body(c):
        i, z, r, p, _ = c
        Hp = hvp(p)
        curvature = jnp.vdot(p, Hp)
        negative = curvature <= 0
        alpha = jnp.vdot(r, r) / jnp.where(negative, 1, curvature)
        z_new = z + alpha * p
        r_new = r + alpha * Hp
        beta = jnp.vdot(r_new, r_new) / jnp.vdot(r, r)
        p_new = -r_new + beta * p
        z_out = jnp.where(negative, jnp.where(i == 0, -g, z), z_new)
        return i + 1, z_out, jnp.where(negative, r, r_new), p_new, negative

    init = (jnp.zeros([], jnp.int32), jnp.zeros_like(g), g, -g, jnp.array(False))
    i, z, _, _, _ = jax.lax.while_loop(cond, body, init)
    z = jnp.where(i == 0, -g, z)  # already converged: steepest descent (zero at a stationary point)
    return z, i


# --- transforms -------------------------------------------------------------------------


class ScaleByLbfgsState(NamedTuple):
    """State of :func:`scale_by_lbfgs`: the memory and the previous params and gradient
    (flat; not named ``params``/``grad``, which the line search's state owns)."""

    memory: LbfgsMemory
    previous_params: jax.Array
    previous_grad: jax.Array


def scale_by_lbfgs(
    memory_size: int = 10, *, scale_initial: bool = True
) -> GradientTransformationExtraArgs:
    """``u <- H g`` with ``H`` the L-BFGS inverse Hessian of the last ``memory_size`` steps.

    The pair ``(s, y)`` is taken from consecutive calls' params and gradients,
    so the transform fits any loop that passes ``params``. See :func:`gradxform.lbfgs`.
    """
    if not isinstance(memory_size, int) or memory_size < 1:
        raise ValueError(f"memory_size must be an integer >= 1; got {memory_size!r}")

    def init_fn(params):
        flat, _ = ravel_pytree(params)
        return ScaleByLbfgsState(
            lbfgs_init(flat.size, memory_size, flat.dtype), flat, jnp.zeros_like(flat)
        )

    def update_fn(updates, state, params=None, **extra):
        del extra
        if params is None:
            raise ValueError("scale_by_lbfgs: update needs params")
        g, unravel = ravel_pytree(updates)
        x, _ = ravel_pytree(params)
        # at the first call s = 0, which lbfgs_update rejects: no pair is stored
        memory = lbfgs_update(state.memory, x - state.previous_params, g - state.previous_grad)
        direction = lbfgs_two_loop(memory, g, scale_initial)
        return unravel(direction), ScaleByLbfgsState(memory, x, g)

    return GradientTransformationExtraArgs(init_fn, update_fn)


class ScaleByBfgsState(NamedTuple):
    """State of :func:`scale_by_bfgs`: the dense inverse Hessian, previous params and gradient."""

    inverse_hessian: jax.Array
    previous_params: jax.Array
    previous_grad: jax.Array
    count: jax.Array


def scale_by_bfgs() -> GradientTransformationExtraArgs:
    """``u <- H g`` with ``H`` the BFGS inverse Hessian, updated in O(n^2) per step."""

    def init_fn(params):
        flat, _ = ravel_pytree(params)
        n = flat.size
        return ScaleByBfgsState(
            jnp.eye(n, dtype=flat.dtype), flat, jnp.zeros_like(flat), jnp.zeros([], jnp.int32)
        )

    def update_fn(updates, state, params=None, **extra):
        del extra
        if params is None:
            raise ValueError("scale_by_bfgs: update needs params")
        g, unravel = ravel_pytree(updates)
        x, _ = ravel_pytree(params)
        H = jnp.where(
            state.count > 0,  # H_0 = I, as in gx.minimize
            bfgs_inverse_update(
                state.inverse_hessian,
                x - state.previous_params,
                g - state.previous_grad,
                jnp.array(False),
            ),
            state.inverse_hessian,
        )
        return unravel(H @ g), ScaleByBfgsState(H, x, g, state.count + 1)

    return GradientTransformationExtraArgs(init_fn, update_fn)


class ScaleByNewtonState(NamedTuple):
    """State of :func:`scale_by_newton` / :func:`scale_by_newton_cg`: the smallest
    Hessian eigenvalue seen at the latest step (Newton) or the HVPs used (Newton-CG)."""

    curvature_info: jax.Array


def _needs_value_fn(name, value_fn, params):
    if value_fn is None or params is None:
        raise ValueError(
            f"{name}: update needs params and the extra argument value_fn (the objective)"
        )


def scale_by_newton() -> GradientTransformationExtraArgs:
    """``u <- -d`` with ``d`` the modified Newton direction of :func:`newton_direction`.

    The exact Hessian comes from :func:`dense_hessian` (forward-over-reverse,
    as ``jax.hessian``) of the extra argument ``value_fn`` on the flattened
    params. The output is a direction to descend along (``H^-1 g`` where ``H``
    is positive definite).
    """

    def init_fn(params):
        flat, _ = ravel_pytree(params)
        return ScaleByNewtonState(jnp.zeros([], flat.dtype))

    def update_fn(updates, state, params=None, *, value_fn=None, **extra):
        del extra
        _needs_value_fn("scale_by_newton", value_fn, params)
        g, unravel = ravel_pytree(updates)
        x, unravel_x = ravel_pytree(params)
        flat_fn = lambda v: value_fn(unravel_x(v))  # noqa: E731
        H = dense_hessian(flat_fn, x)
        d, lam_min, _ = newton_direction(H, g, recompute=lambda: dense_hessian(flat_fn, x))
        return unravel(-d), ScaleByNewtonState(lam_min)

    return GradientTransformationExtraArgs(init_fn, update_fn)


def scale_by_newton_cg(max_cg_steps: int = 50) -> GradientTransformationExtraArgs:
    """``u <- -d`` with ``d`` from truncated CG on the Hessian of ``value_fn`` (HVPs only)."""
    if not isinstance(max_cg_steps, int) or max_cg_steps < 1:
        raise ValueError(f"max_cg_steps must be an integer >= 1; got {max_cg_steps!r}")

    def init_fn(params):
        return ScaleByNewtonState(jnp.zeros([], jnp.int32))

    def update_fn(updates, state, params=None, *, value_fn=None, **extra):
        del extra
        _needs_value_fn("scale_by_newton_cg", value_fn, params)
        g, unravel = ravel_pytree(updates)
        x, unravel_x = ravel_pytree(params)
        grad_flat = jax.grad(lambda v: value_fn(unravel_x(v)))

        def hvp(v):
            return jax.jvp(grad_flat, (x,), (v,))[1]

        d, used = newton_cg_direction(hvp, g, max_cg_steps)
        return unravel(-d), ScaleByNewtonState(used)

    return GradientTransformationExtraArgs(init_fn, update_fn)
