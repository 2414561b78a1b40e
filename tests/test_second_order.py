"""Second-order methods against dense linear algebra, textbook formulas and scipy."""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.optimize

import gradxform as gx
from gradxform.second_order import directions as dirs
from gradxform.second_order._packed import packed_while_loop
from gradxform.second_order.linesearch import Point, zoom_search
from tests import references
from tests.references import rosenbrock

METHODS = ["lbfgs", "bfgs", "newton", "newton-cg"]


pytestmark = pytest.mark.usefixtures("x64")  # float64 throughout (tests/conftest.py)


RNG = np.random.default_rng(0)
Q = np.linalg.qr(RNG.normal(size=(6, 6)))[0]
A = Q @ np.diag([1.0, 2.0, 5.0, 10.0, 50.0, 100.0]) @ Q.T  # SPD, condition number 100
B = RNG.normal(size=6)


def quadratic(x):
    return 0.5 * x @ (jnp.asarray(A) @ x) - jnp.asarray(B) @ x


@pytest.mark.slow
def test_newton_solves_a_strongly_convex_quadratic_in_one_step():
    sol = gx.minimize(quadratic, jnp.zeros(6), method="newton", tol=1e-10)
    assert sol.success and int(sol.iterations) == 1
    np.testing.assert_allclose(sol.params, np.linalg.solve(A, B), rtol=1e-10)


@pytest.mark.parametrize(
    "spectrum",
    [
        [1.0, 2.0, 5.0, 10.0, 50.0, 100.0],
        [-3.0, -0.5, 1.0, 2.0, 4.0, 8.0],
        [0.0, 1e-12, 1, 2, 3, 4],
    ],
    ids=["positive-definite", "indefinite", "singular"],
)
def test_newton_direction_matches_its_dense_definition(spectrum):
    lam = np.asarray(spectrum)
    H = Q @ np.diag(lam) @ Q.T
    H = (H + H.T) / 2
    d, lam_min, negative, modified = dirs.newton_direction(jnp.asarray(H), jnp.asarray(B))
    if lam.min() > 0:  # the Cholesky path: the exact Newton step
        np.testing.assert_allclose(d, -np.linalg.solve(H, B), rtol=1e-10)
        assert not negative and not modified and float(lam_min) > 0
        return
    assert modified
    w, V = np.linalg.eigh(H)
    delta = np.sqrt(np.finfo(np.float64).eps) * np.abs(w).max()
    coeffs = V.T @ B
    expected = -V @ (coeffs / np.maximum(np.abs(w), delta))
    if w[0] < -delta:  # plus the eigenvector of lam_min, signed downhill, as long as that step
        expected = expected - np.sign(coeffs[0]) * np.linalg.norm(expected) * V[:, 0]
    np.testing.assert_allclose(d, expected, rtol=1e-8, atol=1e-8)
    assert bool(negative) == (w[0] < -delta)
    np.testing.assert_allclose(float(lam_min), w[0], atol=1e-12)
    assert float(jnp.vdot(d, jnp.asarray(B))) < 0  # a descent direction


@pytest.mark.slow
def test_bfgs_with_exact_line_search_ends_a_quadratic_in_at_most_n_steps():
    sol = gx.minimize(quadratic, jnp.ones(6), method="bfgs", tol=1e-9, c1=1e-10, c2=1e-8)
    assert sol.success and int(sol.iterations) <= 6
    np.testing.assert_allclose(sol.params, np.linalg.solve(A, B), rtol=1e-7)


def test_bfgs_update_equals_the_textbook_product_form():
    n = 5
    H = np.eye(n) + 0.1 * np.diag(np.arange(n))
    s = RNG.normal(size=n)
    y = A[:5, :5] @ s
    want = references.bfgs_inverse_update(H, s, y)
    got = dirs.bfgs_inverse_update(jnp.asarray(H), jnp.asarray(s), jnp.asarray(y))
    np.testing.assert_allclose(got, want, rtol=1e-12)
    # and the update makes H satisfy the secant equation H y = s
    np.testing.assert_allclose(got @ y, s, rtol=1e-10)
    # the first update with initial scaling starts from (s.y / y.y) I (N&W eq. 6.20)
    scaled = references.bfgs_inverse_update((s @ y) / (y @ y) * np.eye(n), s, y)
    for first in (True, jnp.array(True)):
        got = dirs.bfgs_inverse_update(jnp.asarray(H), jnp.asarray(s), jnp.asarray(y), first)
        np.testing.assert_allclose(got, scaled, rtol=1e-12)


@pytest.mark.slow
def test_bfgs_initial_scaling_option_solves_and_the_transform_follows_it():
    sol = gx.minimize(quadratic, jnp.ones(6), method="bfgs", tol=1e-9, initial_scaling=True)
    plain = gx.minimize(quadratic, jnp.ones(6), method="bfgs", tol=1e-9)
    assert sol.success and plain.success
    np.testing.assert_allclose(sol.params, np.linalg.solve(A, B), rtol=1e-7)
    assert int(sol.num_fun_evals) != int(plain.num_fun_evals)  # the option is live
    k = int(sol.iterations)
    opt, x = gx.bfgs(initial_scaling=True), jnp.ones(6)
    state = opt.init(x)
    value_and_grad = optax.value_and_grad_from_state(quadratic)
    step = jax.jit(lambda x, s: _step(opt, quadratic, value_and_grad, x, s))
    for _ in range(k):
        x, state, _ = step(x, state)
    np.testing.assert_allclose(x, sol.params, rtol=1e-10)


@pytest.mark.slow
def test_zoom_search_meets_strong_wolfe_on_a_hard_1d_function():
    # phi(t) = f(x + t d) with many wiggles; the search must bracket and zoom
    def f(x):
        return jnp.sum(-x + 0.1 * jnp.sin(20 * x) + 0.5 * x**2)

    vg = jax.value_and_grad(f)
    x = jnp.zeros(1)
    f0, g0 = vg(x)
    d = -g0
    # one compilation, c2 a runtime value (eager, each c2 compiled the search's loops anew)
    search = jax.jit(lambda p, d, c2: zoom_search(vg, p, d, c1=1e-4, c2=c2, max_steps=40))
    for c2 in (0.9, 0.1, 0.01):
        res = search(Point(x, f0, g0), d, c2)
        assert bool(res.wolfe)
        ft, gt = vg(x + res.step * d)
        assert ft <= f0 + 1e-4 * res.step * (g0 @ d)
        assert abs(gt @ d) <= c2 * abs(g0 @ d)


@pytest.mark.slow
@pytest.mark.parametrize(
    "alias",
    ["lbfgs", *(pytest.param(a, marks=pytest.mark.slow) for a in ("bfgs", "newton", "newton_cg"))],
)
def test_training_loop_alias_takes_strong_wolfe_steps_and_converges(alias):
    opt = getattr(gx, alias)()
    params = {"a": jnp.array([-1.2, 1.0]), "b": jnp.array([-1.2, 1.0])}

    def f(p):
        return rosenbrock(p["a"]) + rosenbrock(p["b"])

    state = opt.init(params)
    value_and_grad = optax.value_and_grad_from_state(f)
    step = jax.jit(lambda p, s: _step(opt, f, value_and_grad, p, s))

    # the Wolfe quantities, from f's own gradient, in one jitted call: evaluated eagerly,
    # value_and_grad_from_state's cond compiled anew at every step (0.8 s a step)
    @jax.jit
    def wolfe_terms(params, state, new_params, u):
        value, grad = value_and_grad(params, state=state)
        new_value, new_grad = jax.value_and_grad(f)(new_params)
        return value, _dot(grad, u), new_value, _dot(new_grad, u), optax.tree.norm(new_grad)

    for _ in range(100):
        new_params, new_state, u = step(params, state)
        value, slope, new_value, new_slope, new_grad_norm = wolfe_terms(
            params, state, new_params, u
        )
        assert float(new_value) <= float(value) + 1e-4 * float(slope) + 1e-15  # Armijo
        assert abs(float(new_slope)) <= 0.9 * abs(float(slope)) + 1e-15  # curvature
        params, state = new_params, new_state
        if float(new_grad_norm) < 1e-8:
            break
    np.testing.assert_allclose(jax.flatten_util.ravel_pytree(params)[0], np.ones(4), atol=1e-6)


def _dot(a, b):
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _step(opt, f, value_and_grad, params, state):
    value, grad = value_and_grad(params, state=state)
    updates, state = opt.update(grad, state, params, value=value, grad=grad, value_fn=f)
    return gx.apply_updates(params, updates), state, updates


def logistic(x):
    """L2-regularised logistic regression on a small fixed data set (20 x 5)."""
    rng = np.random.default_rng(3)
    X = jnp.asarray(rng.normal(size=(20, 5)))
    y = jnp.asarray((rng.normal(size=20) > 0).astype(float))
    z = X @ x[:5] + x[5]
    return jnp.mean(jnp.logaddexp(0, z) - y * z) + 1e-3 * jnp.sum(x**2)


PROBLEMS = {
    "rosenbrock_2d": (rosenbrock, np.array([-1.2, 1.0])),
    "rosenbrock_10": (rosenbrock, np.tile([-1.2, 1.0], 5)),
    "quadratic_6": (quadratic, np.ones(6)),
    "logistic_6": (logistic, np.zeros(6)),
}


@functools.cache
def scipy_reference(problem):
    """scipy's BFGS on ``problem``, once per problem (every method's row compares to it)."""
    fun, x0 = PROBLEMS[problem]
    return scipy.optimize.minimize(
        lambda x: float(fun(jnp.asarray(x))),
        x0,
        jac=lambda x: np.asarray(jax.grad(fun)(jnp.asarray(x))),
        method="BFGS",
        tol=1e-12,
    )


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("problem", sorted(PROBLEMS))
def test_matches_scipy(problem, method):
    fun, x0 = PROBLEMS[problem]
    ref = scipy_reference(problem)
    sol = gx.minimize(fun, jnp.asarray(x0), method=method, tol=1e-9, maxiter=1000)
    assert sol.success, sol.message
    np.testing.assert_allclose(sol.params, ref.x, atol=1e-6)
    np.testing.assert_allclose(sol.value, ref.fun, rtol=1e-10, atol=1e-14)


def four_wells(p):
    """A maximum at (0, 0), saddles at (+-1, 0) and (0, +-sqrt(2)), minima at (+-1, +-sqrt(2)).

    At module level, so that every start below reuses one compiled solver.
    """
    x, y = p
    return x**4 / 4 - x**2 / 2 - y**2 + y**4 / 4


@pytest.mark.slow
@pytest.mark.parametrize("start", [[0.0, 0.0], [0.0, 1e-9], [1.0, 0.0], [0.0, 2**0.5], [1e-3, 0.0]])
def test_newton_leaves_saddles_and_maxima_for_a_true_minimum(start):
    # every start sits on or next to a maximum or saddle of four_wells, where plain
    # Newton (which solves grad = 0) would stay
    f = four_wells
    sol = gx.minimize(f, jnp.asarray(start), method="newton", tol=1e-10)
    assert sol.success, sol.message
    eig = np.linalg.eigvalsh(np.asarray(jax.hessian(f)(sol.params)))
    assert eig.min() > 0
    assert float(sol.value) < float(f(jnp.asarray(start)))


@pytest.mark.slow
def test_newton_leaves_a_maximum():
    def f(x):
        return -jnp.sum(x**2) + jnp.sum(x**2) ** 2  # maximum at 0, minima on the sphere |x|^2 = 1/2

    sol = gx.minimize(f, jnp.zeros(3), method="newton")
    assert sol.success
    np.testing.assert_allclose(jnp.sum(sol.params**2), 0.5, rtol=1e-8)


@pytest.mark.slow
def test_pytree_params_and_vmap_over_starting_points():
    def f(p):
        return rosenbrock(p["x"]) + jnp.sum((p["w"] - 2.0) ** 2)

    starts = {"x": jnp.array([[-1.2, 1.0], [0.5, 0.5], [2.0, 3.0]]), "w": jnp.zeros((3, 2, 2))}
    batched = jax.vmap(lambda p: gx.minimize(f, p, tol=1e-10))(starts)
    assert batched.status.shape == (3,) and bool(jnp.all(batched.success))
    for i in range(3):
        single = gx.minimize(f, jax.tree.map(lambda a, i=i: a[i], starts), tol=1e-10)
        np.testing.assert_allclose(batched.params["x"][i], single.params["x"], rtol=1e-10)
    np.testing.assert_allclose(batched.params["w"], 2.0, rtol=1e-8)
    assert batched.message == [gx.second_order.minimize.MESSAGES[gx.Status.SUCCESS]] * 3


@pytest.mark.slow
def test_nan_objective_is_a_status_not_a_hang():
    sol = gx.minimize(lambda x: jnp.sum(x) * jnp.nan, jnp.ones(2))
    assert int(sol.status) == gx.Status.NONFINITE and int(sol.iterations) == 0
    # NaN away from the start: the line search steps back, and the solve still succeeds
    sol = gx.minimize(lambda x: jnp.sum(x - jnp.log(x)), jnp.full(3, 5.0), tol=1e-10)
    assert sol.success
    np.testing.assert_allclose(sol.params, 1.0, rtol=1e-8)


def test_nan_start_counts_no_hessian_for_newton():
    sol = gx.minimize(lambda x: jnp.sum(x**2) * jnp.nan, jnp.ones(3), method="newton")
    assert int(sol.status) == gx.Status.NONFINITE
    assert (int(sol.iterations), int(sol.num_hess_evals)) == (0, 0)


def test_packed_while_loop_equals_lax_while_loop():
    """Mixed scalar dtypes, arrays and a NamedTuple carry, also under vmap."""

    class State(NamedTuple):
        t: jax.Array
        flag: jax.Array
        v: jax.Array

    def run(loop, x):
        def body(c):
            k, s, w = c
            t = 0.5 * s.t + jnp.sum(s.v) * 1e-3
            state = State(t, s.flag ^ (k % 3 == 0), jnp.sin(s.v) + t)
            return k + 1, state, w.astype(jnp.float32) * 1.5

        state = State(x, jnp.array(False), jnp.arange(4.0) + x)
        init = (jnp.int32(0), state, jnp.ones(2, jnp.float32))
        return loop(lambda c: (c[0] < 7) & (c[1].t > -1), body, init)

    for x in (0.3, jnp.array([0.3, -2.0, 5.0])):
        batch = jax.vmap if jnp.ndim(x) else (lambda f: f)
        ours = batch(functools.partial(run, packed_while_loop))(x)
        ref = batch(functools.partial(run, jax.lax.while_loop))(x)
        assert jax.tree.structure(ours) == jax.tree.structure(ref)
        for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(ref)):
            assert a.dtype == b.dtype and a.shape == b.shape
            np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_maxiter_is_a_status_and_history_is_recorded():
    sol = gx.minimize(rosenbrock, jnp.array([-1.2, 1.0]), maxiter=5, history=True)
    assert int(sol.status) == gx.Status.MAXITER and int(sol.iterations) == 5
    assert "maximum number of iterations" in sol.message
    values = np.asarray(sol.history.value)
    assert values.shape == (6,) and np.all(np.diff(values) < 0)
    np.testing.assert_allclose(values[-1], sol.value)


@pytest.mark.slow
def test_tol_is_honoured():
    loose = gx.minimize(rosenbrock, jnp.array([-1.2, 1.0]), tol=1e-2)
    tight = gx.minimize(rosenbrock, jnp.array([-1.2, 1.0]), tol=1e-10)
    g0 = float(jnp.linalg.norm(jax.grad(rosenbrock)(jnp.array([-1.2, 1.0]))))
    assert loose.success and tight.success
    assert float(loose.grad_norm) <= 1e-2 * g0
    assert float(tight.grad_norm) <= 1e-10 * g0
    assert int(loose.iterations) < int(tight.iterations)


@pytest.mark.slow
def test_stagnation_at_float32_resolution_is_a_status_not_maxiter():
    with jax.enable_x64(False):
        # tol far below what float32 can resolve on an ill-conditioned quadratic
        A32, B32 = jnp.asarray(A, jnp.float32), jnp.asarray(B, jnp.float32)

        def quadratic32(x):
            return 0.5 * x @ (A32 @ x) - B32 @ x

        x0 = jnp.ones(6, jnp.float32)
        for method in METHODS:
            sol = gx.minimize(quadratic32, x0, method=method, tol=1e-12, maxiter=1000)
            # at the resolution limit: stalled, or no decreasing point left for the line search
            allowed = (gx.Status.SUCCESS, gx.Status.STALLED, gx.Status.LINESEARCH_FAILED)
            assert int(sol.status) in allowed, (method, sol.message)
            assert int(sol.iterations) < 1000
            np.testing.assert_allclose(sol.params, np.linalg.solve(A, B), rtol=1e-3, atol=1e-4)


def test_float32_converges():
    with jax.enable_x64(False):
        sol = gx.minimize(rosenbrock, jnp.tile(jnp.array([-1.2, 1.0], jnp.float32), 5), tol=1e-6)
        assert sol.success and sol.params.dtype == jnp.float32
        np.testing.assert_allclose(sol.params, 1.0, atol=1e-3)


@pytest.mark.slow
def test_float64_accumulation_keeps_float32_params_and_solves():
    # extended Rosenbrock (50 copies of the 2-D problem) from its symmetric start. scipy
    # BFGS keeps its model in float64 around a float32 objective; with the same
    # arrangement gx keeps float32 params and ends at the minimizer (1, ..., 1) in no
    # more evaluations than an all-float64 solve takes (1.25x: the paths differ by
    # rounding), and BFGS in far fewer than with its model in float32. The counts
    # depend on how rounding breaks the copies' symmetry, so on the CPU's kernels:
    # measured on a Xeon VM, BFGS 72 (float64: 227, float32 model: 175), L-BFGS 39
    # (43, 44); 2-D BFGS alone takes 38.
    x0 = jnp.tile(jnp.array([-1.2, 1.0], jnp.float32), 50)
    for method in ("bfgs", "lbfgs"):
        sol = gx.minimize(rosenbrock, x0, method=method, tol=1e-5, float64_accumulation=True)
        assert sol.success and sol.params.dtype == jnp.float32, (method, sol.message)
        np.testing.assert_allclose(sol.params, 1.0, atol=1e-3)
        f64 = gx.minimize(rosenbrock, x0.astype(jnp.float64), method=method, tol=1e-5)
        evals = (int(sol.num_grad_evals), int(f64.num_grad_evals))
        assert f64.success and evals[0] <= 1.25 * evals[1], (method, evals)
        if method == "bfgs":
            f32 = gx.minimize(rosenbrock, x0, method=method, tol=1e-5)
            assert 1.5 * evals[0] < int(f32.num_grad_evals), (evals, int(f32.num_grad_evals))
    with jax.enable_x64(False), pytest.raises(ValueError, match="float64_accumulation"):
        gx.minimize(rosenbrock, x0, method="bfgs", float64_accumulation=True)


@pytest.mark.slow
def test_first_overshoot_is_interpolated_not_halved():
    # a quadratic along the line, the first trial 50x past the minimizer t* = 1:
    # the cubic through (0, f0, f0') and the overshoot is the quadratic itself
    def value_and_grad(x):
        return 0.5 * jnp.sum(x**2), x

    x, d = jnp.array([1.0, -2.0]), jnp.array([-1.0, 2.0])
    f0, g0 = value_and_grad(x)

    # one compilation, the option a runtime value (it may be traced); eager, each call
    # compiled the search's loops anew
    @jax.jit
    def search(interpolate):
        return zoom_search(
            value_and_grad,
            Point(x, f0, g0),
            d,
            initial_step=50.0,
            interpolate_first_overshoot=interpolate,
        )

    default = zoom_search(value_and_grad, Point(x, f0, g0), d, initial_step=50.0)
    for interpolate, most in ((True, 2), (False, 10)):
        ls = search(interpolate)
        assert bool(ls.wolfe) and int(ls.num_evals) <= most
        if interpolate:
            np.testing.assert_allclose(ls.step, 1.0, rtol=1e-12)
            assert int(ls.num_evals) < int(default.num_evals)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (
            lambda: gx.minimize(lambda x: x, jnp.ones(2)),
            ValueError,
            r"fun\(params\) must be a real floating scalar",
        ),
        (lambda: gx.minimize(jnp.sum, jnp.arange(3)), TypeError, "x0 must hold real floating"),
        (lambda: gx.minimize(jnp.sum, jnp.ones(2), memory_size=0), ValueError, "memory_size"),
        (lambda: gx.minimize(jnp.sum, jnp.ones(2), tol=-1.0), ValueError, "tol must be"),
        (lambda: gx.minimize(jnp.sum, jnp.ones(2), maxiter=-1), ValueError, "maxiter"),
        (lambda: gx.minimize(jnp.sum, jnp.ones(2), maxiter=0), ValueError, "maxiter must be"),
        (lambda: gx.minimize(jnp.sum, jnp.ones(2), tol=0.0), ValueError, "tol must be"),
        (lambda: gx.minimize(jnp.sum, jnp.ones(2), tol=float("nan")), ValueError, "tol must"),
        (lambda: gx.minimize(jnp.sum, jnp.ones(2), method="cg"), ValueError, "method must be"),
        (lambda: gx.minimize(jnp.sum, {}), ValueError, "x0 must hold at least one"),
        (lambda: gx.lbfgs(0), ValueError, "memory_size"),
        (
            lambda: gx.minimize(jnp.sum, jnp.ones(2), max_linesearch_steps=0),
            ValueError,
            "max_linesearch_steps must be",
        ),
        (lambda: gx.scale_by_zoom_linesearch(c1=0.5, c2=0.4), ValueError, "c2 must be"),
        (lambda: gx.lbfgs(linesearch=gx.ZoomLinesearch(c1=1.5)), ValueError, "c1 must be"),
        (lambda: gx.newton(linesearch="zoom"), TypeError, "linesearch must be a gx.ZoomLinesearch"),
        (lambda: gx.bfgs(initial_scaling=1), TypeError, "initial_scaling must be True or False"),
        (
            lambda: gx.newton(linesearch=gx.ZoomLinesearch(max_steps=True)),
            TypeError,
            "max_steps must be an integer",
        ),
        (lambda: gx.newton_cg(0), ValueError, "max_cg_steps must be"),
        (
            lambda: gx.bfgs(linesearch=gx.ZoomLinesearch(initial_step=0.0)),
            ValueError,
            "initial_step must be",
        ),
        (
            lambda: gx.scale_by_backtracking_linesearch(decrease_factor=1.0),
            ValueError,
            "decrease_factor must be",
        ),
        (lambda: gx.minimize(jnp.sum, jnp.ones(2), c1=0.9, c2=0.5), ValueError, "c2 must be"),
    ],
)
def test_bad_input_is_a_clear_error(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_linesearch_transform_needs_value_fn():
    opt = gx.lbfgs()
    params = jnp.ones(2)
    with pytest.raises(ValueError, match="value_fn"):
        opt.update(params, opt.init(params), params)


@pytest.mark.slow
def test_newton_cg_step_meets_the_truncation_rule():
    """Truncated CG stops once |A d + g| <= min(0.5, sqrt|g|) |g| (N&W Alg. 7.1)."""
    for x in (jnp.zeros(6), jnp.asarray(np.linalg.solve(A, B)) + 1e-3):
        g = jax.grad(quadratic)(x)
        d, used = dirs.newton_cg_direction(lambda v: jnp.asarray(A) @ v, g, 10)
        gnorm = float(jnp.linalg.norm(g))
        assert float(jnp.linalg.norm(A @ d + g)) <= min(0.5, gnorm**0.5) * gnorm
        assert 1 <= int(used) <= 6  # CG on a 6x6 SPD system: at most 6 products
    # a pytree gradient gives the same direction, leaf by leaf
    g = jax.grad(quadratic)(jnp.zeros(6))
    tree_g = {"a": g[:2], "b": g[2:]}

    def hvp(v):
        flat = jnp.asarray(A) @ jnp.concatenate([v["a"], v["b"]])
        return {"a": flat[:2], "b": flat[2:]}

    d_tree, _ = dirs.newton_cg_direction(hvp, tree_g, 10)
    d_flat, _ = dirs.newton_cg_direction(lambda v: jnp.asarray(A) @ v, g, 10)
    np.testing.assert_allclose(jnp.concatenate([d_tree["a"], d_tree["b"]]), d_flat, rtol=1e-12)
