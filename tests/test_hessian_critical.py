"""classify_critical_point against closed forms: quadratics with a prescribed spectrum."""

import jax.numpy as jnp
import numpy as np
import pytest

import gradxform as gx

H = gx.hessian

pytestmark = pytest.mark.usefixtures("x64")  # float64 unless a test says otherwise


def with_spectrum(eigenvalues, seed):
    """A symmetric matrix ``Q diag(eigenvalues) Q^T`` with a random orthogonal ``Q``."""
    n = len(eigenvalues)
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(n, n)))
    return (q * np.asarray(eigenvalues, np.float64)) @ q.T


def quadratic(A):
    A = jnp.asarray(0.5 * (A + A.T))
    return lambda x: 0.5 * x @ A @ x


POSITIVE = np.r_[0.25, np.linspace(1.0, 10.0, 19)]


def test_auto_takes_the_dense_path_when_the_budget_covers_n_products():
    f = quadratic(with_spectrum(POSITIVE, seed=2))
    # n = 20 > dense_limit, but Lanczos would be allowed 400 >= n products: dense is cheaper
    point = H.classify_critical_point(f, jnp.zeros(20), dense_limit=10)
    assert point.method == "dense" and point.num_matvecs == 0
    assert point.verdict == "minimum"
    np.testing.assert_allclose([point.lambda_min, point.lambda_max], [0.25, 10.0], rtol=1e-10)
