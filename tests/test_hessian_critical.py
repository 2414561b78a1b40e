"""classify_critical_point against closed forms: quadratics with a prescribed spectrum."""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import gradxform as gx
from gradxform.hessian import critical

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


# six negative eigenvalues, then -2e-7 (the one nearest zero, inside the spectrum), then
# thirteen positive: Lanczos' five pairs at each end never see it
STRADDLING = np.r_[-np.arange(1.0, 7.0), -2e-7, np.linspace(0.5, 10.0, 13)]
POSITIVE = np.r_[0.25, np.linspace(1.0, 10.0, 19)]


@pytest.mark.slow  # over 2 s: two Lanczos loops compile
def test_matrix_free_condition_number_is_never_a_wrong_number():
    f = quadratic(with_spectrum(STRADDLING, seed=1))
    dense = H.classify_critical_point(f, jnp.zeros(20), method="dense")
    free = H.classify_critical_point(f, jnp.zeros(20), method="lanczos")
    assert dense.verdict == free.verdict == "saddle" and dense.morse_index == 7
    np.testing.assert_allclose(dense.condition_number, 10.0 / 2e-7, rtol=1e-6)
    # the eigenvalue nearest zero is interior: Lanczos from the ends cannot know it
    assert np.isnan(free.condition_number) and "condition_number" in free.note
    # a saddle rests on the residual certificates alone
    assert free.guarantee == dense.guarantee == "deterministic"

    g = quadratic(with_spectrum(POSITIVE, seed=2))
    free = H.classify_critical_point(g, jnp.zeros(20), method="lanczos")
    assert free.verdict == "minimum" and free.guarantee == "probabilistic"
    # a lower bound (interlacing) that is tight to the residuals once converged
    assert free.condition_number <= 10.0 / 0.25 * (1 + 1e-12)
    np.testing.assert_allclose(free.condition_number, 10.0 / 0.25, rtol=1e-7)


@pytest.mark.slow  # over 2 s: a Lanczos loop compiles
def test_a_minimum_on_a_vacuous_miss_bound_says_it_has_no_guarantee():
    # an isolated bottom eigenvalue 1e-3 (relative gap 5e-4 to the width 2): both ends
    # converge in far fewer steps than the miss bound needs to say anything
    spectrum = np.r_[1e-3, np.linspace(0.5, 1.0, 198), 2.0]
    f = quadratic(with_spectrum(spectrum, seed=3))
    point = H.classify_critical_point(f, jnp.zeros(200), k=1, max_matvecs=150, dense_limit=0)
    assert point.method == "lanczos"  # n = 200 > max(dense_limit, max_matvecs)
    assert point.verdict == "minimum" and point.num_matvecs <= 150
    np.testing.assert_allclose(point.lambda_min, 1e-3, rtol=1e-6)
    assert point.miss_probability == 1.0
    assert point.guarantee == "none" and "no guarantee" in point.note
    assert "guarantee='none'" in repr(point)


def test_auto_takes_the_dense_path_when_the_budget_covers_n_products():
    f = quadratic(with_spectrum(POSITIVE, seed=2))
    # n = 20 > dense_limit, but Lanczos would be allowed 400 >= n products: dense is cheaper
    point = H.classify_critical_point(f, jnp.zeros(20), dense_limit=10)
    assert point.method == "dense" and point.num_matvecs == 0
    assert point.verdict == "minimum" and point.guarantee == "deterministic"
    np.testing.assert_allclose([point.lambda_min, point.lambda_max], [0.25, 10.0], rtol=1e-10)


def test_float32_minimum_with_rounding_level_gradient_is_critical():
    A = with_spectrum(np.linspace(1.0, 100.0, 10), seed=4)
    b = np.random.default_rng(5).normal(size=10)
    x_star = np.linalg.solve(A, b)  # the minimum of 0.5 x^T A x - b^T x, in float64
    with jax.enable_x64(False):
        A32, b32 = jnp.asarray(A, jnp.float32), jnp.asarray(b, jnp.float32)

        def f(x):
            return 0.5 * x @ A32 @ x - b32 @ x

        x32 = jnp.asarray(x_star, jnp.float32)  # x_star to working precision
        point = H.classify_critical_point(f, x32)
        strict = H.classify_critical_point(f, x32, grad_tol=1e-6)  # an explicit value is kept
        away = H.classify_critical_point(f, x32 + 1.0)
    # float32 rounding leaves a gradient above 1e-6 here (the old absolute default)
    assert point.grad_norm > 1e-6
    assert strict.verdict == "not_critical" and strict.grad_tol == 1e-6
    assert point.verdict == "minimum", point
    eps = float(np.finfo(np.float32).eps)
    want_tol = np.cbrt(eps) * 100.0 * np.linalg.norm(np.asarray(x32, np.float64))
    np.testing.assert_allclose(point.grad_tol, want_tol, rtol=1e-5)
    np.testing.assert_allclose([point.lambda_min, point.lambda_max], [1.0, 100.0], rtol=1e-5)
    # a point a unit step away is not critical: |A 1| is far above the tolerance
    assert away.verdict == "not_critical"
    assert away.grad_norm > 10 * away.grad_tol


def test_dense_path_reports_a_nan_hessian_as_not_finite():
    def f(x):  # NaN everywhere below sum(x) = 10: value, gradient and Hessian
        return jnp.sum(x**3) * jnp.where(jnp.sum(x) < 10, jnp.nan, 1.0)

    point = H.classify_critical_point(f, jnp.ones(3), method="dense")
    assert point.verdict == "not_finite" and point.guarantee == "none"
    assert np.isnan(point.lambda_min) and np.isnan(point.condition_number)


@pytest.mark.slow  # over 2 s: a Lanczos loop compiles
def test_pytree_params_on_both_paths_match_dense_eigh():
    """An MLP with four leaves (n = 44) away from a critical point: both paths work on
    the pytree; the extremes against ``jnp.linalg.eigh`` of ``jax.hessian`` on the
    flattened params, the gradient norm and the default ``grad_tol`` against NumPy on
    the flattened gradient and params."""
    rng = np.random.default_rng(0)
    shapes = {"w1": (3, 7), "b1": (7,), "w2": (7, 2), "b2": (2,)}
    params = {k: jnp.asarray(rng.normal(size=s)) for k, s in shapes.items()}
    x, y = jnp.asarray(rng.normal(size=(12, 3))), jnp.asarray(rng.normal(size=(12, 2)))

    def f(p):
        out = jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]
        return 0.5 * jnp.mean(jnp.sum((out - y) ** 2, axis=1))

    flat, unravel = ravel_pytree(params)
    lam = np.asarray(jnp.linalg.eigh(jax.hessian(lambda v: f(unravel(v)))(flat))[0])
    grad_norm = np.linalg.norm(np.asarray(jax.grad(lambda v: f(unravel(v)))(flat)))
    grad_tol = np.cbrt(np.finfo(np.float64).eps) * np.abs(lam).max() * np.linalg.norm(flat)
    free = H.classify_critical_point(f, params, method="lanczos", k=2, max_matvecs=44)
    dense = H.classify_critical_point(f, params, method="dense")
    assert (free.method, dense.method) == ("lanczos", "dense")
    for point in (free, dense):
        assert point.verdict == "not_critical"
        np.testing.assert_allclose([point.lambda_min, point.lambda_max], lam[[0, -1]], rtol=1e-9)
        np.testing.assert_allclose(point.grad_norm, grad_norm, rtol=1e-12)
        np.testing.assert_allclose(point.grad_tol, grad_tol, rtol=1e-9)
    assert max(free.residual_min, free.residual_max) < 1e-8
    assert "ravel_pytree" not in inspect.getsource(critical)  # no n-vector on the host
