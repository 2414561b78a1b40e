"""``gx.minimize`` as an API: data as ``args``, no recompiling, ``jit``/``vmap`` around it, reprs.

Compilations are counted as Python traces of the objective (a counter in its
body), which does not depend on timing; results are checked against
``scipy.optimize.minimize`` with the same ``args`` and against closed forms.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

import gradxform as gx
from tests.references import rosenbrock

pytestmark = pytest.mark.usefixtures("x64")

LAM = 0.1
SLOW_METHODS = ("bfgs", "newton", "newton-cg")  # one compilation each, ~2 s


def logistic(w, X, y, lam):
    """Regularised logistic loss (strictly convex: one minimizer)."""
    return jnp.mean(jnp.logaddexp(0.0, -y * (X @ w))) + 0.5 * lam * jnp.sum(w**2)


def logistic_np(w, X, y, lam):
    z = -y * (X @ w)
    return np.mean(np.logaddexp(0.0, z)) + 0.5 * lam * w @ w


def logistic_grad_np(w, X, y, lam):
    z = -y * (X @ w)
    return X.T @ (-y / (1 + np.exp(-z))) / len(y) + lam * w


@pytest.fixture(scope="module")
def datasets():
    rng = np.random.default_rng(0)
    out = []
    for _ in range(3):
        X = rng.normal(size=(20, 4))
        y = np.sign(X @ rng.normal(size=4) + 0.5 * rng.normal(size=20))
        out.append((X, y))
    return out


def scipy_solution(X, y):
    ref = scipy.optimize.minimize(
        logistic_np,
        np.zeros(4),
        args=(X, y, LAM),
        jac=logistic_grad_np,
        method="BFGS",
        options={"gtol": 1e-9},
    )
    assert ref.success
    return ref.x  # |x - x*| <= |g| / LAM <= 1e-8


def test_new_data_start_and_settings_reuse_the_compiled_solver(datasets):
    traces = []

    def objective(w, X, y, lam):
        traces.append(1)  # runs once per trace, never when the compiled solver runs
        return logistic(w, X, y, lam)

    calls = [
        dict(x0=jnp.zeros(4), data=datasets[0], tol=1e-6, maxiter=500),
        dict(x0=jnp.ones(4), data=datasets[1], tol=1e-9, maxiter=200, c1=1e-3, c2=0.8),
        dict(x0=-jnp.ones(4), data=datasets[2], tol=1e-11, maxiter=1000),
    ]
    counts = []
    for call in calls:
        X, y = call.pop("data")
        sol = gx.minimize(objective, call.pop("x0"), args=(X, y, LAM), **call)
        assert sol.success
        np.testing.assert_allclose(sol.params, scipy_solution(X, y), atol=1e-5)
        counts.append(len(traces))
    assert counts[0] > 0 and counts == [counts[0]] * 3


def test_changing_tol_maxiter_or_the_wolfe_constants_does_not_retrace():
    traces = []

    def objective(x):
        traces.append(1)
        return rosenbrock(x)

    x0, counts = jnp.array([-1.2, 1.0]), []
    for options in (dict(tol=1e-6), dict(tol=1e-10, maxiter=300), dict(c1=1e-3, c2=0.5)):
        sol = gx.minimize(objective, x0, **options)
        assert sol.success
        g = jax.grad(rosenbrock)(sol.params)  # the tolerance asked for is the one applied
        assert np.linalg.norm(g) <= options.get("tol", 1e-6) * np.linalg.norm([-215.6, -88.0])
        counts.append(len(traces))
    assert counts[0] > 0 and counts == [counts[0]] * 3


@pytest.mark.parametrize(
    "method", ["lbfgs", *(pytest.param(m, marks=pytest.mark.slow) for m in SLOW_METHODS)]
)
def test_args_are_passed_as_scipy_passes_them(datasets, method):
    X, y = datasets[0]
    sol = gx.minimize(logistic, jnp.zeros(4), method, args=(X, y, LAM), tol=1e-10)
    assert sol.success
    expected = scipy_solution(X, y)
    np.testing.assert_allclose(sol.params, expected, atol=1e-7)
    np.testing.assert_allclose(sol.value, logistic_np(expected, X, y, LAM), rtol=1e-12)


def test_a_single_argument_need_not_be_a_tuple():
    # f(x, a) = sum((x - a)^2) has its minimizer at a
    a = jnp.array([1.0, -2.0, 3.0])
    sol = gx.minimize(lambda x, a: jnp.sum((x - a) ** 2), jnp.zeros(3), args=a, tol=1e-10)
    np.testing.assert_allclose(sol.params, a, atol=1e-8)


@pytest.mark.slow  # three compilations
def test_jit_and_vmap_around_minimize(datasets):
    def solve(x0, X, y, tol):
        return gx.minimize(logistic, x0, args=(X, y, LAM), tol=tol)

    X, y = datasets[0]
    eager = solve(jnp.zeros(4), X, y, 1e-8)
    jitted = jax.jit(solve)(jnp.zeros(4), X, y, 1e-8)
    assert int(jitted.status) == gx.Status.SUCCESS
    assert int(jitted.iterations) == int(eager.iterations)
    np.testing.assert_allclose(jitted.params, eager.params, rtol=1e-10, atol=1e-12)

    Xs, ys = (jnp.stack(d) for d in zip(*datasets))
    batched = jax.vmap(solve, in_axes=(None, 0, 0, None))(jnp.zeros(4), Xs, ys, 1e-10)
    assert batched.message == [gx.second_order.minimize.MESSAGES[gx.Status.SUCCESS]] * 3
    for i, (X, y) in enumerate(datasets):
        np.testing.assert_allclose(batched.params[i], scipy_solution(X, y), atol=1e-7)


@pytest.mark.parametrize("maxiter", [999, pytest.param(1000, marks=pytest.mark.slow)])
def test_repr_is_a_short_summary_and_history_trims(maxiter):
    x0 = jnp.array([-1.2, 1.0])
    sol = gx.minimize(lambda x: rosenbrock(x), x0, tol=1e-10, maxiter=maxiter, history=True)
    text = repr(sol)
    assert len(text) < 600 and "nan" not in text.lower(), text
    assert "status=SUCCESS" in text and f"of {maxiter + 1} entries" in text
    assert f"iterations={int(sol.iterations)}," in text
    trimmed = sol.history.trimmed()
    n = int(sol.iterations) + 1
    assert trimmed.value.shape == trimmed.grad_norm.shape == (n,)
    assert np.all(np.isfinite(trimmed.value)) and np.all(np.diff(trimmed.value) <= 0)
    assert np.all(np.isnan(sol.history.value[n:]))
    # the ends, against independent evaluations: f(x0) and |grad f(x0)| in closed form
    x, y = np.asarray(x0)
    grad0 = [-2 * (1 - x) - 400 * x * (y - x**2), 200 * (y - x**2)]
    np.testing.assert_allclose(trimmed.value[0], 24.2, rtol=1e-14)
    np.testing.assert_allclose(trimmed.grad_norm[0], np.linalg.norm(grad0), rtol=1e-14)
    np.testing.assert_allclose(trimmed.value[-1], sol.value, rtol=0)
    np.testing.assert_allclose(trimmed.grad_norm[-1], sol.grad_norm, rtol=0)


@pytest.mark.slow
def test_batched_repr_and_history():
    starts = jnp.array([[-1.2, 1.0], [2.0, 2.0], [1.0, 1.0]])
    sols = jax.vmap(lambda p: gx.minimize(rosenbrock, p, history=True, maxiter=999))(starts)
    text = repr(sols)
    assert len(text) < 800 and "nan" not in text.lower(), text
    assert "status={'SUCCESS': 3}" in text and "batch shape (3,)" in text
    trimmed = sols.history.trimmed()
    assert trimmed.value.shape == (3, int(jnp.max(sols.iterations)) + 1)
    for i in range(3):
        row = np.asarray(trimmed.value[i, : int(sols.iterations[i]) + 1])
        np.testing.assert_allclose(row[0], rosenbrock(np.asarray(starts[i])), rtol=1e-14)
        assert np.all(np.isfinite(row))


def _decay(x, t, y, np=jnp):
    """Residuals of an exponential fitted to data it cannot match (``f > 0`` at the fit)."""
    return x[0] * np.exp(-x[1] * t) - y


@pytest.mark.slow  # one least-squares compile, four solves: ~3 s CPU
def test_least_squares_message_names_the_test_scipy_names():
    """Each of MINPACK's tests made to fire first by its tolerances on one fit, against the
    test ``scipy.optimize.least_squares(method="lm")`` reports there (its ``status`` 1 to 4:
    gtol, ftol, xtol, both ftol and xtol)."""
    t = np.linspace(0.0, 3.0, 12)
    y = 2.0 * np.exp(-1.3 * t) + 0.05 * np.sin(7.0 * t)
    settings = [
        dict(gtol=1e-2),  # the gradient test
        dict(),  # ftol (the defaults, 1e-8 each)
        dict(ftol=1e-15, xtol=1e-8),  # xtol
        dict(ftol=1e-3, xtol=1e-3),  # both at once
    ]
    tests = []
    for options in settings:
        ref = scipy.optimize.least_squares(
            _decay, [1.0, 1.0], method="lm", args=(t, y, np), **options
        )
        sol = gx.least_squares(_decay, jnp.array([1.0, 1.0]), args=(t, y), **options)
        assert sol.success and ref.success, (options, sol.message, ref.message)
        assert int(sol.stopping_test) == ref.status - 1, (options, ref.message, sol.message)
        assert sol.message == gx.second_order.solution.STOPPING_TESTS[ref.status - 1]
        tests.append(int(sol.stopping_test))
    assert tests == [0, 1, 2, 3]  # each test fired once
    batched = gx.Solution(*(np.stack([a, a]) for a in sol[:-1]), None)
    assert batched.message == [sol.message] * 2  # batched records: one message per row


@pytest.mark.parametrize(
    "call, error, match",
    [
        (
            lambda: gx.minimize(lambda x, s: jnp.sum(x**2), jnp.ones(2), args=("text",)),
            TypeError,
            "args must be a tuple of arrays",
        ),
        (
            lambda: jax.jit(lambda m: gx.minimize(jnp.sum, jnp.ones(2), maxiter=m, history=True))(
                5
            ),
            ValueError,
            "maxiter must be a Python int with history=True",
        ),
        (
            lambda: jax.jit(lambda t: gx.minimize(jnp.sum, jnp.ones(2), tol=t))(jnp.ones(2)),
            TypeError,
            "tol must be a real scalar",
        ),
        (
            lambda: gx.minimize(lambda x, a: x * a, jnp.ones(2), args=(2.0,)),
            ValueError,
            r"fun\(params\) must be a real floating scalar",
        ),
    ],
)
def test_bad_input_is_a_clear_error(call, error, match):
    with pytest.raises(error, match=match):
        call()
