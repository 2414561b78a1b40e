"""Hessian tools against dense linear algebra, known spectra and finite differences."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradxform as gx
from gradxform import curvature
from gradxform.hessian import operators

H = gx.hessian


pytestmark = pytest.mark.usefixtures("x64")  # float64 throughout (tests/conftest.py)


def known_operator(eigenvalues, seed=0):
    """A FlatOperator with a prescribed spectrum, and its dense matrix."""
    n = len(eigenvalues)
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(n, n)))
    A = (q * np.asarray(eigenvalues)) @ q.T
    A = 0.5 * (A + A.T)
    Aj = jnp.asarray(A)
    return H.FlatOperator(lambda v: Aj @ v, n, jnp.float64, lambda v: v), A


def mlp_loss(params):
    x = jnp.linspace(-1.0, 1.0, 30)[:, None] * jnp.array([[1.0, -0.5, 2.0]])
    y = jnp.sin(2 * x[:, :1])
    h = jnp.tanh(x @ params["w1"] + params["b1"])
    return jnp.mean((h @ params["w2"] + params["b2"] - y) ** 2)


def mlp_params(seed=0, width=12):
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    return {
        "w1": 0.8 * jax.random.normal(k1, (3, width)),
        "b1": jnp.zeros(width),
        "w2": 0.5 * jax.random.normal(k2, (width, 1)),
        "b2": jnp.zeros(1),
    }


@pytest.mark.slow
def test_hvp_is_the_curvature_layers_and_the_dense_hessian_is_in_ravel_order():
    # one implementation: gx.hessian re-exports curvature's products (tested in test_curvature)
    assert H.hvp is curvature.hvp and H.linearized_hvp is curvature.linearized_hvp
    params = mlp_params(width=4)
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    dense = np.asarray(H.hessian_matrix(mlp_loss, params))
    want = jax.jit(jax.hessian(lambda x: mlp_loss(unravel(x))))(flat)
    np.testing.assert_allclose(dense, want, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dense, dense.T, atol=1e-12)
    lam, vecs = H.eigh(mlp_loss, params)
    np.testing.assert_allclose(lam, np.linalg.eigvalsh(dense), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.asarray(vecs) * np.asarray(lam), dense @ vecs, atol=1e-10)

    @jax.jit
    def matvec(p, v):
        op = H.flat_operator(mlp_loss, p)
        assert op.size == flat.size and op.dtype == flat.dtype  # static, known when traced
        return op.matvec(v)

    v = jax.random.normal(jax.random.PRNGKey(3), flat.shape)
    np.testing.assert_allclose(matvec(params, v), dense @ v, rtol=1e-10, atol=1e-12)


def test_lanczos_relation_and_orthonormality():
    op, A = known_operator(np.linspace(-3, 10, 40))
    m = 15
    res = H.lanczos(op.matvec, jnp.ones(40), m)
    Q = np.asarray(res.basis)
    np.testing.assert_allclose(Q @ Q.T, np.eye(m), atol=1e-12)
    T = np.diag(res.alpha) + np.diag(res.beta[:-1], 1) + np.diag(res.beta[:-1], -1)
    # A Q^T = Q^T T + beta_m q_{m+1} e_m^T: the last column carries the remainder
    remainder = A @ Q.T - Q.T @ T
    np.testing.assert_allclose(remainder[:, :-1], 0, atol=1e-10)
    np.testing.assert_allclose(np.linalg.norm(remainder[:, -1]), res.beta[-1], rtol=1e-10)


@pytest.mark.slow  # over 3 s: a Lanczos loop compiles
@pytest.mark.parametrize("which", ["top", "bottom", "both"])
def test_eigenpairs_match_eigvalsh_with_valid_certificates(which):
    spectrum = np.concatenate([[-5.0, -4.0, -3.5], np.linspace(-1, 1, 200), [6.0, 8.0, 12.0]])
    op, A = known_operator(spectrum)
    programs = operators._on_hessian_solver_compiled._cache_size
    before = programs()
    pairs = H.eigenpairs(op, k=3, which=which, tol=1e-10, max_matvecs=120)
    assert programs() == before + 1  # one compiled program for the operator and options
    again = H.eigenpairs(op, k=3, which=which, tol=1e-10, max_matvecs=120)
    assert programs() == before + 1  # the same operator again: not recompiled
    np.testing.assert_array_equal(again.values, pairs.values)
    lam = np.linalg.eigvalsh(A)
    want = {
        "top": lam[::-1][:3],
        "bottom": lam[:3],
        "both": np.concatenate([lam[:3], lam[::-1][:3]]),
    }[which]
    assert bool(pairs.converged.all())
    np.testing.assert_allclose(pairs.values, want, rtol=1e-9)
    assert int(pairs.num_matvecs) < 120  # stopped once converged
    for value, vector, residual in zip(pairs.values, pairs.vectors, pairs.residuals):
        true_residual = np.linalg.norm(A @ vector - value * vector)
        np.testing.assert_allclose(true_residual, residual, rtol=1e-3, atol=1e-12)
        assert np.min(np.abs(lam - value)) <= residual + 1e-12  # the certificate holds


@pytest.mark.slow  # over 3 s: a Lanczos loop or a training run compiles
def test_unconverged_pairs_are_flagged_not_hidden():
    op, A = known_operator(np.linspace(0, 1, 300) ** 0.5)  # no gaps at the top
    pairs = H.eigenpairs(op, k=5, which="top", tol=1e-12, max_matvecs=10)
    assert int(pairs.num_matvecs) == 10
    assert not bool(pairs.converged.all())
    lam = np.linalg.eigvalsh(A)
    for value, residual in zip(pairs.values, pairs.residuals):
        assert np.min(np.abs(lam - value)) <= residual + 1e-12


@pytest.mark.slow  # over 3 s: a Lanczos loop or a training run compiles
def test_breakdown_at_an_invariant_subspace_is_exact():
    op, A = known_operator(
        [1.0] * 10 + [5.0] * 10
    )  # two distinct eigenvalues: Krylov space of dim 2
    pairs = H.eigenpairs(op, k=1, which="both", max_matvecs=20)
    np.testing.assert_allclose(pairs.values, [1.0, 5.0], rtol=1e-12)
    assert int(pairs.num_matvecs) == 2


@pytest.mark.slow  # over 3 s: a Lanczos loop or a training run compiles
def test_float64_accumulation_for_float32_products():
    spectrum = np.concatenate([np.linspace(0, 1, 100), [3.0, 4.0]])
    _, A = known_operator(spectrum)
    A32 = jnp.asarray(A, jnp.float32)
    op = H.FlatOperator(lambda v: A32 @ v, 102, jnp.float32, lambda v: v)
    pairs = H.eigenpairs(op, k=2, which="top", float64_accumulation=True, tol=1e-6)
    np.testing.assert_allclose(pairs.values, [4.0, 3.0], rtol=1e-6)


@pytest.mark.slow  # over 3 s: a Lanczos loop or a training run compiles
def test_mlp_extremes_match_dense_at_an_indefinite_point():
    params = mlp_params(width=12)
    lam = np.linalg.eigvalsh(np.asarray(H.hessian_matrix(mlp_loss, params)))
    assert lam[0] < 0 < lam[-1]
    pairs = H.hessian_eigenpairs(mlp_loss, params, k=2, which="both", tol=1e-9, max_matvecs=61)
    want = np.concatenate([lam[:2], lam[::-1][:2]])
    ok = np.asarray(pairs.converged)
    np.testing.assert_allclose(np.asarray(pairs.values)[ok], want[ok], rtol=1e-8, atol=1e-10)
    assert ok.sum() >= 2


def power_law_operator(n=300, seed=1):
    return known_operator(1.0 / np.arange(1, n + 1) ** 2, seed)


@pytest.mark.slow  # over 3 s: a Lanczos loop or a training run compiles
def test_hutch_plus_plus_beats_hutchinson_on_decaying_spectra():
    _, A = power_law_operator()
    exact = np.trace(A)

    # one compilation per method, the matrix and key arguments (eager, every call
    # compiled hutch++'s loop anew)
    @functools.partial(jax.jit, static_argnums=2)
    def estimate(A, key, method):
        op = H.FlatOperator(lambda v: A @ v, A.shape[0], A.dtype, lambda v: v)
        return H.trace(op, num_matvecs=60, method=method, key=key)

    errors = {"hutch++": [], "hutchinson": []}
    for seed in range(5):
        for method in errors:
            est = estimate(jnp.asarray(A), jax.random.PRNGKey(seed), method)
            errors[method].append(abs(float(est.estimate) - exact) / exact)
            assert abs(float(est.estimate) - exact) <= 5 * float(est.stderr) + 1e-6 * exact
    assert np.mean(errors["hutch++"]) < 0.01  # the bar: within 1% at 60 products
    assert np.mean(errors["hutch++"]) < np.mean(errors["hutchinson"]) / 3


def test_hutch_plus_plus_is_exact_when_the_sketch_spans_everything():
    op, A = known_operator(np.arange(1.0, 11.0))
    est = H.trace(op, num_matvecs=33)
    np.testing.assert_allclose(est.estimate, np.trace(A), rtol=1e-10)


def test_diagonal_estimate_within_its_error():
    op, A = known_operator(np.linspace(1, 2, 50))
    est = H.diagonal(op, num_matvecs=400)
    z = np.abs(np.asarray(est.estimate) - np.diag(A)) / np.asarray(est.stderr)
    assert np.mean(z) < 2 and np.max(z) < 6


def wasserstein1(nodes, weights, eigenvalues):
    grid = np.sort(np.concatenate([nodes, eigenvalues]))
    cdf_a = np.array([np.sum(weights[nodes <= x]) for x in grid])
    cdf_b = np.array([np.mean(eigenvalues <= x) for x in grid])
    return np.sum(np.abs(cdf_a - cdf_b)[:-1] * np.diff(grid))


@pytest.mark.slow  # over 3 s: a Lanczos loop or a training run compiles
def test_spectral_density_close_to_dense_spectrum_in_wasserstein_distance():
    spectrum = np.concatenate([np.random.default_rng(2).normal(0, 0.3, 250), [3.0, 4.0, 6.0]])
    op, A = known_operator(spectrum)
    sd = H.spectral_density(op, num_probes=8, steps=40)
    lam = np.linalg.eigvalsh(A)
    assert abs(float(np.sum(sd.weights)) - 1) < 1e-10
    w1 = wasserstein1(np.asarray(sd.nodes), np.asarray(sd.weights), lam)
    assert w1 < 0.01 * (lam[-1] - lam[0])
    integral = np.trapezoid(np.asarray(sd.density), np.asarray(sd.grid))
    assert abs(integral - 1) < 1e-3


TWO_D = {
    "bowl": (lambda p: p[0] ** 2 + 3 * p[1] ** 2, [0.0, 0.0], "minimum"),
    "cap": (lambda p: -(p[0] ** 2) - 3 * p[1] ** 2, [0.0, 0.0], "maximum"),
    "saddle": (lambda p: p[0] ** 2 - p[1] ** 2, [0.0, 0.0], "saddle"),
    "monkey_saddle": (lambda p: p[0] ** 3 - 3 * p[0] * p[1] ** 2, [0.0, 0.0], "degenerate"),
    "quartic_bowl": (lambda p: p[0] ** 4 + p[1] ** 4, [0.0, 0.0], "degenerate"),
    "rosenbrock_min": (
        lambda p: (1 - p[0]) ** 2 + 100 * (p[1] - p[0] ** 2) ** 2,
        [1.0, 1.0],
        "minimum",
    ),
    "slope": (lambda p: p[0] + p[1] ** 2, [0.0, 0.0], "not_critical"),
}


def himmelblau(p):
    return (p[0] ** 2 + p[1] - 11) ** 2 + (p[0] + p[1] ** 2 - 7) ** 2


HIMMELBLAU = {  # its nine critical points, refined below by Newton on the gradient
    "min1": ([3.0, 2.0], "minimum"),
    "min2": ([-2.805118, 3.131312], "minimum"),
    "min3": ([-3.779310, -3.283186], "minimum"),
    "min4": ([3.584428, -1.848126], "minimum"),
    "max": ([-0.270845, -0.923039], "maximum"),
    "saddle1": ([0.086678, 2.884255], "saddle"),
    "saddle2": ([-3.073026, -0.081353], "saddle"),
    "saddle3": ([3.385154, 0.073852], "saddle"),
    "saddle4": ([-0.127961, -1.953715], "saddle"),
}


@pytest.fixture(scope="module")
def himmelblau_points():
    """Newton's method on grad f = 0 from each listed point: it converges to the nearby
    critical point whatever its kind (one compiled, vmapped loop for all nine)."""

    def newton(x):
        def step(_, x):
            return x - jnp.linalg.solve(jax.hessian(himmelblau)(x), jax.grad(himmelblau)(x))

        return jax.lax.fori_loop(0, 20, step, x)

    with jax.enable_x64(True):
        starts = jnp.asarray([x for x, _ in HIMMELBLAU.values()])
        return dict(zip(HIMMELBLAU, np.asarray(jax.jit(jax.vmap(newton))(starts))))


@pytest.mark.parametrize("method", ["dense", pytest.param("lanczos", marks=pytest.mark.slow)])
def test_classification_of_standard_critical_points(method, himmelblau_points):
    for name, (f, x, want) in TWO_D.items():
        if method == "lanczos" and name in ("cap", "quartic_bowl", "rosenbrock_min"):
            continue  # each verdict once (the maximum below): each function compiles its loop
        got = H.classify_critical_point(f, jnp.asarray(x), method=method)
        assert got.verdict == want, (name, got)
    for name, (_, want) in HIMMELBLAU.items():
        if method == "lanczos" and name not in ("min2", "max", "saddle3"):
            continue  # one of each kind: every matrix-free call compiles its own loop
        got = H.classify_critical_point(
            himmelblau, jnp.asarray(himmelblau_points[name]), method=method
        )
        assert got.verdict == want, (name, got)
        assert got.morse_index == {"minimum": 0, "saddle": 1, "maximum": 2}[want]


def test_tiny_negative_eigenvalues_do_not_make_a_saddle():
    # a minimum with a flat direction whose computed curvature is -1e-12: degenerate, not saddle
    def f(p):
        return p[0] ** 2 + 2 * p[1] ** 2 - 0.5e-12 * p[2] ** 2

    got = H.classify_critical_point(f, jnp.zeros(3))
    assert got.verdict == "degenerate" and got.morse_index == 0


@pytest.mark.slow  # over 3 s: a Lanczos loop or a training run compiles
def test_dense_and_matrix_free_agree_on_nd_quadratics():
    for signature, want in [
        ((5.0, 3.0, 1.0, 0.5), "minimum"),
        ((5.0, -3.0, 1.0, 0.5), "saddle"),
        ((-1.0, -2.0, -3.0, -4.0), "maximum"),
    ]:
        op_matrix = known_operator(np.repeat(signature, 5), seed=4)[1]
        A = jnp.asarray(op_matrix)

        def f(x, A=A):
            return 0.5 * x @ A @ x

        dense = H.classify_critical_point(f, jnp.zeros(20), method="dense")
        free = H.classify_critical_point(f, jnp.zeros(20), method="lanczos")
        assert dense.verdict == free.verdict == want
        np.testing.assert_allclose(
            [free.lambda_min, free.lambda_max], [dense.lambda_min, dense.lambda_max], rtol=1e-8
        )
        if want in ("minimum", "maximum"):
            assert free.miss_probability < 1e-6


@pytest.mark.slow  # over 3 s: a Lanczos loop or a training run compiles
def test_matrix_free_budget_too_small_is_unresolved_not_degenerate():
    # a minimum whose smallest curvature, 1e-4, is far above the tolerance (1.5e-8):
    # 4 products cannot certify it, which is "unresolved", not "degenerate"
    spectrum = np.r_[1e-4, np.linspace(1e-3, 1.0, 19)]
    A = jnp.asarray(known_operator(spectrum, seed=5)[1])

    def f(x):
        return 0.5 * x @ A @ x

    short = H.classify_critical_point(f, jnp.zeros(20), method="lanczos", max_matvecs=4)
    assert short.verdict == "unresolved" and short.residual_min > short.curvature_tol
    dense = H.classify_critical_point(f, jnp.zeros(20), method="dense")
    free = H.classify_critical_point(f, jnp.zeros(20), method="lanczos")
    assert dense.verdict == free.verdict == "minimum"
    np.testing.assert_allclose(free.lambda_min, 1e-4, rtol=1e-8)


@pytest.mark.slow  # over 3 s: a Lanczos loop or a training run compiles
def test_trained_mlp_is_not_a_saddle_and_random_point_is_not_critical():
    params = mlp_params(width=6)
    sol = gx.minimize(mlp_loss, params, tol=1e-10, maxiter=3000)
    trained = H.classify_critical_point(mlp_loss, sol.params, grad_tol=1e-4)
    assert trained.verdict in ("minimum", "degenerate")
    assert H.classify_critical_point(mlp_loss, params).verdict == "not_critical"


def test_block_hessian_is_the_submatrix():
    params = mlp_params(width=4)
    f_block, block = H.restrict(mlp_loss, params, lambda path: "w2" in path or "b2" in path)
    sub = np.asarray(H.hessian_matrix(f_block, block))
    full = np.asarray(H.hessian_matrix(mlp_loss, params))
    # 1 on the entries of the selected leaves, 0 elsewhere, in ravel order
    selected = jax.tree_util.tree_map_with_path(
        lambda p, x: jnp.full(x.shape, float(jax.tree_util.keystr(p) in ("['w2']", "['b2']"))),
        params,
    )
    mask = np.asarray(jax.flatten_util.ravel_pytree(selected)[0]) == 1.0
    assert mask.sum() == 5
    np.testing.assert_allclose(sub, full[np.ix_(mask, mask)], rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="select must be True for at least one leaf path"):
        H.restrict(mlp_loss, params, lambda path: False)


@pytest.mark.slow
def test_batch_mean_hvp_is_the_average_of_per_batch_hvps():
    X = jax.random.normal(jax.random.PRNGKey(0), (4, 8, 3))  # 4 batches of 8

    def loss(w, batch):
        return jnp.mean(jnp.log1p(jnp.exp(batch @ w)))

    w = jnp.array([0.3, -0.2, 0.1])
    v = jnp.array([1.0, 2.0, -1.0])
    averaged = H.hvp(H.batch_mean(loss, X), w, v)
    per_batch = np.mean([np.asarray(H.hvp(lambda w, b=b: loss(w, b), w, v)) for b in X], axis=0)
    np.testing.assert_allclose(averaged, per_batch, rtol=1e-12)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: H.hessian_eigenpairs(lambda x: x, jnp.ones(3)),
         ValueError, r"f\(params\) must be a real floating scalar"),
        (lambda: H.hessian_eigenpairs(jnp.sum, jnp.arange(3)), TypeError, "real floating"),
        (lambda: H.hessian_eigenpairs(jnp.sum, jnp.ones(3), which="middle"),
         ValueError, "which must be one of 'top', 'bottom', 'both'; got 'middle'"),
        (lambda: H.hessian_eigenpairs(jnp.sum, jnp.ones(3), k=0), ValueError, "k must be"),
        (lambda: H.hessian_eigenpairs(jnp.sum, jnp.ones(3), k=True),
         TypeError, "k must be an integer >= 1; got True"),
        (lambda: H.hessian_eigenpairs(jnp.sum, jnp.ones(3), tol=0.0), ValueError, "tol must be"),
        (lambda: H.trace(jnp.sum, jnp.ones(3), method="exact"), ValueError, "method must be"),
        (lambda: H.trace(jnp.sum, jnp.ones(3), num_matvecs=2),
         ValueError, "num_matvecs must be an integer >= 3; got 2"),
        (lambda: H.diagonal(jnp.sum, jnp.ones(3), num_matvecs=2.0),
         TypeError, "num_matvecs must be an integer >= 2; got 2.0"),
        (lambda: H.spectral_density(jnp.sum, jnp.ones(3), steps=0),
         ValueError, "steps must be an integer >= 1; got 0"),
        (lambda: H.lanczos(lambda v: v, jnp.ones(3), steps=np.float64(3)),
         TypeError, "steps must be an integer"),
        (lambda: H.classify_critical_point(jnp.sum, jnp.ones(3), method="qr"),
         ValueError, "method must be"),
        (lambda: H.classify_critical_point(jnp.sum, jnp.ones(3), grad_tol=-1.0),
         ValueError, "grad_tol must be a real number >= 0; got -1.0"),
        (lambda: H.restrict(jnp.sum, jnp.ones(3), "w1"), TypeError, "select must be a callable"),
    ],
)  # fmt: skip
def test_bad_input_is_a_clear_error(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_a_larger_budget_gives_the_same_answer_at_the_same_stopping_point():
    # the windows a step works on depend on the steps taken, not on max_matvecs
    op, A = known_operator(np.r_[-4.0, -3.0, np.linspace(-1, 1, 60), 5.0, 7.0])
    small = H.eigenpairs(op, k=2, which="both", max_matvecs=40)
    large = H.eigenpairs(op, k=2, which="both", max_matvecs=400)
    assert int(small.num_matvecs) == int(large.num_matvecs) < 40
    np.testing.assert_allclose(large.values, small.values, rtol=1e-13)
    np.testing.assert_allclose(large.residuals, small.residuals, rtol=1e-6, atol=1e-15)
    lam = np.linalg.eigvalsh(A)
    np.testing.assert_allclose(small.values, [-4, -3, 7, 5], rtol=1e-9)
    assert bool(small.converged.all()) and abs(lam[0] + 4) < 1e-12


@pytest.mark.parametrize("which", ["bottom", "top"])
def test_repeated_eigenvalues_are_found_or_flagged(which):
    # one start vector sees each distinct eigenvalue once: diag(1, 1, 1, 2, ..., 8) gave
    # [1, 2, 3] as the bottom 3, converged (and top-3 of its negative gave [-1, -2, -3])
    sign = 1.0 if which == "bottom" else -1.0
    op, A = known_operator(sign * np.r_[1.0, 1.0, 1.0, np.arange(2.0, 9.0)], seed=3)
    pairs = H.eigenpairs(op, k=3, which=which, max_matvecs=60)
    lam = np.linalg.eigvalsh(A)
    want = lam[:3] if which == "bottom" else lam[::-1][:3]
    ok = np.asarray(pairs.converged)
    assert ok.any()
    np.testing.assert_allclose(np.asarray(pairs.values)[ok], want[ok], rtol=1e-10)
    # the first run's Krylov space holds at most the 8 distinct eigenvalues; the repeats
    # took restarts, counted in num_matvecs but not in the dimension the miss bounds use
    assert 0 < int(pairs.krylov_dimension) <= 8 < int(pairs.num_matvecs)


@pytest.fixture(scope="module")
def clustered_float32():
    """An MLP-like spectrum in float32: two small eigenvalues, a tight 10-fold cluster at
    4.66e-5, then values up to 1 (the bottom of the issue's 939-parameter MLP)."""
    rest = np.geomspace(1e-4, 1.0, 108)
    spectrum = np.r_[2.127e-5, 3.831e-5, np.linspace(4.663e-5, 4.667e-5, 10), rest]
    _, A = known_operator(spectrum, seed=6)
    A32 = jnp.asarray(A, jnp.float32)
    op = H.FlatOperator(lambda v: A32 @ v, A.shape[0], jnp.float32, lambda v: v)
    return op, np.linalg.eigvalsh(A)  # the exact (float64) matrix, not its float32 rounding


@pytest.mark.slow  # over 3 s: several restarts compile and run
@pytest.mark.parametrize("which", ["bottom", "top"])
def test_float32_pairs_flagged_converged_are_the_extreme_eigenvalues(clustered_float32, which):
    # the old tolerance was relative to the largest Ritz value (1.5e-4 absolute here), so
    # wrong bottom values passed; and a certificate covers the operator as computed, so
    # the exact eigenvalue is only within residual + operator_error
    op, lam = clustered_float32
    pairs = H.eigenpairs(op, k=5, which=which, max_matvecs=120)
    want = lam[:5] if which == "bottom" else lam[::-1][:5]
    rounding = 8 * np.finfo(np.float32).eps * np.abs(lam).max()  # 8 eps |H|, |H| = 1
    bound = np.asarray(pairs.residuals) + rounding
    ok = np.asarray(pairs.converged)
    assert ok[0]
    error = np.abs(np.asarray(pairs.values, np.float64) - want)
    assert np.all(error[ok] <= bound[ok]), (pairs.values, want, bound, ok)
    # the reported estimate of the operator's rounding is that size (|H| from Lanczos)
    assert rounding / 2 <= float(pairs.operator_error) <= 2 * rounding


@pytest.mark.parametrize("k, which", [(5, "top"), (4, "bottom"), (4, "both")])
def test_more_pairs_than_the_operator_has_is_an_error(k, which):
    # k > n was truncated and returned one eigenvector several times, all converged
    op = H.FlatOperator(lambda v: 2.0 * v, 3, jnp.float64, lambda v: v)
    with pytest.raises(ValueError, match=r"k must be at most the operator size n = 3"):
        H.eigenpairs(op, k=k, which=which)
    with pytest.raises(ValueError, match=rf"n = 3 for which='{which}'; got {k}"):
        H.hessian_eigenpairs(lambda p: jnp.sum(p**2), jnp.ones(3), k=k, which=which)


def test_both_ends_may_share_pairs_when_2k_exceeds_n():
    op, A = known_operator([1.0, 2.0, 3.0])
    pairs = H.eigenpairs(op, k=2, which="both")
    lam = np.linalg.eigvalsh(A)
    np.testing.assert_allclose(pairs.values, [lam[0], lam[1], lam[2], lam[1]], rtol=1e-12)
    assert bool(pairs.converged.all())


@pytest.mark.parametrize("dtype, s, first, last", [("float64", 40, 0, 2), ("float32", 17, 14, 16)])
def test_tridiagonal_bisection_is_jax_eigh_tridiagonal_bitwise(dtype, s, first, last):
    # the Ritz checks' bisection (a rolled Sturm loop, compiled small) against the
    # reference it replaces, jax.scipy.linalg.eigh_tridiagonal(select="i"): the same bits
    # on random, padded (as the checks pad T), clustered and graded tridiagonals
    from jax.scipy.linalg import eigh_tridiagonal

    from gradxform.hessian.lanczos import _tridiagonal_eigenvalues

    rng = np.random.default_rng(7)
    d, e = rng.normal(size=(8, s)), rng.normal(size=(8, s - 1))
    d[1, s // 2 :], e[1, s // 2 - 1 :] = 2 * (np.abs(d[1]).max() + 2 * np.abs(e[1]).max() + 1), 0
    d[2], e[2] = 1.0, 1e-9 * e[2]  # an s-fold cluster
    d[3], e[3] = np.geomspace(1e-6, 1.0, s), 1e-3 * e[3]
    d, e = d.astype(dtype), e.astype(dtype)
    want = jax.jit(
        jax.vmap(
            lambda d, e: eigh_tridiagonal(
                d, e, eigvals_only=True, select="i", select_range=(first, last)
            )
        )
    )(d, e)
    target = jnp.arange(first, last + 1)
    got = jax.jit(jax.vmap(lambda d, e: _tridiagonal_eigenvalues(d, e, target)))(d, e)
    assert got.dtype == want.dtype == dtype
    np.testing.assert_array_equal(got, want)
    lam = np.linalg.eigvalsh(np.diag(d[0]) + np.diag(e[0], 1) + np.diag(e[0], -1))
    np.testing.assert_allclose(got[0], lam[first : last + 1], rtol=1e-5, atol=1e-6)
