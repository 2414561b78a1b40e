"""``gx.minimize(method="l-bfgs-b", bounds=...)`` against scipy's L-BFGS-B and closed forms.

All bounded solves run as one vmapped program (``benchmarks/bounded.py``'s
``gx_batch``: rows padded to one length with variables that cannot move) and
are compared row by row with ``scipy.optimize.minimize(method="L-BFGS-B")``
run with the same stopping thresholds: per-iteration values, iteration and
evaluation counts, and the solution. The quadratic's solution is checked
against its KKT point in closed form; the unbounded row against
``method="lbfgs"``.
"""

import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradxform as gx

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
import bounded as bench  # noqa: E402

from tests import mgh  # noqa: E402

N = 6  # every row is padded to this length: one compiled solver


def rosenbrock(x):
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def _quadratic():
    """``f = x.A x / 2 - b.x`` with ``b`` chosen so ``x_star`` is the KKT point of the box.

    At ``x_star`` the gradient ``A x_star - b`` is ``+1`` on the variables at
    their lower bound, ``-2`` on those at their upper bound and 0 on the
    others, so ``x_star`` is the (unique, ``A`` positive definite) minimizer.
    """
    rng = np.random.default_rng(0)
    q = rng.standard_normal((N, N))
    a = q @ q.T + N * np.eye(N)
    x_star = np.array([0.5, -1.0, 2.0, 0.25, 1.0, -0.5])
    lower = np.array([0.5, -3.0, -3.0, -3.0, 1.0, -3.0])  # x_star at lower: 0, 4
    upper = np.array([3.0, -1.0, 3.0, 3.0, 3.0, 3.0])  # x_star at upper: 1
    multiplier = np.array([1.0, -2.0, 0.0, 0.0, 1.0, 0.0])
    b = a @ x_star - multiplier
    a_j, b_j = jnp.asarray(a), jnp.asarray(b)

    def f(x):
        return 0.5 * x @ (a_j @ x) - b_j @ x

    return bench.Case("quadratic", f, np.zeros(N), lower, upper), x_star


def _cases():
    inf = np.inf
    r2 = lambda x: rosenbrock(x)  # noqa: E731  (one function per dimension: one branch each)
    r5 = lambda x: rosenbrock(x)  # noqa: E731
    r6 = lambda x: rosenbrock(x)  # noqa: E731
    x0_6 = np.tile([-1.2, 1.0], 3)
    quadratic, x_star = _quadratic()
    odd = np.arange(6) % 2 == 1
    cases = [
        # x0 = (-1.2, 1) is outside (x2 >= 1.5): projected first, as scipy does
        bench.Case(
            "rosenbrock2/box", r2, np.array([-1.2, 1.0]), np.array([-2, 1.5]), np.array([0.8, 3])
        ),
        bench.Case("rosenbrock5/box", r5, np.full(5, -1.2), np.zeros(5), np.full(5, 0.5)),
        bench.Case("rosenbrock6/partial", r6, x0_6, np.full(6, -2.0), np.where(odd, 0.9, inf)),
        bench.Case("rosenbrock6/free", r6, x0_6, np.full(6, -inf), np.full(6, inf)),
        quadratic,
    ]
    mgh_rows = {"beale": "box", "helical_valley": "box", "wood": "lower", "biggs_exp6": "box"}
    for case in bench.mgh_cases([mgh.BY_NAME[name] for name in mgh_rows]):
        name, variant = case.name.split("/")
        if mgh_rows[name] == variant:
            cases.append(case)
    return cases, x_star


@pytest.fixture(scope="module")
def runs():
    with jax.enable_x64(True):
        cases, x_star = _cases()
        ours = bench.gx_batch(cases, maxiter=200, history=True)
        theirs = bench.scipy_runs(cases, maxiter=200)
    return cases, ours, theirs, x_star


def test_matches_scipy_iterates_and_counts(runs):
    cases, ours, theirs, _ = runs
    for case, o, t in zip(cases, ours, theirs):
        assert t["status"] == "SUCCESS", case.name  # the set is chosen so scipy converges
        assert o["status"] == "SUCCESS", case.name
        # the same path: per-iteration values agree (rounding only) for the first iterations
        k = min(8, len(t["values"]), len(o["values"]))
        np.testing.assert_allclose(o["values"][:k], t["values"][:k], rtol=1e-7, err_msg=case.name)
        assert abs(o["nfev"] - t["nfev"]) <= max(1, 0.05 * t["nfev"]), (case.name, o, t)
        assert abs(o["nit"] - t["nit"]) <= max(1, 0.05 * t["nit"]), (case.name, o, t)
        assert abs(o["fun"] - t["fun"]) <= 1e-7 * max(1.0, abs(t["fun"])), case.name
        np.testing.assert_allclose(o["x"], t["x"], atol=1e-4, err_msg=case.name)
        assert np.all(o["x"] >= case.lower) and np.all(o["x"] <= case.upper), case.name
    assert sum(o["active"] for o in ours) >= 8  # the bounds matter on these rows


def test_quadratic_reaches_its_kkt_point(runs):
    cases, ours, _, x_star = runs
    row = [c.name for c in cases].index("quadratic")
    np.testing.assert_allclose(ours[row]["x"], x_star, atol=1e-6)


@pytest.mark.usefixtures("x64")
def test_without_bounds_it_reaches_the_lbfgs_solution(runs):
    cases, ours, _, _ = runs
    row = [c.name for c in cases].index("rosenbrock6/free")
    plain = gx.minimize(rosenbrock, jnp.asarray(cases[row].x0), method="lbfgs", tol=1e-8)
    assert plain.success
    np.testing.assert_allclose(ours[row]["x"], np.asarray(plain.params), atol=2e-4)
    np.testing.assert_allclose(ours[row]["x"], np.ones(N), atol=2e-4)


@pytest.mark.slow
@pytest.mark.usefixtures("x64")
def test_pytree_bounds_take_the_flat_path(runs):
    """A dict ``x0`` with pytree and scalar bounds takes the steps of the flat row."""
    cases, ours, _, _ = runs
    row = [c.name for c in cases].index("rosenbrock6/partial")

    def fun(p):
        return rosenbrock(jnp.concatenate([p["a"], p["b"].ravel()]))

    x0 = {"a": jnp.array([-1.2, 1.0]), "b": jnp.array([[-1.2, 1.0], [-1.2, 1.0]])}
    upper = {"a": jnp.array([jnp.inf, 0.9]), "b": jnp.array([[jnp.inf, 0.9], [jnp.inf, 0.9]])}
    options = {"tol": ours[row]["tol"], "maxiter": 200, "max_linesearch_steps": 20}
    sol = gx.minimize(fun, x0, method="l-bfgs-b", bounds=(-2.0, upper), **options)
    flat = np.concatenate([np.asarray(sol.params["a"]), np.asarray(sol.params["b"]).ravel()])
    assert (int(sol.iterations), int(sol.num_fun_evals)) == (ours[row]["nit"], ours[row]["nfev"])
    np.testing.assert_allclose(flat, ours[row]["x"], atol=1e-8)
    assert float(sol.grad_norm) <= ours[row]["tol"] * max(1.0, ours[row]["pg0"])


def _sum(p):
    return jnp.sum(jax.tree.reduce(jnp.add, jax.tree.map(jnp.sum, p)))


@pytest.mark.parametrize(
    ("bounds", "method", "error", "match"),
    [
        ((1.0, 0.0), "l-bfgs-b", ValueError, r"bounds must be lower <= upper everywhere"),
        (
            (jnp.array([0.0, 2.0, 0.0]), 1.0),
            "l-bfgs-b",
            ValueError,
            r"lower 2.0 > upper 1.0 at x0\[1\]",
        ),
        ((jnp.zeros(2), None), "l-bfgs-b", ValueError, r"bounds lower must be shaped like x0"),
        (
            ({"a": 0.0}, None),
            "l-bfgs-b",
            ValueError,
            r"bounds lower must be a scalar, None or a pytree",
        ),
        ((None, jnp.array([1.0, jnp.nan, 1.0])), "l-bfgs-b", ValueError, r"not NaN"),
        ((0.0, 1.0), "lbfgs", ValueError, r"bounds must be None unless method='l-bfgs-b'"),
        ("box", "l-bfgs-b", TypeError, r"bounds must be a pair \(lower, upper\)"),
    ],
)
def test_bad_bounds_raise_when_called(bounds, method, error, match):
    with pytest.raises(error, match=match):
        gx.minimize(_sum, jnp.zeros(3), method=method, bounds=bounds)
