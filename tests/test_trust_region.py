"""Trust-region Newton (``minimize(method="trust-exact" | "trust-ncg")``, ``gx.trust_exact``,
``gx.trust_ncg``) against dense references and scipy.

* the Moré-Sorensen subproblem (scipy's iteration on Cholesky factorisations) against the
  eigendecomposition of ``H`` and the secular equation solved by bisection in NumPy
  (easy, interior and hard cases): Moré-Sorensen's guarantees for its stopping rules;
  step for step against ``scipy.optimize._trustregion_exact.IterativeSubproblem``; the
  LINPACK singular-vector estimate against scipy's and the SVD;
* the eigenbasis subproblem (``subproblem="exact"``) with tight tolerances against the
  global minimiser;
* the Steihaug-Toint subproblem against dense algebra: the residual test of an interior
  step, the radius, the predicted decrease, and at least the Cauchy point's decrease;
* whole solves against ``scipy.optimize.minimize(method="trust-exact" | "trust-ncg")`` on
  problems of the Moré-Garbow-Hillstrom set (tests/mgh.py): same published minimum, the
  same iteration count as scipy's trust-exact (Biggs EXP6, where ``method="newton"``
  failed and where the exact-eigenvector subproblem stays on the plateau f = 0.2427), no
  more than scipy (+5%) for trust-ncg;
* the transform takes ``minimize``'s steps (a Python loop of ``update`` calls), a run
  saved mid-way (state through NumPy) and continued equals the uninterrupted run
  bitwise, and in float32 it keeps the dtype and reaches the closed-form minimum;
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
from gradxform.second_order import trust_region
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
        scale = 4.0 if i % 3 == 2 else (50.0 if i % 6 == 4 else 1.0)  # some interior steps
        rs.append(rng.uniform(0.2, 3.0) * scale)
    return np.array(hs), np.array(gs), np.array(rs)


def _model(H, g, p):
    return g @ p + 0.5 * p @ H @ p


@pytest.fixture(scope="module")
def instances():
    return _instances()


@pytest.fixture(scope="module")
def exact_steps(instances):
    """The eigenbasis solver with tight tolerances, and the Moré-Sorensen (Cholesky) solver
    with scipy's defaults, each one compiled program over the rows."""
    with jax.enable_x64(True):
        tight = jax.jit(
            jax.vmap(
                lambda H, g, r: sub.exact_subproblem(sub.hessian_eigh(H), g, r, 1e-12, 1e-12, 200)
            )
        )
        chol = jax.jit(
            jax.vmap(lambda H, g, r: sub.more_sorensen_subproblem(H, g, r, sub.ms_memory(H.dtype)))
        )
        hs, gs, rs = (jnp.asarray(v) for v in instances)
        saddle = jnp.diag(jnp.array([2.0, 1.0, 3.0, 0.5, -2.0]))  # g = 0 at a saddle
        rows = (jnp.append(hs, saddle[None], 0), jnp.append(gs, 0 * gs[:1], 0), jnp.append(rs, 1.5))
        return jax.tree.map(np.asarray, (tight(hs, gs, rs), chol(*rows)))


def test_eigenbasis_subproblem_with_tight_tolerances_is_the_global_minimiser(
    instances, exact_steps
):
    tight, _ = exact_steps
    for H, g, r, p, predicted in zip(*instances, tight.step, tight.predicted):
        best = _model(H, g, _reference_step(H, g, r))
        assert np.linalg.norm(p) <= r * (1 + 1e-9)
        np.testing.assert_allclose(_model(H, g, p), best, rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(predicted, -_model(H, g, p), rtol=1e-10, atol=1e-14)


def test_more_sorensen_subproblem_meets_its_optimality_guarantees(instances, exact_steps):
    """Moré-Sorensen's stopping rules with ``k_easy = 0.1``, ``k_hard = 0.2``: ``p`` is the
    exact solution for a radius within ``(1 +- k_easy) radius`` (so ``m(p) <= (1 -
    k_easy)^2 m*``), or completed in the hard case within ``k_hard`` of optimal (their
    Lemma 3.4: ``m(p) <= (1 - k_hard) m*``); interior steps are Newton steps of a
    positive definite ``H``. ``m*`` from the dense reference."""
    _, chol = exact_steps
    for i, (H, g, r) in enumerate(zip(*instances)):
        p, boundary = chol.step[i], chol.hits_boundary[i]
        best = _model(H, g, _reference_step(H, g, r))
        assert np.linalg.norm(p) <= 1.1 * r * (1 + 1e-12)
        assert _model(H, g, p) <= min(0.9**2, 0.8) * best * (1 - 1e-12), i
        np.testing.assert_allclose(chol.predicted[i], -_model(H, g, p), rtol=1e-10, atol=1e-14)
        if not boundary:  # interior: the Newton step of a positive definite H
            assert np.linalg.eigvalsh(H)[0] > 0
            np.testing.assert_allclose(H @ p, -g, atol=1e-10)
        else:  # on the boundary up to k_easy
            assert abs(np.linalg.norm(p) - r) <= 0.1 * r * (1 + 1e-12)
    assert np.sum(~chol.hits_boundary[:-1]) >= 2  # the rows reach every branch
    assert np.sum(chol.hits_boundary[:-1]) >= 10


def test_more_sorensen_subproblem_takes_scipys_steps(instances, exact_steps):
    """The same steps as scipy's IterativeSubproblem (same iteration, its LAPACK factors)."""
    from scipy.optimize._trustregion_exact import IterativeSubproblem

    _, chol = exact_steps
    for i, (H, g, r) in enumerate(zip(*instances)):
        ref = IterativeSubproblem(np.zeros(N), lambda x: 0.0, lambda x, g=g: g, lambda x, H=H: H)
        p, boundary = ref.solve(r)
        np.testing.assert_allclose(chol.step[i], p, rtol=1e-9, atol=1e-12, err_msg=str(i))
        assert bool(chol.hits_boundary[i]) == boundary


def test_smallest_singular_estimate_against_scipy_and_the_svd(x64):
    """LINPACK's estimate equals scipy's ``estimate_smallest_singular_value``; on a nearly
    singular ``U`` it is the smallest singular value and vector to a few digits."""
    from scipy.optimize._trustregion_exact import estimate_smallest_singular_value

    rng = np.random.default_rng(1)
    us = np.triu(rng.normal(size=(3, N, N))) + 2 * np.eye(N)
    us[2, 3, 3] = 1e-7  # nearly singular
    s_min, z = jax.vmap(sub.smallest_singular_estimate)(jnp.asarray(us))
    for u, s, v in zip(us, np.asarray(s_min), np.asarray(z)):
        ref_s, ref_z = estimate_smallest_singular_value(u)
        np.testing.assert_allclose(s, ref_s, rtol=1e-10)
        np.testing.assert_allclose(v, ref_z, rtol=1e-8, atol=1e-12)
    _, sv, vt = np.linalg.svd(us[2])
    np.testing.assert_allclose(s_min[2], sv[-1], rtol=1e-3)
    np.testing.assert_allclose(abs(np.asarray(z[2]) @ vt[-1]), 1.0, rtol=1e-6)


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


def _scipy_solve(p, method, maxiter=2000):
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
            options={"gtol": 1e-6 * max(1.0, g0), "maxiter": maxiter},
            **extra,
        )


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, method",
    [
        ("biggs_exp6", "trust-exact"),
        ("rosenbrock", "trust-ncg"),
    ],
)
def test_minimize_matches_scipy_on_mgh_problems(x64, name, method):
    """trust-exact takes scipy's iterations (the same count, 38 on Biggs EXP6 at this
    writing; the other 34 problems in benchmarks/second_order.py --mgh, Rosenbrock's first
    12 iterates in the transform test below); trust-ncg no more than scipy's (+5%)."""
    p = BY_NAME[name]
    ref = _scipy_solve(p, method)
    sol = gx.minimize(objective(p), jnp.asarray(p.x0), method=method, tol=1e-6, maxiter=2000)
    assert ref.success and bool(sol.success), (ref.message, sol.message)
    if method == "trust-exact":
        assert int(sol.iterations) == ref.nit, (int(sol.iterations), ref.nit)
    assert int(sol.iterations) <= max(1.05 * ref.nit, ref.nit + 1), (int(sol.iterations), ref.nit)
    assert any(abs(float(sol.value) - v) <= 1e-4 * v + 1e-8 for v in (p.f_min, *p.f_other))
    np.testing.assert_allclose(float(sol.value), ref.fun, rtol=1e-4, atol=1e-9)
    assert int(sol.num_fun_evals) == int(sol.iterations) + 1  # one evaluation per trial
    if method == "trust-exact":
        assert int(sol.num_hess_evals) <= int(sol.iterations) + 1
    else:
        assert int(sol.num_hess_evals) == 0 and int(sol.num_hvp_evals) > 0


def test_more_sorensen_subproblem_leaves_a_saddle_point(exact_steps):
    """``g = 0``, ``H = diag(2, 1, 3, 1/2, -2)``, radius 1.5: ``H + lam I`` is singular at
    both initial bounds, no factorisation succeeds (scipy has no step there) and the step
    is ``+-1.5 e_5``, to the boundary along the negative curvature."""
    _, chol = exact_steps
    np.testing.assert_allclose(np.abs(chol.step[-1]), [0, 0, 0, 0, 1.5], atol=1e-12)
    np.testing.assert_allclose(chol.predicted[-1], 0.5 * 2.0 * 1.5**2, rtol=1e-12)
    assert chol.hits_boundary[-1]


@pytest.mark.slow
def test_the_transform_takes_the_steps_of_minimize_and_resumes_bitwise(x64):
    """12 updates take scipy trust-exact's 12 iterations (two rejected trials among them:
    the solver's memory is in the state); 5 updates, the state saved through NumPy and
    reloaded, then 7 more equal the 12 uninterrupted updates bit for bit."""
    p = BY_NAME["rosenbrock"]
    f = objective(p)
    opt = gx.trust_exact()

    @jax.jit
    def step(x, state):
        updates, state = opt.update(jax.grad(f)(x), state, x, value=f(x), value_fn=f)
        return gx.apply_updates(x, updates), state

    def run(x, state, count):
        for _ in range(count):
            x, state = step(x, state)
        return x, state

    x0 = jnp.asarray(p.x0)
    x, state = run(x0, opt.init(x0), 12)
    ref = _scipy_solve(p, "trust-exact", maxiter=12)
    assert ref.nit == 12 and ref.njev < 12  # rejected trials (no new gradient there)
    np.testing.assert_allclose(np.asarray(x), ref.x, rtol=1e-12, atol=1e-14)
    x_mid, state_mid = run(x0, opt.init(x0), 5)
    saved = jax.tree.map(np.asarray, (x_mid, state_mid))  # e.g. a checkpoint on disk
    x_resumed, state_resumed = run(*jax.tree.map(jnp.asarray, saved), 7)
    assert np.array_equal(np.asarray(x_resumed), np.asarray(x))
    for a, b in zip(jax.tree.leaves(state_resumed), jax.tree.leaves(state)):
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_the_transform_in_float32_keeps_the_dtype_and_converges():
    """A convex quadratic plus a quartic in float32 (x64 off): every update and state leaf
    stays float32 and 12 updates reach the minimiser (from the dense float64 Newton solve
    of the gradient equation)."""
    rng = np.random.default_rng(2)
    A = rng.normal(size=(4, 4))
    A = A @ A.T / 4 + np.eye(4)
    b = rng.normal(size=4) * 3

    def f(x):
        return (
            0.5 * x @ (jnp.asarray(A, x.dtype) @ x)
            - jnp.asarray(b, x.dtype) @ x
            + 0.05 * jnp.sum(x**4)
        )

    opt = gx.trust_exact()

    @jax.jit
    def step(x, state):
        updates, state = opt.update(jax.grad(f)(x), state, x, value=f(x), value_fn=f)
        return gx.apply_updates(x, updates), state, updates

    x = jnp.zeros(4, jnp.float32)
    state = opt.init(x)
    for _ in range(12):
        x, state, updates = step(x, state)
    assert x.dtype == updates.dtype == jnp.float32
    floats = [a for a in jax.tree.leaves(state) if jnp.issubdtype(a.dtype, jnp.floating)]
    assert floats and all(a.dtype == jnp.float32 for a in floats)
    ref = np.zeros(4)  # Newton's method on the gradient in float64 (strictly convex)
    for _ in range(50):
        grad = A @ ref - b + 0.2 * ref**3
        ref -= np.linalg.solve(A + np.diag(0.6 * ref**2), grad)
    np.testing.assert_allclose(np.asarray(x), ref, rtol=1e-4, atol=1e-5)


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
    with pytest.raises(ValueError, match="subproblem must be one of 'more-sorensen', 'exact'"):
        trust_region.exact_method("moresorensen")
