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
from jax.flatten_util import ravel_pytree

import gradxform as gx
from gradxform.second_order import bounded

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
import bounded as bench  # noqa: E402

from tests import mgh  # noqa: E402

N = 6  # every row is padded to this length: one compiled solver
SCIPY_TESTS = {  # scipy's L-BFGS-B message -> Solution.stopping_test
    "CONVERGENCE: NORM OF PROJECTED GRADIENT <= PGTOL": 0,
    "CONVERGENCE: RELATIVE REDUCTION OF F <= FACTR*EPSMCH": 1,
}


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
    """Rosenbrock (n = 6) in four variants, the quadratic, and two MGH rows: 4 functions."""
    inf = np.inf
    x0 = np.tile([-1.2, 1.0], 3)
    odd = np.arange(N) % 2 == 1
    quadratic, x_star = _quadratic()
    cases = [
        # x0 is outside the box (x_odd >= 1.5): projected first, as scipy does
        bench.Case(
            "rosenbrock/box", rosenbrock, x0, np.where(odd, 1.5, -2.0), np.where(odd, 3.0, 0.8)
        ),
        bench.Case("rosenbrock/half", rosenbrock, x0, np.zeros(N), np.full(N, 0.5)),
        bench.Case("rosenbrock/partial", rosenbrock, x0, np.full(N, -2.0), np.where(odd, 0.9, inf)),
        bench.Case("rosenbrock/free", rosenbrock, x0, np.full(N, -inf), np.full(N, inf)),
        quadratic,
    ]
    mgh_rows = {"beale": "box", "wood": "lower"}
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


@pytest.mark.slow  # the module's one compile of the batch: ~20 s CPU
def test_matches_scipy_iterates_and_counts(runs):
    cases, ours, theirs, _ = runs
    for case, o, t in zip(cases, ours, theirs):
        assert t["status"] == "SUCCESS", case.name  # the set is chosen so scipy converges
        assert o["status"] == "SUCCESS", case.name
        if (o["nit"], o["nfev"]) == (t["nit"], t["nfev"]):  # the same path to the end:
            # the same convergence test stopped both (both tests fire in this set: see below)
            assert o["stopping_test"] == SCIPY_TESTS[t["message"]], (case.name, t["message"])
        # the same path: per-iteration values agree (rounding only) for the first iterations
        k = min(8, len(t["values"]), len(o["values"]))
        np.testing.assert_allclose(o["values"][:k], t["values"][:k], rtol=1e-7, err_msg=case.name)
        assert abs(o["nfev"] - t["nfev"]) <= max(1, 0.05 * t["nfev"]), (case.name, o, t)
        assert abs(o["nit"] - t["nit"]) <= max(1, 0.05 * t["nit"]), (case.name, o, t)
        assert abs(o["fun"] - t["fun"]) <= 1e-7 * max(1.0, abs(t["fun"])), case.name
        np.testing.assert_allclose(o["x"], t["x"], atol=1e-4, err_msg=case.name)
        assert np.all(o["x"] >= case.lower) and np.all(o["x"] <= case.upper), case.name
    assert sum(o["active"] for o in ours) >= 6  # the bounds matter on these rows
    same = [(o["nit"], o["nfev"]) == (t["nit"], t["nfev"]) for o, t in zip(ours, theirs)]
    tests = {o["stopping_test"] for o, same_path in zip(ours, same) if same_path}
    assert tests == {0, 1}  # the gradient test and the f-test, each on a row of the same path


@pytest.mark.slow
def test_the_message_says_which_test_stopped_the_solve(runs):
    """scipy's message and ours name the same test (the ``stopping_test`` codes, in words)."""
    cases, ours, theirs, _ = runs
    words = {0: "gradient norm <= tol", 1: "(f_prev - f) <= factr * eps"}
    for case, o, t in zip(cases, ours, theirs):
        if (o["nit"], o["nfev"]) == (t["nit"], t["nfev"]):  # the same path to the end
            assert words[SCIPY_TESTS[t["message"]]] in o["message"], (case.name, o["message"])


@pytest.mark.slow
def test_quadratic_reaches_its_kkt_point(runs):
    cases, ours, _, x_star = runs
    row = [c.name for c in cases].index("quadratic")
    np.testing.assert_allclose(ours[row]["x"], x_star, atol=1e-6)


@pytest.mark.slow
@pytest.mark.usefixtures("x64")
def test_without_bounds_it_reaches_the_lbfgs_solution(runs):
    cases, ours, _, _ = runs
    row = [c.name for c in cases].index("rosenbrock/free")
    plain = gx.minimize(rosenbrock, jnp.asarray(cases[row].x0), method="lbfgs", tol=1e-8)
    assert plain.success
    np.testing.assert_allclose(ours[row]["x"], np.asarray(plain.params), atol=2e-4)
    np.testing.assert_allclose(ours[row]["x"], np.ones(N), atol=2e-4)


@pytest.mark.usefixtures("x64")
def test_pytree_and_scalar_bounds_flatten_like_x0():
    """Pytree, scalar and None bounds give the flat vectors of the flat rows, in x0's order.

    (The guide's *Bounds* example, run by tests/test_docs.py, solves with pytree bounds.)
    """
    x0 = {"a": jnp.array([-1.2, 1.0]), "b": jnp.array([[-1.2, 1.0], [-1.2, 1.0]])}
    upper = {"a": jnp.array([jnp.inf, 0.9]), "b": jnp.array([[jnp.inf, 0.9], [jnp.inf, 0.9]])}
    odd = np.arange(N) % 2 == 1
    for bounds, want in [
        ((-2.0, upper), (np.full(N, -2.0), np.where(odd, 0.9, np.inf))),
        ((None, 0.5), (np.full(N, -np.inf), np.full(N, 0.5))),
    ]:
        lower, upper_ = bounded._check_bounds(bounds, x0)
        for side, expected in zip((lower, upper_), want):
            np.testing.assert_array_equal(np.asarray(ravel_pytree(side)[0]), expected)
    lower, _ = bounded._check_bounds(([0.0, 1.0], None), jnp.zeros(2))  # a list for one array
    np.testing.assert_array_equal(np.asarray(lower), [0.0, 1.0])


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
