"""The curvature layer against dense linear algebra and finite differences.

References are built independently of the products under test: the model's
Jacobian ``J`` by ``jax.jacfwd``, the loss Hessian in the outputs by
``jax.hessian``, per-example gradients by ``vmap(grad)``, and the true Fisher as
an explicit sum over classes of ``p_c s_c s_c^T``; then ``J^T H_L J`` and
``G^T G / N`` are formed densely in float64.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from gradxform import curvature

N, D, WIDTH, K = 5, 3, 4, 3  # examples, inputs, hidden units, outputs (classes)


@pytest.fixture(autouse=True, scope="module")
def x64():
    with jax.enable_x64(True):
        yield


def mlp(params, x):
    return jnp.tanh(x @ params["w1"] + params["b1"]) @ params["w2"] + params["b2"]


def cross_entropy(logits, y):
    """Mean softmax cross-entropy; ``y`` holds integer labels."""
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))


def half_squared_error(out, y):
    """``0.5 * sum((out - y) ** 2) / N``: the negative log-likelihood of unit-variance Gaussians."""
    return 0.5 * jnp.sum((out - y) ** 2) / out.shape[0]


def mean_squared_error(out, y):
    return jnp.mean((out - y) ** 2)


@pytest.fixture(scope="module")
def data(x64):
    k1, k2, k3, k4 = jax.random.split(jax.random.PRNGKey(0), 4)
    params = {
        "w1": jax.random.normal(k1, (D, WIDTH)),
        "b1": 0.1 * jnp.ones(WIDTH),
        "w2": jax.random.normal(k2, (WIDTH, K)),
        "b2": jnp.zeros(K),
    }
    x = jax.random.normal(k3, (N, D))
    labels = jnp.arange(N) % K
    targets = jax.random.normal(k4, (N, K))
    flat, unravel = ravel_pytree(params)
    # J: (N K, n) by forward mode on the flat parameters
    J = jax.jit(jax.jacfwd(lambda w: mlp(unravel(w), x).ravel()))(flat)
    return dict(params=params, x=x, labels=labels, targets=targets, flat=flat, J=np.asarray(J))


def as_matrix(build, params):
    """The dense matrix of the product ``build(params)``, ``v -> M v`` on pytrees.

    Its columns ``M e_i``, built and applied in one compiled function.
    """
    flat, unravel = ravel_pytree(params)

    def columns(p):
        product = build(p)
        return jax.vmap(lambda e: ravel_pytree(product(unravel(e)))[0])(jnp.eye(flat.size))

    return np.asarray(jax.jit(columns)(params)).T


def dense_ggn(loss, d, y):
    outputs = mlp(d["params"], d["x"])
    H_L = jax.jit(jax.hessian(lambda o: loss(o.reshape(outputs.shape), y)))(outputs.ravel())
    return d["J"].T @ np.asarray(H_L) @ d["J"]


def per_example_gradients(loss, d, y):
    """``G``: row ``i`` is the gradient of example ``i``'s loss (as a batch of one)."""
    _, unravel = ravel_pytree(d["params"])

    def example(w, xi, yi):
        return loss(mlp(unravel(w), xi[None]), yi[None])

    G = jax.jit(jax.vmap(jax.grad(example), in_axes=(None, 0, 0)))(d["flat"], d["x"], y)
    return np.asarray(G)


@pytest.mark.parametrize(
    "loss, target",
    [(cross_entropy, "labels"), (half_squared_error, "targets"), (mean_squared_error, "targets")],
)
def test_gauss_newton_is_jt_hl_j(data, loss, target):
    y = data[target]
    got = as_matrix(
        lambda p: curvature.gauss_newton_product(mlp, loss, p, data["x"], y), data["params"]
    )
    want = dense_ggn(loss, data, y)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    assert np.linalg.eigvalsh(want)[0] > -1e-12  # a convex loss: positive semi-definite


@pytest.mark.parametrize(
    "loss, target", [(cross_entropy, "labels"), (half_squared_error, "targets")]
)
def test_empirical_fisher_is_gt_g_over_n(data, loss, target):
    y = data[target]
    G = per_example_gradients(loss, data, y)
    build = lambda p: curvature.empirical_fisher_product(mlp, loss, p, data["x"], y)  # noqa: E731
    np.testing.assert_allclose(
        as_matrix(build, data["params"]), G.T @ G / N, rtol=1e-10, atol=1e-12
    )
    # the per-example gradients average to the batch gradient
    _, unravel = ravel_pytree(data["params"])
    batch = jax.jit(jax.grad(lambda w: loss(mlp(unravel(w), data["x"]), y)))(data["flat"])
    np.testing.assert_allclose(G.mean(axis=0), batch, rtol=1e-10, atol=1e-12)


def test_categorical_fisher_is_the_expectation_over_labels_and_the_ggn(data):
    params, x = data["params"], data["x"]
    _, unravel = ravel_pytree(params)
    p = np.asarray(jax.nn.softmax(mlp(params, x)))
    # scores s_ic = grad log p_c(x_i): (N, K, n)
    scores = jax.jit(jax.jacfwd(lambda w: jax.nn.log_softmax(mlp(unravel(w), x))))(data["flat"])
    scores = np.asarray(scores)
    want = np.einsum("ic,icj,ick->jk", p, scores, scores) / N
    got = as_matrix(lambda p: curvature.fisher_product(mlp, p, x), params)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got, dense_ggn(cross_entropy, data, data["labels"]), atol=1e-12)


def test_gaussian_fisher_is_jt_j_over_n_and_the_ggn_up_to_scale(data):
    params, x, y = data["params"], data["x"], data["targets"]
    got = as_matrix(lambda p: curvature.fisher_product(mlp, p, x, likelihood="gaussian"), params)
    want = data["J"].T @ data["J"] / N
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got, dense_ggn(half_squared_error, data, y), atol=1e-12)
    np.testing.assert_allclose(2 / K * got, dense_ggn(mean_squared_error, data, y), atol=1e-12)


def test_ggn_is_the_hessian_where_the_residuals_vanish(data):
    # with y = model output the second term of H, sum_k r_k d^2 out_k, is zero
    params, x = data["params"], data["x"]
    _, unravel = ravel_pytree(params)
    y = mlp(params, x)
    f = lambda w: half_squared_error(mlp(unravel(w), x), y)  # noqa: E731
    H = jax.jit(curvature.dense_hessian, static_argnums=0)(f, data["flat"])
    got = as_matrix(
        lambda p: curvature.gauss_newton_product(mlp, half_squared_error, p, x, y), params
    )
    np.testing.assert_allclose(got, H, rtol=1e-10, atol=1e-12)


def test_products_trace_under_jit_in_float32(data):
    params32 = jax.tree.map(lambda a: a.astype(jnp.float32), data["params"])
    x32, y32 = data["x"].astype(jnp.float32), data["targets"].astype(jnp.float32)
    v = jax.tree.map(jnp.ones_like, params32)

    @jax.jit
    def products(p, v):
        ggn = curvature.gauss_newton_product(mlp, half_squared_error, p, x32, y32)
        fisher = curvature.fisher_product(mlp, p, x32, likelihood="gaussian")
        return ggn(v), fisher(v)

    ggn_v, fisher_v = products(params32, v)
    want = dense_ggn(half_squared_error, data, data["targets"]) @ np.ones(data["flat"].size)
    for got in (ggn_v, fisher_v):
        assert ravel_pytree(got)[0].dtype == jnp.float32
        np.testing.assert_allclose(ravel_pytree(got)[0], want, rtol=1e-4, atol=1e-5)


def objective(data):
    _, unravel = ravel_pytree(data["params"])
    return lambda w: cross_entropy(mlp(unravel(w), data["x"]), data["labels"])


def test_hvp_matches_finite_differences_of_the_gradient(data):
    f, w = objective(data), data["flat"]
    v = jax.random.normal(jax.random.PRNGKey(1), w.shape)
    got = jax.jit(curvature.hvp, static_argnums=0)(f, w, v)
    h, grad = 1e-5, jax.jit(jax.grad(f))
    fd = (grad(w + h * v) - grad(w - h * v)) / (2 * h)
    np.testing.assert_allclose(got, fd, rtol=1e-6, atol=1e-9)
    linearized = jax.jit(lambda w, v: curvature.linearized_hvp(f, w)(v))(w, v)
    np.testing.assert_allclose(linearized, got, rtol=1e-12, atol=1e-14)


def test_hvp_on_a_pytree_is_the_flat_hvp(data):
    _, unravel = ravel_pytree(data["params"])
    f = lambda p: cross_entropy(mlp(p, data["x"]), data["labels"])  # noqa: E731
    v = jax.random.normal(jax.random.PRNGKey(2), data["flat"].shape)
    hvp = jax.jit(curvature.hvp, static_argnums=0)
    got = ravel_pytree(hvp(f, data["params"], unravel(v)))[0]
    np.testing.assert_allclose(got, hvp(objective(data), data["flat"], v), rtol=1e-12)


def test_dense_hessian_matches_jax_hessian(data):
    f, w = objective(data), data["flat"]
    got = jax.jit(curvature.dense_hessian, static_argnums=0)(f, w)
    np.testing.assert_allclose(got, jax.jit(jax.hessian(f))(w), rtol=1e-10, atol=1e-13)
    assert got.shape == (w.size, w.size) and got.dtype == w.dtype


@pytest.mark.parametrize(
    "f, params, error, match",
    [
        ("sum", jnp.ones(3), TypeError, "f must be a callable f"),
        (lambda p: p * 2, jnp.ones(3), ValueError, r"f\(params\) must be a real floating scalar"),
        (lambda p: jnp.sum(p).astype(jnp.int32), jnp.ones(3), ValueError, "real floating scalar"),
        (lambda p: jnp.sum(p) * 1j, jnp.ones(3), ValueError, "real floating scalar"),
        (jnp.sum, jnp.arange(3), TypeError, "params must hold real floating-point"),
        (jnp.sum, {}, ValueError, "params must hold at least one array"),
    ],
)
def test_check_objective_errors(f, params, error, match):
    with pytest.raises(error, match=match):
        curvature.check_objective(f, params)


def test_check_objective_accepts_a_scalar_objective():
    assert curvature.check_objective(lambda p: jnp.sum(p["a"] ** 2), {"a": jnp.ones(2)}) is None


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda p, x, y: curvature.gauss_newton_product("mlp", cross_entropy, p, x, y),
         TypeError, "model must be a callable"),
        (lambda p, x, y: curvature.gauss_newton_product(mlp, None, p, x, y),
         TypeError, "loss must be a callable"),
        (lambda p, x, y: curvature.gauss_newton_product(mlp, lambda o, y: o, p, x, y),
         ValueError, r"loss\(model\(params, x\), y\) must be a real floating scalar"),
        (lambda p, x, y: curvature.fisher_product(mlp, p, x, likelihood="poisson"),
         ValueError, "likelihood must be one of 'categorical', 'gaussian'"),
        (lambda p, x, y: curvature.fisher_product(lambda p, x: mlp(p, x)[0], p, x),
         ValueError, r"model\(params, x\) must be one array with at least 2 axes"),
        (lambda p, x, y: curvature.empirical_fisher_product(mlp, cross_entropy, p, x, y[:2]),
         ValueError, "x and y must be arrays sharing one leading batch axis"),
        (lambda p, x, y: curvature.empirical_fisher_product(mlp, lambda o, y: o, p, x, y),
         ValueError, r"loss\(model\(params, x_i\), y_i\) must be a real floating scalar"),
    ],
)  # fmt: skip
def test_product_builders_check_their_arguments(data, call, error, match):
    with pytest.raises(error, match=match):
        call(data["params"], data["x"], data["labels"])
