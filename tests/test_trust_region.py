"""Trust-region Newton (``minimize(method="trust-exact" | "trust-ncg")``, ``gx.trust_exact``,
``gx.trust_ncg``) against dense references and scipy.

* the exact subproblem against the eigendecomposition of ``H`` and the secular equation
  solved by bisection in NumPy (easy, interior and hard cases);
* the Steihaug-Toint subproblem against dense algebra: the residual test of an interior
  step, the radius, the predicted decrease, and at least the Cauchy point's decrease;
* whole solves against ``scipy.optimize.minimize(method="trust-exact" | "trust-ncg")`` on
  problems of the Moré-Garbow-Hillstrom set (tests/mgh.py): same published minimum, no
  more iterations than scipy (+5%); Osborne 1 and Biggs EXP6 (where ``method="newton"``
  failed) converge (Biggs with trust-ncg: trust-exact from the standard start ends on
  the plateau f = 0.2427 where scipy's trust-exact with exact subproblem solutions
  also ends, see docs/results/mgh.md);
* the transform takes ``minimize``'s steps (a Python loop of ``update`` calls);
* bad input raises when the call or transform is built.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import minimize as scipy_minimize

import gradxform as gx
from gradxform.second_order import trust_subproblem as sub
from tests.mgh import BY_NAME, objective

N = 5  # one shape for every subproblem test (one compile each)


def _reference_step(H, g, radius):
    """The global minimiser of ``g.p + p.H p / 2`` on ``|p| <= radius``, by brute force."""
    lam, Q = np.linalg.eigh(H)
    a = Q.T @ g
    if lam[0] > 0 and np.linalg.norm(a / lam) <= radius:
        return Q @ (-a / lam)
    low = max(0.0, -lam[0])
    near = lam - lam[0] < 1e-9
    far = np.where(near, 0.0, -a / np.where(near, 1.0, lam + low))
    if lam[0] <= 0 and np.linalg.norm(a[near]) < 1e-12 and np.linalg.norm(far) <= radius:
        far[0] = np.sqrt(radius**2 - far @ far)  # the hard case
        return Q @ far
    lo, hi = low, low + np.linalg.norm(g) / radius + np.abs(lam).max() + 1.0
    for _ in range(200):  # |p(sigma)| decreases on (low, inf)
        mid = (lo + hi) / 2
        if np.linalg.norm(a / (lam + mid)) > radius:
            lo = mid
        else:
            hi = mid
    return Q @ (-a / (lam + hi))


def _instances(seed=0, count=24):
    """Random ``(H, g, radius)``: indefinite, positive definite, and hard-case rows."""
    rng = np.random.default_rng(seed)
    hs, gs, rs = [], [], []
    for i in range(count):
        A = rng.normal(size=(N, N))
        H = A @ A.T / N + 0.05 * np.eye(N) if i % 3 == 1 else (A + A.T) / 2
        g = rng.normal(size=N)
        if i % 3 == 2:  # hard case: g orthogonal to the lowest eigenvector, a large radius
            lam, Q = np.linalg.eigh(H)
            g = g - Q[:, 0] * (Q[:, 0] @ g)
            g *= 0.05
        hs.append(H)
        gs.append(g)
        rs.append(rng.uniform(0.2, 3.0) * (4.0 if i % 3 == 2 else 1.0))
    return np.array(hs), np.array(gs), np.array(rs)


def _model(H, g, p):
    return g @ p + 0.5 * p @ H @ p


@pytest.fixture(scope="module")
def instances():
    return _instances()


@pytest.fixture(scope="module")
def exact_steps(instances):
    with jax.enable_x64(True):
        solve = jax.jit(
            jax.vmap(
                lambda H, g, r, k: sub.exact_subproblem(sub.hessian_eigh(H), g, r, k, k, 200),
                in_axes=(0, 0, 0, None),
            )
        )
        hs, gs, rs = (jnp.asarray(v) for v in instances)
        tight = jax.tree.map(np.asarray, solve(hs, gs, rs, 1e-12))
        default = jax.tree.map(np.asarray, solve(hs, gs, rs, 0.1))
    return tight, default


def test_exact_subproblem_with_tight_tolerances_is_the_global_minimiser(instances, exact_steps):
    tight, _ = exact_steps
    for H, g, r, p, predicted in zip(*instances, tight.step, tight.predicted):
        best = _model(H, g, _reference_step(H, g, r))
        assert np.linalg.norm(p) <= r * (1 + 1e-9)
        np.testing.assert_allclose(_model(H, g, p), best, rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(predicted, -_model(H, g, p), rtol=1e-10, atol=1e-14)


def test_exact_subproblem_with_default_tolerances_is_near_optimal(instances, exact_steps):
    """Moré-Sorensen's guarantee: |p| <= (1 + k_easy) radius and a near-optimal decrease."""
    _, default = exact_steps
    for H, g, r, p, boundary in zip(*instances, default.step, default.hits_boundary):
        best = _model(H, g, _reference_step(H, g, r))
        assert np.linalg.norm(p) <= 1.1 * r * (1 + 1e-12)
        assert _model(H, g, p) <= 0.6 * best
        if not boundary:  # interior: the Newton step
            np.testing.assert_allclose(H @ p, -g, atol=1e-10)


def test_steihaug_subproblem_against_dense_algebra(x64, instances):
    solve = jax.jit(jax.vmap(lambda H, g, r: sub.steihaug_subproblem(lambda v: H @ v, g, r, 50)))
    hs, gs, rs = instances
    rs = np.where(np.arange(len(rs)) % 3 == 1, 100.0, rs)  # convex rows: an interior step
    out = jax.tree.map(np.asarray, solve(*(jnp.asarray(v) for v in (hs, gs, rs))))
    for i, (H, g, r) in enumerate(zip(hs, gs, rs)):
        p = out.step[i]
        assert np.linalg.norm(p) <= r * (1 + 1e-12)
        np.testing.assert_allclose(out.predicted[i], -_model(H, g, p), rtol=1e-10, atol=1e-14)
        gnorm = np.linalg.norm(g)
        gHg = g @ H @ g
        tau = 1.0 if gHg <= 0 else min(gnorm**3 / (r * gHg), 1.0)
        cauchy = -tau * r * g / gnorm
        assert _model(H, g, p) <= _model(H, g, cauchy) + 1e-12
        if i % 3 == 1:
            assert not out.hits_boundary[i]
            assert np.linalg.norm(H @ p + g) <= min(0.5, np.sqrt(gnorm)) * gnorm


def _scipy_solve(p, method):
    f = objective(p)
    value_and_grad = jax.jit(jax.value_and_grad(f))
    g0 = np.linalg.norm(value_and_grad(p.x0)[1])
    if method == "trust-exact":
        hessian = jax.jit(jax.hessian(f))
        extra = {"hess": lambda x: np.asarray(hessian(x))}
    else:
        hvp = jax.jit(lambda x, v: jax.jvp(jax.grad(f), (x,), (v,))[1])
        extra = {"hessp": lambda x, v: np.asarray(hvp(x, v))}
    with warnings.catch_warnings():  # scipy's trust-exact overflows in a norm on Osborne 1
        warnings.simplefilter("ignore", RuntimeWarning)
        return scipy_minimize(
            lambda x: tuple(np.asarray(v) for v in value_and_grad(x)),
            p.x0,
            jac=True,
            method=method,
            options={"gtol": 1e-6 * max(1.0, g0), "maxiter": 2000},
            **extra,
        )


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, method",
    [
        ("osborne1", "trust-exact"),
        ("box3d", "trust-exact"),
        ("rosenbrock", "trust-ncg"),
        ("biggs_exp6", "trust-ncg"),
    ],
)
def test_minimize_matches_scipy_on_mgh_problems(x64, name, method):
    p = BY_NAME[name]
    ref = _scipy_solve(p, method)
    sol = gx.minimize(objective(p), jnp.asarray(p.x0), method=method, tol=1e-6, maxiter=2000)
    assert ref.success and bool(sol.success), (ref.message, sol.message)
    assert int(sol.iterations) <= max(1.05 * ref.nit, ref.nit + 1), (int(sol.iterations), ref.nit)
    assert any(abs(float(sol.value) - v) <= 1e-4 * v + 1e-8 for v in (p.f_min, *p.f_other))
    np.testing.assert_allclose(float(sol.value), ref.fun, rtol=1e-4, atol=1e-9)
    assert int(sol.num_fun_evals) == int(sol.iterations) + 1  # one evaluation per trial
    if method == "trust-exact":
        assert int(sol.num_hess_evals) <= int(sol.iterations) + 1
    else:
        assert int(sol.num_hess_evals) == 0 and int(sol.num_hvp_evals) > 0


@pytest.mark.slow
def test_trust_exact_leaves_a_saddle_point(x64):
    """At the saddle of ``x^2 - y^2 + y^4 / 4`` with zero gradient: the hard case steps off
    it along the negative curvature and reaches a minimum ``y = +-sqrt 2``."""

    def fun(v):
        return v[0] ** 2 - v[1] ** 2 + v[1] ** 4 / 4

    sol = gx.minimize(fun, jnp.zeros(2), method="trust-exact")
    assert bool(sol.success)
    np.testing.assert_allclose(np.abs(np.asarray(sol.params)), [0.0, np.sqrt(2.0)], atol=1e-6)


@pytest.mark.slow
def test_the_transform_takes_the_steps_of_minimize(x64):
    p = BY_NAME["rosenbrock"]
    f = objective(p)
    opt = gx.trust_exact()
    step = jax.jit(lambda x, state: opt.update(jax.grad(f)(x), state, x, value=f(x), value_fn=f))
    x, state = jnp.asarray(p.x0), opt.init(jnp.asarray(p.x0))
    points = [np.asarray(x)]
    for _ in range(12):
        updates, state = step(x, state)
        x = gx.apply_updates(x, updates)
        points.append(np.asarray(x))
    sol = gx.minimize(f, jnp.asarray(p.x0), method="trust-exact", maxiter=12)
    np.testing.assert_allclose(points[-1], np.asarray(sol.params), rtol=1e-12, atol=1e-14)


def test_bad_input_raises_when_built():
    with pytest.raises(ValueError, match="method must be"):
        gx.minimize(lambda x: jnp.sum(x**2), jnp.ones(2), method="trust-region")
    with pytest.raises(ValueError, match="eta must be"):
        gx.trust_exact(eta=0.5)
    with pytest.raises(ValueError, match="max_radius must be"):
        gx.trust_ncg(initial_radius=2.0, max_radius=1.0)
    with pytest.raises(ValueError, match="method must be"):
        gx.scale_by_trust_region("dogleg")
    with pytest.raises(ValueError, match="max_cg_steps must be"):
        gx.trust_ncg(0)
