"""Dense references and naive loops: the slow, obviously-correct paths.

Each function is the textbook formula written with NumPy in float64, with no
shared code with gradxform, so that a test comparing the two checks the library
against something independent.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def bfgs_inverse_update(H, s, y):
    """BFGS update of an inverse Hessian (N&W eq. 6.17), as the product form.

    ``H+ = V H V^T + rho s s^T`` with ``V = I - rho s y^T`` and ``rho = 1 / <y, s>``.
    """
    n = len(s)
    rho = 1 / (y @ s)
    V = np.eye(n) - rho * np.outer(s, y)
    return V @ H @ V.T + rho * np.outer(s, s)


def dense_lbfgs_inverse(pairs, gamma, n):
    """The matrix L-BFGS applies (N&W eq. 7.19): the BFGS recursion from ``gamma I``.

    ``pairs`` is a list of ``(s, y)``, oldest first; each is applied in turn with
    bfgs_inverse_update.
    """
    H = gamma * np.eye(n)
    for s, y in pairs:
        H = bfgs_inverse_update(H, s, y)
    return H


def naive_lbfgs_two_loop(pairs, gamma, g):
    """``H g`` by the two-loop recursion (N&W Algorithm 7.4), one pair at a time.

    ``pairs`` is a list of ``(s, y)``, oldest first; ``gamma`` scales the initial
    matrix ``H0 = gamma I``.
    """
    q = np.array(g, dtype=np.float64)
    alphas = []
    for s, y in reversed(pairs):
        alpha = (s @ q) / (y @ s)
        q = q - alpha * y
        alphas.append(alpha)
    r = gamma * q
    for (s, y), alpha in zip(pairs, reversed(alphas)):
        beta = (y @ r) / (y @ s)
        r = r + (alpha - beta) * s
    return r


def rosenbrock(x):
    """The extended Rosenbrock function on a flat vector of even length."""
    return jnp.sum(100 * (x[1::2] - x[::2] ** 2) ** 2 + (1 - x[::2]) ** 2)


# --- Moré, Garbow & Hillstrom (1981) test problems -------------------------------------


def brown_badly_scaled(x):
    """Moré, Garbow & Hillstrom (1981) #4: minimum f = 0 at (1e6, 2e-6), Hessian condition ~1e12."""
    return (x[0] - 1e6) ** 2 + (x[1] - 2e-6) ** 2 + (x[0] * x[1] - 2) ** 2


def chebyquad(x):
    """Moré, Garbow & Hillstrom #35 (Fletcher's Chebyquad): indefinite Hessians on the way."""
    y = 2 * x - 1
    previous, current, residuals = jnp.ones_like(y), y, []
    for i in range(1, x.shape[0] + 1):
        integral = 0.0 if i % 2 else -1.0 / (i * i - 1)
        residuals.append(jnp.mean(current) - integral)
        previous, current = current, 2 * y * current - previous
    return jnp.sum(jnp.stack(residuals) ** 2)


def boundary_value(x):
    """Moré, Garbow & Hillstrom #28 (discrete boundary value): f = 0 at the solution, an
    ill-conditioned (~1e7 at n = 100) Hessian that truncated CG must work through."""
    h = 1.0 / (x.shape[0] + 1)
    t = jnp.arange(1, x.shape[0] + 1) * h
    padded = jnp.pad(x, 1)
    residuals = 2 * x - padded[:-2] - padded[2:] + h**2 * (x + t + 1) ** 3 / 2
    return jnp.sum(residuals**2)


def boundary_value_start(n):
    """Its standard start, ``x_i = t_i (t_i - 1)`` with ``t_i = i / (n + 1)``."""
    t = np.arange(1, n + 1) / (n + 1)
    return t * (t - 1)
