"""The spectral tools on pytree vectors (issue #19): a basis shaped like the params.

A small MLP with four leaves in float64. The oracles: the dense Hessian from
``jax.hessian`` on the flattened params and NumPy's ``eigh`` of it; and the same
tools on the flat path (a :class:`FlatOperator` of the same Hessian, the layout
every tool used before), which must agree to rounding because the probes are
the same numbers in both layouts.
"""

import inspect

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import gradxform as gx
from gradxform.hessian import _vectors, blocks, estimators, extreme, lanczos

H = gx.hessian
SHAPES = {"w1": (3, 7), "b1": (7,), "w2": (7, 2), "b2": (2,)}  # n = 44: no leaf dimension


@pytest.fixture(scope="module")
def problem():
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        params = {k: jnp.asarray(rng.normal(size=s)) for k, s in SHAPES.items()}
        x, y = jnp.asarray(rng.normal(size=(12, 3))), jnp.asarray(rng.normal(size=(12, 2)))

        def f(p):
            out = jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]
            return 0.5 * jnp.mean(jnp.sum((out - y) ** 2, axis=1)) + 0.01 * jnp.sum(p["w1"] ** 4)

        flat, unravel = ravel_pytree(params)
        dense = np.asarray(jax.hessian(lambda v: f(unravel(v)))(flat))
        yield f, params, dense, H.flat_operator(f, params)


def test_eigenpairs_on_pytrees_are_the_dense_eigenpairs(problem):
    f, params, dense, _ = problem
    with jax.enable_x64(True):
        pairs = H.hessian_eigenpairs(f, params, k=3, which="both", tol=1e-10, max_matvecs=150)
    exact = np.linalg.eigvalsh(dense)
    want = np.concatenate([exact[:3], exact[::-1][:3]])
    np.testing.assert_allclose(pairs.values, want, rtol=1e-9, atol=1e-12)
    assert bool(pairs.converged.all())
    assert jax.tree.map(jnp.shape, pairs.vectors) == {k: (6, *s) for k, s in SHAPES.items()}
    Y = np.asarray(jax.vmap(lambda v: ravel_pytree(v)[0])(pairs.vectors))
    residual = np.linalg.norm(Y @ dense - np.asarray(pairs.values)[:, None] * Y, axis=1)
    np.testing.assert_array_less(residual, np.asarray(pairs.residuals) + 1e-11)
    np.testing.assert_allclose(np.linalg.norm(Y, axis=1), 1, rtol=1e-12)


def test_pytree_and_flat_paths_agree_to_rounding(problem):
    f, params, _, flat = problem
    key = jax.random.PRNGKey(3)
    with jax.enable_x64(True):
        runs = [
            (
                H.hessian_eigenpairs(g, params, k=2, which="top", tol=1e-10, key=key),
                H.trace(g, params, num_matvecs=21, key=key),
                H.trace(g, params, num_matvecs=8, method="hutchinson", key=key),
                H.diagonal(g, params, num_matvecs=5, key=key),
                H.spectral_density(g, params, num_probes=2, steps=12, key=key),
            )
            for g in (f, flat)
        ]
    (tree_pairs, *tree_rest), (flat_pairs, *flat_rest) = runs
    assert int(tree_pairs.num_matvecs) == int(flat_pairs.num_matvecs)
    np.testing.assert_allclose(tree_pairs.values, flat_pairs.values, rtol=1e-12)
    np.testing.assert_allclose(tree_pairs.residuals, flat_pairs.residuals, atol=1e-12)
    for a, b in zip(jax.tree.leaves(tree_pairs.vectors), jax.tree.leaves(flat_pairs.vectors)):
        np.testing.assert_allclose(np.abs(a), np.abs(b), atol=1e-9)  # a sign each
    for a, b in zip(tree_rest, flat_rest):
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
            np.testing.assert_allclose(x, y, rtol=1e-11, atol=1e-12)


def test_lanczos_basis_is_a_pytree_with_a_leading_axis(problem):
    f, params, dense, _ = problem
    with jax.enable_x64(True):
        v0 = jax.tree.map(jnp.ones_like, params)
        result = H.lanczos(gx.curvature.linearized_hvp(f, params), v0, 10)
    assert jax.tree.map(jnp.shape, result.basis) == {k: (10, *s) for k, s in SHAPES.items()}
    Q = np.asarray(jax.vmap(lambda q: ravel_pytree(q)[0])(result.basis))
    np.testing.assert_allclose(Q @ Q.T, np.eye(10), atol=1e-13)
    np.testing.assert_allclose(Q @ dense @ Q.T, _tridiagonal(result), atol=1e-11)


def _tridiagonal(result):
    a, b = np.asarray(result.alpha), np.asarray(result.beta)[:-1]
    return np.diag(a) + np.diag(b, 1) + np.diag(b, -1)


def _equations(jaxpr):
    for eqn in jaxpr.eqns:
        yield eqn
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            yield from _equations(sub)


def test_no_flat_vector_is_assembled_in_the_compiled_tools(problem):
    # a flattened vector would be a concatenation of the leaves: an array with an axis of
    # n = 44 built by `concatenate` (the probes are drawn flat and cut, never joined)
    f, params, _, _ = problem
    n = 44

    def tools(p):
        pairs = H.hessian_eigenpairs(f, p, k=2, which="both", max_matvecs=20)
        trace = H.trace(f, p, num_matvecs=9)
        density = H.spectral_density(f, p, num_probes=1, steps=5)
        return pairs.values, trace.estimate, density.nodes, H.diagonal(f, p, num_matvecs=3)

    with jax.enable_x64(True):
        jaxpr = jax.make_jaxpr(tools)(params).jaxpr
    joined = [
        e
        for e in _equations(jaxpr)
        if e.primitive.name == "concatenate" and n in e.outvars[0].aval.shape
    ]
    assert not joined, joined
    # the loops' modules (operators.py keeps the public flat views: hessian_matrix, flat_operator)
    for module in (_vectors, blocks, estimators, extreme, lanczos):
        assert "ravel_pytree(" not in inspect.getsource(module), module.__name__
