"""Curvature kinds of gx.hessian.dataset_mean against their dense definitions.

Every matrix is streamed over two batches and compared with the dense matrix
built here from ``jax.jacfwd`` (the model's Jacobian ``J`` over the whole data
set) and ``jax.hessian`` (the loss's Hessian ``H_L`` in the outputs):
``GGN = J^T H_L J``, ``F = J^T F_out J`` with ``F_out`` written out per example,
``F_emp = G^T G / N`` with ``G`` the per-example gradients, all in float64.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import gradxform as gx

H = gx.hessian

pytestmark = pytest.mark.usefixtures("x64")

N, D, C = 16, 3, 3


def mlp(p, x):
    return jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"]


@pytest.fixture(scope="module")
def setup():
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        params = {
            "w1": jnp.asarray(rng.normal(size=(D, 4))),
            "b1": jnp.asarray(0.1 * rng.normal(size=4)),
            "w2": jnp.asarray(rng.normal(size=(4, C))),
        }
        x = rng.normal(size=(N, D))
        data = {
            "softmax_cross_entropy": (x, rng.integers(0, C, size=N)),
            "squared_error": (x, rng.normal(size=(N, C))),
        }
        yield params, data


def batches(x, y):
    return [(x[:8], y[:8]), (x[8:], y[8:])]


def dense_definitions(params, loss_name, x, y):
    """``{kind: matrix}`` from the dense Jacobian, the dense loss Hessian and per-example grads."""
    loss = getattr(H, loss_name)
    flat, unravel = ravel_pytree(params)
    outputs = np.asarray(mlp(params, x))
    J = np.asarray(jax.jacfwd(lambda f: mlp(unravel(f), x).ravel())(flat))  # (N C, n)
    H_L = np.asarray(jax.hessian(lambda o: loss(o.reshape(N, C), y))(jnp.asarray(outputs.ravel())))
    if loss_name == "softmax_cross_entropy":
        p = np.exp(outputs - outputs.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        blocks = [np.diag(pi) - np.outer(pi, pi) for pi in p]
        F_out = np.zeros((N * C, N * C))
        for i, b in enumerate(blocks):
            F_out[i * C : (i + 1) * C, i * C : (i + 1) * C] = b / N
    else:
        F_out = np.eye(N * C) / N

    def example_grad(xi, yi):  # example i as a batch of one
        return jax.grad(lambda f: loss(mlp(unravel(f), xi[None]), yi[None]))(flat)

    G = np.asarray(jax.vmap(example_grad)(jnp.asarray(x), jnp.asarray(y)))
    hessian = np.asarray(jax.hessian(lambda f: loss(mlp(unravel(f), x), y))(flat))
    return {
        "hessian": hessian,
        "ggn": J.T @ H_L @ J,
        "fisher": J.T @ F_out @ J,
        "empirical_fisher": G.T @ G / N,
    }


@pytest.mark.parametrize(
    "loss_name",
    ["softmax_cross_entropy", pytest.param("squared_error", marks=pytest.mark.slow)],
)
def test_every_kind_is_its_dense_definition(setup, loss_name):
    params, data = setup
    x, y = data[loss_name]
    want = dense_definitions(params, loss_name, x, y)
    got = {}
    for kind, matrix in want.items():
        objective = H.dataset_mean(loss_name, batches(x, y), model=mlp, curvature=kind)
        got[kind] = np.asarray(objective.matrix(params))
        scale = np.abs(matrix).max()
        np.testing.assert_allclose(got[kind], matrix, rtol=0, atol=1e-12 * scale, err_msg=kind)
    # the true Fisher is the GGN for both (softmax cross-entropy: F_out = H_L; squared
    # error 0.5 sum / N: H_L = I / N): the definitions agree, the products too
    np.testing.assert_allclose(want["fisher"], want["ggn"], atol=1e-13)
    np.testing.assert_allclose(got["fisher"], got["ggn"], atol=1e-13)
    assert np.linalg.eigvalsh(got["ggn"]).min() > -1e-12  # PSD: the loss is convex in outputs


def convex_model(w, x):
    """Each output ``sum_j softplus(x_ij w_jk)`` is convex in ``w``."""
    return jnp.sum(jax.nn.softplus(x[:, :, None] * w[None]), axis=1)


@pytest.mark.slow
@pytest.mark.parametrize("side", ["above", "below", "on"])
def test_ggn_top_eigenvalue_against_the_hessians(setup, side):
    """``H = GGN + R`` with ``R = sum_ik (dL/dout_ik) d2 out_ik``. Outputs convex in ``w`` and
    squared error (``dL/dout = (out - y) / N``): targets below the outputs make ``R`` PSD, so
    ``lambda_max(GGN) <= lambda_max(H)`` (Weyl); targets above make ``R`` NSD and the order
    flips; targets on the outputs (an interpolating minimum) make ``R = 0``, ``H = GGN``.
    The premise (the sign of ``R``) is checked densely, the conclusion with certified
    Lanczos on the streamed objectives."""
    rng = np.random.default_rng(5)
    x, w = rng.normal(size=(N, D)), jnp.asarray(0.5 * rng.normal(size=(D, 2)))
    out = np.asarray(convex_model(w, x))
    y = out + {"above": -1.0, "below": 1.0, "on": 0.0}[side] * (1 + rng.random(out.shape))
    tops = {}
    for kind in ("hessian", "ggn"):
        objective = H.dataset_mean(
            "squared_error", batches(x, y), model=convex_model, curvature=kind
        )
        pairs = H.hessian_eigenpairs(objective, w, k=1, max_matvecs=6)
        assert bool(pairs.converged[0])
        tops[kind] = (float(pairs.values[0]), float(pairs.residuals[0]))
        if kind == "hessian":
            hessian = np.asarray(objective.matrix(w))
        else:
            ggn = np.asarray(objective.matrix(w))
    residual_term = np.linalg.eigvalsh(hessian - ggn)
    (h, rh), (g, rg) = tops["hessian"], tops["ggn"]
    if side == "above":
        assert residual_term.min() > -1e-12 and residual_term.max() > 1e-3
        assert g - rg <= h + rh and g < h
    elif side == "below":
        assert residual_term.max() < 1e-12 and residual_term.min() < -1e-3
        assert g + rg >= h - rh and g > h
    else:
        np.testing.assert_allclose(hessian, ggn, atol=1e-13)
        assert abs(g - h) <= rg + rh + 1e-12
