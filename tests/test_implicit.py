"""Differentiating through ``gx.minimize`` (implicit function theorem, issue #20).

Each derivative of a solution is checked against something computed without
it: closed forms (ridge regression, its minimum-norm limit, a shifted
Rosenbrock function), fourth-order central differences of solutions in
float64, and an unrolled differentiable Newton solve written in this file
(``jax.jacrev`` through a fixed number of steps). Every compiled program is
built once and reused across rows (``vmap``, or ``jit`` called twice): each
differentiated solver is a compilation of seconds.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import gradxform as gx
from gradxform.second_order import implicit

pytestmark = pytest.mark.usefixtures("x64")

H = 1e-3  # fourth-order differences: error ~ h^4 x^(5) + eps |x| / h, both <~1e-12 here


def ridge(w, lam, a, y):
    return 0.5 * jnp.sum((a @ w - y) ** 2) + 0.5 * lam * jnp.sum(w**2)


def logistic(params, theta, labels):
    """L2-regularised logistic regression; weights and intercept a pytree, data in ``theta``."""
    w, b = params["w"], params["b"]
    margins = labels * (theta["x"] @ w + b)
    penalty = 0.5 * theta["lam"] * (jnp.sum(w**2) + b**2)
    return jnp.mean(jnp.logaddexp(0.0, -margins)) + penalty


@pytest.fixture(scope="module")
def data():
    """NumPy float64 arrays (a module fixture is made before the x64 fixture switches x64 on)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 4))
    return {
        "a": rng.normal(size=(3, 5)),  # 3 equations, 5 unknowns: singular without the ridge
        "y": rng.normal(size=3),
        "x": x,
        "labels": np.sign(x @ rng.normal(size=4) + 0.5 * rng.normal(size=30)),
    }


def differences(solution, theta):
    """d solution / d theta (an (n, p) matrix) by fourth-order central differences, all
    4 p perturbed solutions in one ``vmap``."""
    flat, unravel = ravel_pytree(theta)
    steps = H * jnp.eye(flat.size, dtype=flat.dtype)
    points = jnp.concatenate([flat + 2 * steps, flat + steps, flat - steps, flat - 2 * steps])
    x2, x1, m1, m2 = jnp.split(jax.jit(jax.vmap(lambda p: solution(unravel(p))))(points), 4)
    return ((8 * (x1 - m1) - (x2 - m2)) / (12 * H)).T


def unrolled_newton(fun, x0, *args, steps=12):
    """A differentiable solve: ``steps`` full Newton steps from ``x0``, in a scan."""

    def step(x, _):
        g, hessian = jax.grad(fun)(x, *args), jax.hessian(fun)(x, *args)
        return x - jnp.linalg.solve(hessian, g), None

    return jax.lax.scan(step, x0, None, length=steps)[0]


@pytest.mark.slow  # compiles differentiated solvers, ~5 s CPU each
def test_ridge_and_its_singular_limit(data):
    """Closed forms: d w*/d lam = -(A^T A + lam I)^-1 w*, d w*/d y = (A^T A + lam I)^-1 A^T;
    at lam = 0 (H = A^T A singular) the solve from zero is the minimum-norm pinv(A) y, and
    both the dense pseudo-inverse (reverse mode) and CG (forward mode, where the system is
    consistent) give the minimum-norm derivatives. ``lam`` reaches the objective in
    ``args``, ``y`` through a closure; one jitted, vmapped program per mode."""
    a, y = data["a"], data["y"]
    lams = jnp.asarray([0.7, 2.0, 0.0])

    def jacobians(jacobian, method):
        def solution(lam, y):
            fun = lambda w, lam: ridge(w, lam, a, y)  # noqa: E731
            sol = gx.minimize(fun, jnp.zeros(5), args=(lam,), tol=1e-12, implicit_diff=method)
            return sol.params

        derivative = jacobian(solution, argnums=(0, 1))
        return jax.jit(jax.vmap(derivative, in_axes=(0, None)))(lams, y)

    reverse_dense, forward_cg = jacobians(jax.jacrev, "dense"), jacobians(jax.jacfwd, "cg")
    for row, lam in enumerate(np.asarray(lams)):
        inverse = np.linalg.pinv(a.T @ a + lam * np.eye(5))
        exact = (-inverse @ inverse @ a.T @ y, inverse @ a.T)
        for reverse, forward, want in zip(reverse_dense, forward_cg, exact):
            np.testing.assert_allclose(reverse[row], want, rtol=0, atol=1e-9)
            np.testing.assert_allclose(forward[row], reverse[row], rtol=0, atol=1e-11)


def test_cg_returns_nan_where_the_system_has_no_solution(data):
    """Reverse-mode CG at a singular H solves H v = cotangent, which has no solution when the
    cotangent leaves range(H): NaN, not a large wrong number. Where it has one, CG from zero
    gives the minimum-norm solution, pinv(H) b."""
    a = data["a"]
    matrix = a.T @ a  # rank 3 of 5
    consistent, inconsistent = matrix @ np.arange(5.0), np.eye(5)[0]
    solve = jax.jit(jax.vmap(lambda b: implicit._cg_solve(lambda v: matrix @ v, b)))
    got = solve(jnp.stack([consistent, inconsistent]))
    np.testing.assert_allclose(got[0], np.linalg.pinv(matrix) @ consistent, atol=1e-9)
    assert np.isnan(got[1]).all()


@pytest.mark.slow  # compiles differentiated solvers, ~5 s CPU each
def test_logistic_regression_matches_differences_and_unrolled_newton(data):
    """Pytrees both sides: weights and intercept, and the data and weight in ``theta``.
    Also: x0 has a zero derivative, and after 2 iterations (MAXITER) the derivative is the
    formula's at the returned point (-H^-1 d grad / d theta there)."""
    labels = data["labels"]
    theta = {"lam": np.asarray(0.5), "x": data["x"]}
    flat, unravel = ravel_pytree(theta)
    x0 = {"w": jnp.zeros(4), "b": jnp.asarray(0.0)}
    flat0, unravel_params = ravel_pytree(x0)

    def params(z0, flat, maxiter):
        args = (unravel(flat), labels)
        sol = gx.minimize(logistic, unravel_params(z0), args=args, tol=1e-12, maxiter=maxiter)
        return ravel_pytree(sol.params)[0], sol

    reverse = jax.jit(jax.jacrev(params, argnums=(0, 1), has_aux=True))
    (d_x0, implicit_jacobian), sol = reverse(flat0, flat, 500)
    assert sol.status == gx.Status.SUCCESS
    np.testing.assert_array_equal(d_x0, np.zeros((5, 5)))

    def flat_logistic(z, t):
        return logistic(unravel_params(z), unravel(t), labels)

    newton = lambda t: unrolled_newton(flat_logistic, flat0, t)  # noqa: E731
    np.testing.assert_allclose(implicit_jacobian, differences(newton, flat), rtol=0, atol=1e-8)
    unrolled = jax.jit(jax.jacrev(newton))(flat)
    np.testing.assert_allclose(implicit_jacobian, unrolled, rtol=0, atol=1e-10)

    (_, early_jacobian), early = reverse(flat0, flat, 2)
    assert early.status == gx.Status.MAXITER

    @jax.jit
    def at_point(w, flat):  # -H^-1 d grad / d theta at w, densely
        hessian = jax.hessian(flat_logistic)(w, flat)
        return -jnp.linalg.solve(hessian, jax.jacfwd(jax.grad(flat_logistic), argnums=1)(w, flat))

    want = at_point(ravel_pytree(early.params)[0], flat)
    np.testing.assert_allclose(early_jacobian, want, rtol=1e-9, atol=1e-12)


def decay(p, t, y):
    return p["a"] * jnp.exp(-p["b"] * t) - y


@pytest.mark.slow  # compiles differentiated solvers, ~5 s CPU each
def test_least_squares_uses_the_full_hessian_of_half_the_squared_residuals():
    """gx.least_squares: d p*/d y against differences of unrolled Newton solutions of |r|^2/2;
    the data do not fit exactly, so the Gauss-Newton matrix J^T J alone would be wrong."""
    t = np.linspace(0.0, 3.0, 8)
    y = 2.0 * np.exp(-1.3 * t) + 0.1 * np.cos(5 * t)
    x0 = {"a": jnp.asarray(1.0), "b": jnp.asarray(1.0)}
    flat0, unravel = ravel_pytree(x0)

    def solution(y):
        sol = gx.least_squares(decay, x0, args=(t, y), ftol=1e-14, xtol=1e-14, gtol=1e-14)
        return ravel_pytree(sol.params)[0]

    implicit_jacobian = jax.jit(jax.jacrev(solution))(y)

    def half_squared(z, y):
        return 0.5 * jnp.sum(decay(unravel(z), t, y) ** 2)

    newton = lambda y: unrolled_newton(half_squared, jnp.asarray([2.0, 1.3]), y)  # noqa: E731
    np.testing.assert_allclose(implicit_jacobian, differences(newton, y), rtol=0, atol=1e-8)
    p = newton(y)
    jac = jax.jacfwd(lambda z: decay(unravel(z), t, y))(p)
    gauss_newton = -np.linalg.solve(jac.T @ jac, -jac.T)  # d/dy of the J^T J-only formula
    assert np.abs(gauss_newton - implicit_jacobian).max() > 1e-3


def test_bad_input_raises_when_the_call_is_made(data):
    args = (0.1, data["a"], data["y"])
    with pytest.raises(ValueError, match="implicit_diff must be one of"):
        gx.minimize(ridge, jnp.zeros(5), args=args, implicit_diff="qr")
    with pytest.raises(
        ValueError, match="tol must be constant when the solution is differentiated"
    ):
        jax.grad(lambda t: gx.minimize(ridge, jnp.zeros(5), args=args, tol=t).params.sum())(1e-6)

    def complex_fit(w, c):
        return jnp.sum(jnp.abs(w - c) ** 2)

    c = jnp.ones(2, jnp.complex128)
    with pytest.raises(TypeError, match=r"args\[0\] must be a real floating array"):
        jax.jvp(lambda c: gx.minimize(complex_fit, jnp.zeros(2), args=(c,)).params, (c,), (c,))
