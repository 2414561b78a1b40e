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
