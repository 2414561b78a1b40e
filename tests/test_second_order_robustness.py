"""Second-order transforms wherever the first-order ones work (issue #14, item 8).

Each defect found on main has a reproduction here. Oracles: optax.lbfgs (the
badly scaled quadratic), the same run in the objective's precision (mixed
precision), the same run on stacked real and imaginary parts (complex), the
same run with the data bound by hand (extra arguments), init on concrete
zeros (abstract init), and the method's own rule (restart).

Newton and Newton-CG on hard problems (issue #15, item 15): closed-form minimisers
(an ill-conditioned quadratic, Brown's badly scaled function), scipy's trust-exact and
Newton-CG (values, evaluation and product counts), and a host-side count of the Hessians
actually computed.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.optimize

import gradxform as gx
from gradxform import curvature
from gradxform.second_order import directions, methods
from tests.references import boundary_value, boundary_value_start, brown_badly_scaled, chebyquad


def run(opt, f, x, steps, conjugate=False, **extra):
    """``steps`` jitted updates; returns the iterates and the number of compilations."""

    @jax.jit
    def step(x, state):
        value, grad = jax.value_and_grad(f)(x, **extra)
        updates = jax.tree.map(jnp.conj, grad) if conjugate else grad
        updates, state = opt.update(updates, state, x, value=value, grad=grad, value_fn=f, **extra)
        return gx.apply_updates(x, updates), state

    state, xs = opt.init(x), []
    for _ in range(steps):
        x, state = step(x, state)
        xs.append(x)
    return xs, state, step._cache_size()


# --- a failed first search no longer freezes L-BFGS -----------------------------------


def steep(x):
    return 1e10 * jnp.sum(x**2)


@pytest.mark.slow
def test_lbfgs_reaches_the_minimum_of_a_badly_scaled_quadratic():
    xs, _, _ = run(gx.lbfgs(), steep, jnp.ones(2), 50)
    oracle, _, _ = run(optax.lbfgs(), steep, jnp.ones(2), 50)  # optax reaches it too
    assert float(jnp.max(jnp.abs(oracle[-1]))) < 1e-6
    assert float(jnp.max(jnp.abs(xs[-1]))) < 1e-6
    # the first step is the capped steepest-descent trial min(1, 1/|g|) g, accepted as is
    g = jax.grad(steep)(jnp.ones(2))
    np.testing.assert_allclose(xs[0], jnp.ones(2) - g / jnp.linalg.norm(g), rtol=1e-6)


@pytest.mark.parametrize("name", ["bfgs", "newton", "newton_cg"])
def test_every_method_reaches_the_minimum_of_the_badly_scaled_quadratic(name):
    xs, _, _ = run(getattr(gx, name)(), steep, jnp.ones(2), 20)
    assert float(jnp.max(jnp.abs(xs[-1]))) < 1e-6, name


def test_a_failed_search_resets_the_model_and_retries_from_steepest_descent():
    """The restart rule: a search that finds no decrease with a model empties it; the
    next update is the capped steepest-descent step. The trial step is changed through
    the state (set_hyperparams), without recompiling the step."""
    weights = jnp.array([1.0, 2.0, 5.0, 10.0])

    def f(x):
        return 0.5 * jnp.sum(weights * x**2)

    opt = gx.lbfgs(linesearch=gx.ZoomLinesearch(max_steps=1))
    x, state = 10 * jnp.ones(4), None

    @jax.jit
    def step(x, state):
        value, grad = jax.value_and_grad(f)(x)
        updates, state = opt.update(grad, state, x, value=value, grad=grad, value_fn=f)
        return gx.apply_updates(x, updates), state

    state = opt.init(x)
    for _ in range(3):
        x, state = step(x, state)
    assert int(state[0].model.num_pairs) > 0
    state = gx.set_hyperparams(state, initial_step=1e6)  # a first trial far past the minimum
    stuck, state = step(x, state)
    np.testing.assert_array_equal(stuck, x)  # the one trial failed: no move
    assert int(state[0].model.num_pairs) == 0  # and the memory is empty
    moved, state = step(stuck, state)
    g = jax.grad(f)(stuck)
    np.testing.assert_allclose(moved, stuck - g / jnp.linalg.norm(g), rtol=1e-6)
    assert step._cache_size() == 1


@pytest.mark.parametrize("make", [methods.lbfgs_method, methods.bfgs_method])
def test_quasi_newton_restart_rule(make):
    method = make()
    model = method.init(jnp.zeros(3))
    s, y = jnp.array([1.0, 0.0, 0.5]), jnp.array([2.0, 0.1, 1.0])
    used = method.update(model, s, y)
    assert not bool(method.is_fresh(used))
    reset, restarted = method.restart(used, jnp.array(True))
    assert bool(restarted) and bool(method.is_fresh(reset))
    kept, restarted = method.restart(used, jnp.array(False))
    assert not bool(restarted)
    jax.tree.map(np.testing.assert_array_equal, kept, used)
    _, restarted = method.restart(model, jnp.array(True))  # a fresh model's failure is final
    assert not bool(restarted)


# --- mixed precision ------------------------------------------------------------------


TARGET = np.array([1.5, -0.75, 0.25])


def loss32(p):
    p = p.astype(jnp.float32)
    return jnp.sum((p - TARGET) ** 2) + 0.1 * jnp.sum(p**4)


LINESEARCH_OPTIMIZERS = {
    "lbfgs": lambda: gx.lbfgs(),
    "zoom": lambda: gx.chain(gx.scale_by_learning_rate(0.3), gx.scale_by_zoom_linesearch()),
    "backtracking": lambda: gx.chain(
        gx.scale_by_learning_rate(0.3), gx.scale_by_backtracking_linesearch()
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(LINESEARCH_OPTIMIZERS))
def test_bfloat16_params_with_a_float32_loss(name):
    opt = LINESEARCH_OPTIMIZERS[name]()
    x0 = jnp.zeros(3, jnp.bfloat16)
    xs, state, compiles = run(opt, loss32, x0, 15)
    assert xs[-1].dtype == jnp.bfloat16 and compiles == 1
    assert jax.tree.structure(state) == jax.tree.structure(opt.init(x0))
    want, _, _ = run(LINESEARCH_OPTIMIZERS[name](), loss32, jnp.zeros(3, jnp.float32), 15)
    np.testing.assert_allclose(np.asarray(xs[-1], np.float32), want[-1], atol=3e-2)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(LINESEARCH_OPTIMIZERS))
def test_float32_params_with_a_float64_loss(name):
    with jax.enable_x64(True):

        def loss64(p):  # the same loss, evaluated in float64
            p = p.astype(jnp.float64)
            return jnp.sum((p - TARGET) ** 2) + 0.1 * jnp.sum(p**4)

        opt = LINESEARCH_OPTIMIZERS[name]()
        xs, state, compiles = run(opt, loss64, jnp.zeros(3, jnp.float32), 15)
        assert xs[-1].dtype == jnp.float32 and compiles == 1
        want, _, _ = run(LINESEARCH_OPTIMIZERS[name](), loss32, jnp.zeros(3, jnp.float32), 15)
        np.testing.assert_allclose(xs[-1], want[-1], rtol=1e-5, atol=1e-6)


# --- complex parameters ---------------------------------------------------------------


RNG = np.random.default_rng(0)
_M = RNG.normal(size=(4, 4)) + 1j * RNG.normal(size=(4, 4))
HERMITIAN = jnp.asarray(_M.conj().T @ _M / 4 + np.eye(4), jnp.complex64)
OFFSET = jnp.asarray(RNG.normal(size=4) + 1j * RNG.normal(size=4), jnp.complex64)
Z0 = jnp.asarray(RNG.normal(size=4) + 1j * RNG.normal(size=4), jnp.complex64)


def complex_loss(z):
    quadratic = jnp.real(jnp.vdot(z, HERMITIAN @ z)) / 2 - jnp.real(jnp.vdot(OFFSET, z))
    return quadratic + 0.1 * jnp.sum(jnp.abs(z) ** 4)


def stacked_loss(r):
    return complex_loss(r[0] + 1j * r[1])


COMPLEX_OPTIMIZERS = {
    "lbfgs": lambda: gx.lbfgs(),
    "zoom": lambda: gx.chain(gx.scale_by_learning_rate(0.5), gx.scale_by_zoom_linesearch()),
    "backtracking": lambda: gx.chain(
        gx.scale_by_learning_rate(2.0), gx.scale_by_backtracking_linesearch()
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(COMPLEX_OPTIMIZERS))
def test_complex_run_equals_the_run_on_stacked_real_and_imaginary_parts(name):
    """C^n is R^2n: L-BFGS's inner products are Re<s, y>, step sizes stay real. The
    gradient passed is conj(jax.grad), optax's convention for complex updates."""
    zs, _, _ = run(COMPLEX_OPTIMIZERS[name](), complex_loss, Z0, 20, conjugate=True)
    rs, _, _ = run(COMPLEX_OPTIMIZERS[name](), stacked_loss, jnp.stack([Z0.real, Z0.imag]), 20)
    # the sums of Re<a, b> run in another order than the stacked ones (float32 rounding);
    # once f is at its float32 resolution (after ~8 steps) the zoom's approximate-Wolfe
    # test decides on that rounding, so its points are compared while f still decreases
    compared = 6 if name == "zoom" else 20
    for z, r in zip(zs[:compared], rs[:compared]):
        assert z.dtype == jnp.complex64
        np.testing.assert_allclose(z.real, r[0], atol=1e-6)
        np.testing.assert_allclose(z.imag, r[1], atol=1e-6)
    for z, r in zip(zs, rs):
        np.testing.assert_allclose(complex_loss(z), stacked_loss(r), rtol=1e-6, atol=1e-6)
    assert float(complex_loss(zs[-1])) < float(complex_loss(Z0)) - 1


# --- extra arguments reach value_fn ---------------------------------------------------


X = jnp.asarray(RNG.normal(size=(12, 3)), jnp.float32)
Y = X @ jnp.array([1.0, -2.0, 0.5]) + 0.1


def batch_loss(w, batch):
    inputs, targets = batch
    return jnp.mean((inputs @ w - targets) ** 2)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(LINESEARCH_OPTIMIZERS))
def test_extra_update_arguments_reach_value_fn(name):
    """A data batch passed to update as batch=... reaches value_fn(params, batch=...), as
    in optax; an extra argument value_fn does not name is not passed on."""
    batch = (X, Y)
    got, _, _ = run(LINESEARCH_OPTIMIZERS[name](), batch_loss, jnp.zeros(3), 8, batch=batch)
    bound = functools.partial(batch_loss, batch=batch)
    want, _, _ = run(LINESEARCH_OPTIMIZERS[name](), bound, jnp.zeros(3), 8)
    np.testing.assert_array_equal(got[-1], want[-1])
    opt = LINESEARCH_OPTIMIZERS[name]()
    x = jnp.zeros(3)
    value, grad = jax.value_and_grad(bound)(x)
    updates, _ = opt.update(grad, opt.init(x), x, value=value, grad=grad, value_fn=bound, rng=1)
    assert np.all(np.isfinite(np.asarray(updates)))


# --- abstract init ----------------------------------------------------------------------


ABSTRACT = {
    "w": jax.ShapeDtypeStruct((3, 2), jnp.float32),
    "b": jax.ShapeDtypeStruct((2,), jnp.float32),
}
TRANSFORMS = {
    "scale_by_lbfgs": lambda: gx.scale_by_lbfgs(4),
    "scale_by_bfgs": gx.scale_by_bfgs,
    "scale_by_newton": gx.scale_by_newton,
    "scale_by_newton_cg": gx.scale_by_newton_cg,
    "scale_by_zoom_linesearch": gx.scale_by_zoom_linesearch,
    "scale_by_backtracking_linesearch": gx.scale_by_backtracking_linesearch,
}


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_init_on_shape_dtype_structs_equals_init_on_zeros(name):
    tx = TRANSFORMS[name]()
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), ABSTRACT)
    got, want = tx.init(ABSTRACT), tx.init(zeros)
    assert jax.tree.structure(got) == jax.tree.structure(want)
    jax.tree.map(np.testing.assert_array_equal, got, want)
    shapes = jax.eval_shape(tx.init, ABSTRACT)
    assert jax.tree.map(lambda a: (a.shape, a.dtype), shapes) == jax.tree.map(
        lambda a: (a.shape, a.dtype), want
    )


@pytest.mark.parametrize("name", ["lbfgs", "bfgs", "newton", "newton_cg"])
def test_alias_init_on_shape_dtype_structs_works_or_names_the_leaf(name):
    tx = getattr(gx, name)()
    try:
        state = tx.init(ABSTRACT)
    except TypeError as error:  # the learning-rate part may refuse abstract leaves
        assert "['b']" in str(error) or "['w']" in str(error), error
    else:
        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), ABSTRACT)
        jax.tree.map(np.testing.assert_array_equal, state, tx.init(zeros))
    jax.eval_shape(tx.init, ABSTRACT)  # abstract init always works


# --- hyperparameters in the state ---------------------------------------------------------


def test_line_search_constants_are_hyperparameters_set_without_recompiling():
    f = functools.partial(batch_loss, batch=(X, Y))
    opt = gx.lbfgs()
    state = opt.init(jnp.zeros(3))
    got = gx.get_hyperparams(state)
    assert {k: float(got[k]) for k in ("c1", "c2", "initial_step")} == {
        "c1": np.float32(1e-4),
        "c2": np.float32(0.9),
        "initial_step": 1.0,
    }
    for name in ("c1", "c2", "initial_step", "learning_rate"):
        assert optax.tree_utils.tree_get(state, name) is not None
    backtracking = gx.scale_by_backtracking_linesearch(decrease_factor=0.25).init(jnp.zeros(3))
    assert float(gx.get_hyperparams(backtracking)["decrease_factor"]) == 0.25

    @jax.jit
    def step(x, state):
        value, grad = jax.value_and_grad(f)(x)
        updates, state = opt.update(grad, state, x, value=value, grad=grad, value_fn=f)
        return gx.apply_updates(x, updates), state

    x1, _ = step(jnp.zeros(3), state)
    # the first trial is min(initial_step, 1/|g|): below 1/|g| the search starts shorter
    x1_short, _ = step(jnp.zeros(3), gx.set_hyperparams(state, initial_step=1e-3))
    assert not np.array_equal(x1, x1_short) and step._cache_size() == 1


# --- Newton and Newton-CG on hard problems (issue #15, item 15) ---------------------------


@pytest.mark.usefixtures("x64")
def test_newton_takes_the_exact_step_on_an_ill_conditioned_positive_definite_hessian():
    """Condition 1e10 is positive definite in float64: one exact Newton step lands on the
    minimum (it was eigenvalue-floored to x = (0.993, 0) before)."""
    sol = gx.minimize(
        lambda x: 0.5 * (x[0] ** 2 + 1e10 * x[1] ** 2), jnp.ones(2), method="newton", tol=1e-8
    )
    assert sol.success and int(sol.iterations) == 1
    np.testing.assert_allclose(sol.params, [0.0, 0.0], atol=1e-12)
    # the direction is numpy's solve of H d = -g, also at condition 1e12 with rotated axes
    q = np.linalg.qr(RNG.normal(size=(5, 5)))[0]
    H = q @ np.diag(np.logspace(0, 12, 5)) @ q.T
    H = (H + H.T) / 2
    g = RNG.normal(size=5)
    found = directions.newton_direction(jnp.asarray(H), jnp.asarray(g))
    assert not bool(found.modified)
    np.testing.assert_allclose(found.direction, -np.linalg.solve(H, g), rtol=1e-3)


@pytest.mark.usefixtures("x64")
def test_newton_solves_browns_badly_scaled_function():
    sol = gx.minimize(brown_badly_scaled, jnp.ones(2), method="newton")
    assert sol.success, sol.message
    np.testing.assert_allclose(sol.params, [1e6, 2e-6], rtol=1e-6)
    assert float(sol.value) < 1e-10  # it stopped at f = 0.2075 before


@pytest.mark.slow
@pytest.mark.usefixtures("x64")
def test_newton_escapes_negative_curvature_at_the_problems_scale():
    """Chebyquad (n = 8) meets indefinite Hessians: with a unit escape every such iteration
    spent 5-8 evaluations (83 in all); scaled to the modified step, the first trial is
    usually accepted. Oracle: scipy's trust-exact (its value and its evaluation count)."""
    x0 = np.arange(1, 9) / 9.0
    value_and_grad = jax.jit(jax.value_and_grad(chebyquad))
    hessian = jax.jit(jax.hessian(chebyquad))  # eager, it re-traced at every call
    reference = scipy.optimize.minimize(
        lambda x: tuple(np.asarray(v) for v in value_and_grad(x)),
        x0,
        jac=True,
        hess=lambda x: np.asarray(hessian(jnp.asarray(x))),
        method="trust-exact",
        options={"gtol": 1e-8},
    )
    sol = gx.minimize(chebyquad, jnp.asarray(x0), method="newton")
    assert sol.success, sol.message
    np.testing.assert_allclose(sol.value, reference.fun, rtol=1e-8)  # MGH: 3.51687e-3
    assert int(sol.num_fun_evals) <= 1.5 * reference.nfev, (int(sol.num_fun_evals), reference)


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("scale", [1e-3, 1e3])
def test_newton_direction_follows_a_change_of_units(scale):
    """``f(x) = F(scale x)`` has gradient ``scale g`` and Hessian ``scale^2 H``, and its
    direction must be ``d / scale``, at indefinite points too (the escape was a unit vector
    whatever the units, and the floor on |lam| was absolute)."""
    q = np.linalg.qr(RNG.normal(size=(4, 4)))[0]
    H = q @ np.diag([-3.0, -0.5, 2.0, 8.0]) @ q.T
    H = (H + H.T) / 2
    g, x = RNG.normal(size=4), RNG.normal(size=4)
    found = directions.newton_direction(jnp.asarray(H), jnp.asarray(g), x=jnp.asarray(x))
    scaled = directions.newton_direction(
        jnp.asarray(scale**2 * H), jnp.asarray(scale * g), x=jnp.asarray(x / scale)
    )
    assert bool(found.negative) and bool(scaled.negative)
    np.testing.assert_allclose(scale * scaled.direction, found.direction, rtol=1e-9)


@pytest.mark.usefixtures("x64")
def test_num_hess_evals_counts_every_hessian_computed(monkeypatch):
    """An independent count: a host callback in every dense Hessian actually run. The
    eigendecomposition path computes the Hessian twice (6 were reported for 7 computed)."""
    computed = []
    dense_hessian = curvature.dense_hessian

    def counted(f, x):
        jax.debug.callback(lambda: computed.append(1))
        return dense_hessian(f, x)

    monkeypatch.setattr(curvature, "dense_hessian", counted)
    sol = gx.minimize(
        lambda x: x[0] ** 2 - x[1] ** 2 + x[1] ** 4, jnp.array([1.0, 0.1]), method="newton"
    )
    jax.effects_barrier()
    assert sol.success
    assert int(sol.num_hess_evals) == len(computed) > int(sol.iterations) + 1


def test_newton_cg_scales_steepest_descent_by_the_curvature_it_meets():
    """Negative curvature at CG's first step: -(|g|^2 / |g.Hg|) g (scipy), not -g."""
    H = jnp.diag(jnp.array([-4.0, 1.0, 2.0]))
    g = jnp.array([1.0, 0.1, 0.1])
    d, used = directions.newton_cg_direction(lambda v: H @ v, g, 10)
    expected = -(g @ g) / abs(g @ H @ g) * g
    np.testing.assert_allclose(d, expected, rtol=1e-6)
    assert int(used) == 1


@pytest.mark.slow
@pytest.mark.usefixtures("x64")
def test_newton_cg_products_within_a_factor_of_scipy_on_a_boundary_value_problem():
    """MGH #28 with n = 100 (Hessian condition ~1e7): CG capped at n steps took 51,310
    products where scipy's Newton-CG (cap 20 n) takes 542."""
    x0 = boundary_value_start(100)
    value_and_grad = jax.jit(jax.value_and_grad(boundary_value))
    hvp = jax.jit(lambda x, v: jax.jvp(jax.grad(boundary_value), (x,), (v,))[1])
    products = []

    def hessp(x, v):
        products.append(1)
        return np.asarray(hvp(jnp.asarray(x), jnp.asarray(v)))

    reference = scipy.optimize.minimize(
        lambda x: tuple(np.asarray(v) for v in value_and_grad(x)),
        x0,
        jac=True,
        hessp=hessp,
        method="Newton-CG",
        options={"xtol": 1e-14},
    )
    sol = gx.minimize(boundary_value, jnp.asarray(x0), method="newton-cg")
    assert sol.success and reference.success
    assert float(sol.value) < 1e-8
    assert int(sol.num_hvp_evals) <= 2 * len(products), (int(sol.num_hvp_evals), len(products))
