"""gx.least_squares against scipy.optimize.least_squares, NumPy's lstsq and closed forms.

The Moré-Garbow-Hillstrom problems run grouped by their number of variables:
one residual function per group switches on the problem index (residuals
zero-padded to the group's largest m, which changes no step), so one compiled
solve, vmapped over the group's problems, serves them all.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import least_squares as scipy_least_squares

import gradxform as gx
from tests.mgh import BY_NAME, Problem

QUICK_GROUPS = {
    2: (
        "rosenbrock",
        "freudenstein_roth",
        "powell_badly_scaled",
        "brown_badly_scaled",
        "beale",
        "jennrich_sampson",
        "log_trial_nan",
    ),
}
SLOW_GROUPS = {
    3: ("helical_valley", "bard", "gaussian", "meyer", "gulf", "box3d"),
}
# Not MGH: residuals NaN for x <= 0, where LM's first trial from x0 = 0.01 lands; the
# trial must be rejected (the radius shrinks) and the solve still reach x = (2, 3).
PROBLEMS = {
    **BY_NAME,
    "log_trial_nan": Problem(
        "log_trial_nan",
        2,
        2,
        lambda x: jnp.log(x) - jnp.log(jnp.array([2.0, 3.0])),
        np.full(2, 0.01),
        0.0,
        "log residuals",
    ),
}


def _published(value, p):
    """``value`` is one of the paper's minima to 5 significant digits (as tests/test_mgh.py)."""
    return any(abs(value - t) <= max(1e-5 * abs(t), 1e-10) for t in (p.f_min, *p.f_other))


def _grouped_residual(names):
    problems = [PROBLEMS[name] for name in names]
    m = max(p.m for p in problems)
    branches = [lambda x, p=p: jnp.pad(p.residual(x), (0, m - p.m)) for p in problems]

    def residual(x, index):
        return jax.lax.switch(index, branches, x)

    return residual


def _scipy_runs(residual, names):
    fun, jac = jax.jit(residual), jax.jit(jax.jacfwd(residual))
    runs = {}
    for i, name in enumerate(names):
        if name not in BY_NAME:
            continue
        p, index = BY_NAME[name], jnp.asarray(i)
        for method in ("lm", "trf"):
            sol = scipy_least_squares(
                lambda x, i=index: np.asarray(fun(x, i)),
                p.x0,
                jac=lambda x, i=index: np.asarray(jac(x, i)),
                method=method,
            )
            runs[name, method] = (float(np.sum(sol.fun**2)), sol.nfev, sol.njev)
    return runs


def _group_runs(groups):
    out = {}
    with jax.enable_x64(True):
        for names in groups.values():
            residual = _grouped_residual(names)
            x0 = jnp.stack([jnp.asarray(PROBLEMS[name].x0) for name in names])
            solve = jax.vmap(lambda x, i, r=residual: gx.least_squares(r, x, args=(i,)))
            sol = solve(x0, jnp.arange(len(names)))
            for i, name in enumerate(names):
                counts = (int(sol.num_fun_evals[i]), int(sol.num_grad_evals[i]))
                out[name, "gx"] = (2 * float(sol.value[i]), *counts, int(sol.status[i]))
                out[name, "x"] = np.asarray(sol.params[i])
            out.update(_scipy_runs(residual, names))
    return out


def _assert_bar(runs, names):
    """Where scipy's lm or trf reaches a published minimum, gx's LM does too, with no more
    residual or Jacobian evaluations than the costlier of those that reached it, and
    within two of MINPACK's (scipy lm's) own counts: it takes MINPACK's steps."""
    for name in filter(BY_NAME.__contains__, names):
        p = BY_NAME[name]
        f, nfev, njev, status = runs[name, "gx"]
        refs = [runs[name, method] for method in ("lm", "trf")]
        reached = [r for r in refs if _published(r[0], p)]
        if reached:
            assert _published(f, p), (name, f, refs)
            assert status == gx.Status.SUCCESS, name
        if reached:
            assert nfev <= max(r[1] for r in reached), (name, nfev, refs)
            assert njev <= max(r[2] for r in reached), (name, njev, refs)
        lm_f, lm_nfev, lm_njev = runs[name, "lm"]
        # MINPACK's iteration: the same counts, to a step or two
        if _published(lm_f, p):
            assert abs(nfev - lm_nfev) <= 2 and abs(njev - lm_njev) <= 2, (name, nfev, lm_nfev)


@pytest.fixture(scope="module")
def quick_runs():
    return _group_runs(QUICK_GROUPS)


@pytest.mark.parametrize("n", sorted(QUICK_GROUPS))
def test_lm_reaches_scipys_minima_in_no_more_evaluations(quick_runs, n):
    _assert_bar(quick_runs, QUICK_GROUPS[n])


def test_a_nonfinite_trial_is_rejected(quick_runs):
    f, nfev, _, status = quick_runs["log_trial_nan", "gx"]
    assert status == gx.Status.SUCCESS and nfev > 3
    np.testing.assert_allclose(quick_runs["log_trial_nan", "x"], [2.0, 3.0], rtol=1e-8)


@pytest.mark.slow
def test_lm_bar_on_the_three_variable_problems():
    runs = _group_runs(SLOW_GROUPS)
    for names in SLOW_GROUPS.values():
        _assert_bar(runs, names)


TRACES = []


def _linear(x, a, b):
    TRACES.append(1)
    return a @ x - b


def _linear_batch():
    """Rows 0-2: full-rank A, three right-hand sides; row 3: a rank-4 A; row 4: a NaN in
    b; row 5: max_nfev = 1."""
    rng = np.random.default_rng(0)
    a = rng.normal(size=(12, 5))
    deficient = a.copy()
    deficient[:, 4] = deficient[:, 0] + deficient[:, 1]
    b = rng.normal(size=(6, 12))
    b[4, 3] = np.nan
    return np.stack([a, a, a, deficient, a, a]), b, np.array([500] * 5 + [1])


@pytest.fixture(
    scope="module",
    params=[("lm", "dense"), ("lm", "matvec"), ("gauss-newton", "matvec")],
    ids=["lm-dense", "lm-matvec", "gauss-newton-matvec"],
)
def linear_runs(request):
    method, jacobian = request.param
    a, b, max_nfev = _linear_batch()
    with jax.enable_x64(True):
        solve = jax.vmap(
            lambda a, b, k: gx.least_squares(
                _linear, jnp.zeros(5), method, args=(a, b), jacobian=jacobian, max_nfev=k
            )
        )
        sol = jax.tree.map(np.asarray, solve(a, b, max_nfev))
        traces = len(TRACES)
        again = solve(a, b + 1.0, max_nfev)  # new data: no new trace
        assert again.success[:4].all() and len(TRACES) == traces, "retraced for new data"
    return sol, a, b, method


def test_linear_least_squares_equal_numpy_lstsq(linear_runs):
    sol, a, b, method = linear_runs
    for i in range(4):
        assert sol.status[i] == gx.Status.SUCCESS
        want, *_ = np.linalg.lstsq(a[i], b[i], rcond=None)
        r = a[i] @ sol.params[i] - b[i]
        np.testing.assert_allclose(sol.value[i], 0.5 * np.sum((a[i] @ want - b[i]) ** 2), rtol=1e-9)
        np.testing.assert_allclose(sol.value[i], 0.5 * np.sum(r**2), rtol=1e-12)
        np.testing.assert_allclose(sol.grad_norm[i], np.linalg.norm(a[i].T @ r), atol=1e-9)
        if i < 3:  # full rank: the unique minimiser
            np.testing.assert_allclose(sol.params[i], want, rtol=1e-6, atol=1e-8)
    if method == "gauss-newton":  # rank-deficient: CG from 0 ends at the least-norm point
        want = np.linalg.pinv(a[3]) @ b[3]
        np.testing.assert_allclose(sol.params[3], want, rtol=1e-5, atol=1e-7)


def test_statuses_on_the_linear_batch(linear_runs):
    sol, *_ = linear_runs
    assert sol.status[4] == gx.Status.NONFINITE and sol.num_fun_evals[4] == 1
    assert sol.status[5] == gx.Status.MAXITER and sol.num_fun_evals[5] == 2
    assert sol.num_grad_evals[5] == 1 and np.all(sol.num_fun_evals[:4] >= 2)
    assert "not finite" in gx.Solution(*[f[4] for f in sol[:-1]], None).message


@jax.custom_jvp
def _signed_identity(x, sign):
    return x


_signed_identity.defjvp(lambda primals, tangents: (primals[0], primals[1] * tangents[0]))


def test_gauss_newton_steps_and_a_direction_that_is_not_a_descent_fails_the_search(x64):
    def solve(sign):  # r(x) = x with the derivative sign * I
        x0 = jnp.array([1.0, -2.0])
        return gx.least_squares(_signed_identity, x0, "gauss-newton", args=(sign,))

    good = solve(jnp.array(1.0))  # the exact Gauss-Newton step lands on 0
    assert good.status == gx.Status.SUCCESS and int(good.num_grad_evals) <= 2
    np.testing.assert_allclose(good.params, 0.0, atol=1e-12)
    bad = solve(jnp.array(-1.0))  # the "Gauss-Newton direction" of J = -I ascends
    assert bad.status == gx.Status.LINESEARCH_FAILED
    np.testing.assert_array_equal(bad.params, [1.0, -2.0])
    assert int(bad.num_fun_evals) == 1 + 20  # x0, then max_linesearch_steps trials


def _exp_residuals(p, t, y):
    """A pytree fit: y ~ a exp(-b t) + c, residuals as a dict of two halves."""
    model = p["amplitude"] * jnp.exp(-p["rate"][0] * t) + p["rate"][1]
    return {"early": model[:6] - y[:6], "late": (model[6:] - y[6:],)}


def _exp_flat(v, t, y):
    return np.asarray(v[0] * np.exp(-v[1] * t) + v[2] - y)


@pytest.fixture(scope="module")
def exp_data():
    t = np.linspace(0.0, 4.0, 15)
    rng = np.random.default_rng(1)
    y = 2.5 * np.exp(-1.3 * t) + 0.4 + 0.01 * rng.normal(size=t.size)
    return t, y


@pytest.mark.parametrize(
    "options",
    [
        {"jacobian": "dense"},
        {"jacobian": "matvec"},
        {"jacobian": "dense", "geodesic": True},
    ],
    ids=["dense", "matvec", "geodesic"],
)
def test_pytree_fit_equals_scipy(x64, exp_data, options):
    t, y = exp_data
    x0 = {"amplitude": jnp.array(1.0), "rate": jnp.array([0.5, 0.0])}
    sol = gx.least_squares(_exp_residuals, x0, args=(t, y), **options)
    assert sol.status == gx.Status.SUCCESS
    ref = scipy_least_squares(_exp_flat, np.array([1.0, 0.5, 0.0]), args=(t, y), method="lm")
    got = np.array([sol.params["amplitude"], *sol.params["rate"]])
    np.testing.assert_allclose(got, ref.x, rtol=1e-6)
    np.testing.assert_allclose(sol.value, ref.cost, rtol=1e-9)
    assert jax.tree.structure(sol.params) == jax.tree.structure(x0)


def test_bad_input_raises_at_the_call():
    x0 = jnp.ones(2)
    with pytest.raises(ValueError, match=r"residual_fn\(x0, \*args\) must be the residuals"):
        gx.least_squares(lambda x: jnp.sum(x**2), x0)
    with pytest.raises(TypeError, match="x0 must hold real floating-point arrays"):
        gx.least_squares(lambda x: x, jnp.ones(2, jnp.int32))
    with pytest.raises(ValueError, match="residual_fn.*real float arrays"):
        gx.least_squares(lambda x: x > 0, x0)
    with pytest.raises(ValueError, match="geodesic must be False unless"):
        gx.least_squares(lambda x: x, x0, jacobian="matvec", geodesic=True)
    with pytest.raises(ValueError, match="method must be one of 'lm', 'gauss-newton'"):
        gx.least_squares(lambda x: x, x0, method="trf")
    with pytest.raises(TypeError, match="residual_fn must be a callable"):
        gx.least_squares(None, x0)
    with pytest.raises(ValueError, match="ftol must be"):
        gx.least_squares(lambda x: x, x0, ftol=-1.0)
