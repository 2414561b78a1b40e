"""The second-order transforms and gx.minimize take the same steps.

Oracle: gx.minimize with the same method, whose loop is a different program
(a while loop with the direction carried between iterations) around the same
method record. A user's jitted loop driving gx.lbfgs() (bfgs, newton,
newton_cg) must reach the iterates minimize reaches, step for step, for 50
steps or until minimize stops: the values in minimize's history and the final
point. The two programs are compiled differently, so XLA may round ``f`` at
the same point differently (fused multiply-adds); values agree to 1e-12
(relative to f(x0)) and the points to 1e-10 (measured: the final points
agree bitwise or to 2e-14).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradxform as gx
from tests.references import rosenbrock

STEPS = 50


pytestmark = pytest.mark.usefixtures("x64")  # float64 throughout (tests/conftest.py)


@functools.cache
def digits():
    """Binary logistic regression on sklearn's digits (0-4 against 5-9), 300 samples."""
    from sklearn.datasets import load_digits

    data = load_digits()
    X = np.asarray(data.data[:300] / 16.0)
    y = np.asarray(data.target[:300] >= 5, np.float64)
    return X, y


def logistic(w):
    X, y = digits()
    z = jnp.asarray(X) @ w[:64] + w[64]
    return jnp.mean(jnp.logaddexp(0, z) - jnp.asarray(y) * z) + 1e-3 * jnp.sum(w**2)


PROBLEMS = {
    "rosenbrock": (rosenbrock, np.array([-1.2, 1.0])),
    "digits_logistic": (logistic, np.zeros(65)),
}


def optimizer(method, n):
    if method == "newton-cg":
        return gx.newton_cg(max_cg_steps=20 * n)  # minimize's default: 20 n (scipy's cap)
    return {"lbfgs": gx.lbfgs, "bfgs": gx.bfgs, "newton": gx.newton}[method]()


def training_loop(opt, f, x0, steps):
    """What a user writes: a jitted step reusing the state's value and gradient."""
    value_and_grad = optax.value_and_grad_from_state(f)

    @jax.jit
    def step(x, state):
        value, grad = value_and_grad(x, state=state)
        updates, state = opt.update(grad, state, x, value=value, grad=grad, value_fn=f)
        return gx.apply_updates(x, updates), state

    x, state, xs, values = x0, opt.init(x0), [x0], [f(x0)]
    for _ in range(steps):
        x, state = step(x, state)
        xs.append(x)
        values.append(optax.tree.get(state, "value"))
    return xs, np.asarray(values)


def assert_same_steps(method, problem):
    f, x0 = PROBLEMS[problem]
    x0 = jnp.asarray(x0)
    sol = gx.minimize(f, x0, method=method, tol=1e-14, maxiter=STEPS, history=True)
    k = int(sol.iterations)
    assert k >= 5, (method, problem, sol.message)  # the comparison covers real progress
    xs, values = training_loop(optimizer(method, x0.size), f, x0, k)
    history = np.asarray(sol.history.value)[: k + 1]
    recorded = np.isfinite(history)
    scale = abs(float(history[0]))
    np.testing.assert_allclose(values[recorded], history[recorded], rtol=1e-12, atol=1e-12 * scale)
    np.testing.assert_allclose(xs[k], sol.params, rtol=1e-10, atol=1e-12)


@pytest.mark.slow
def test_lbfgs_transform_takes_minimizes_steps_on_rosenbrock():
    assert_same_steps("lbfgs", "rosenbrock")


@pytest.mark.slow
@pytest.mark.parametrize("method", ["lbfgs", "bfgs", "newton", "newton-cg"])
@pytest.mark.parametrize("problem", sorted(PROBLEMS))
def test_every_transform_takes_minimizes_steps(method, problem):
    if (method, problem) == ("lbfgs", "rosenbrock"):
        pytest.skip("the fast test above")
    assert_same_steps(method, problem)


@pytest.mark.slow
def test_pytree_params_take_the_flat_runs_steps():
    """Leaf-wise inner products (the transform on a dict) against minimize's one vector."""

    def f(p):
        return rosenbrock(jnp.concatenate([p["a"], p["b"]]))

    start = {"a": jnp.array([-1.2, 1.0]), "b": jnp.array([-1.2, 1.0])}
    xs, _ = training_loop(gx.lbfgs(), f, start, 30)
    sol = gx.minimize(f, start, tol=1e-14, maxiter=30)
    np.testing.assert_allclose(
        jnp.concatenate([xs[int(sol.iterations)]["a"], xs[int(sol.iterations)]["b"]]),
        jnp.concatenate([sol.params["a"], sol.params["b"]]),
        rtol=1e-8,
    )
