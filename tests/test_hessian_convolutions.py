"""A convolutional closure's products as their own programs, called back from a tool's loop.

On CPU the tools whose products sit in a Lanczos loop (eigenpairs, spectral
density, block spectra) run a closure's products through
``gradxform.hessian.data.ClosureProducts`` when the closure convolves (see
``products_as_programs``). The references: NumPy's ``eigvalsh`` of the dense
Hessian (``jax.hessian``), and the same tool with its products kept in the loop
(the routing switched off), which must agree with it to rounding.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import gradxform as gx
from gradxform.hessian import data

H = gx.hessian

pytestmark = pytest.mark.usefixtures("x64")

EIGENPAIRS = dict(k=1, which="both", tol=1e-9, max_matvecs=80)


def _images_and_labels():
    rng = np.random.default_rng(0)
    return rng.normal(size=(12, 5, 5, 1)), rng.integers(0, 3, size=12)


IMAGES, LABELS = _images_and_labels()


def cnn_loss(p):
    """A convolution (3x3, 2 channels), tanh, a dense layer to 3 classes: 173 parameters."""
    h = jax.lax.conv_general_dilated(
        jnp.asarray(IMAGES), p["conv"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    logits = jnp.tanh(h).reshape(h.shape[0], -1) @ p["dense"] + p["bias"]
    return H.softmax_cross_entropy(logits, jnp.asarray(LABELS))


def mlp_loss(p):
    logits = jnp.tanh(jnp.asarray(IMAGES).reshape(12, -1) @ p["dense"][:25, :3]) + p["bias"]
    return H.softmax_cross_entropy(logits, jnp.asarray(LABELS))


@pytest.fixture(scope="module")
def problem():
    with jax.enable_x64(True):
        rng = np.random.default_rng(1)
        params = {
            "conv": jnp.asarray(rng.normal(size=(3, 3, 1, 2)) / 3),
            "dense": jnp.asarray(rng.normal(size=(50, 3)) / 7),
            "bias": jnp.zeros(3),
        }
        dense = np.asarray(H.hessian_matrix(cnn_loss, params))
        yield params, dense


def compiled_products() -> int:
    return data._closure_products._cache_size()


def test_eigenpairs_of_a_convolutional_closure_run_products_as_programs(problem, monkeypatch):
    params, dense = problem
    assert data.products_as_programs(cnn_loss, params)
    before = compiled_products()
    pairs = H.hessian_eigenpairs(cnn_loss, params, **EIGENPAIRS)
    assert compiled_products() == before + 1  # the per-product program, compiled once
    again = H.hessian_eigenpairs(cnn_loss, jax.tree.map(lambda x: 1.1 * x, params), **EIGENPAIRS)
    assert compiled_products() == before + 1 and bool(again.finite)  # a new point: no compile
    exact = np.linalg.eigvalsh(dense)
    assert bool(pairs.converged.all()) and bool(pairs.finite)
    np.testing.assert_allclose(pairs.values, [exact[0], exact[-1]], rtol=1e-9)
    # each residual certifies its value: |H y - theta y| recomputed with the dense matrix
    for i, value in enumerate(pairs.values):
        y = np.asarray(ravel_pytree(jax.tree.map(lambda v, i=i: v[i], pairs.vectors))[0])
        residual = np.linalg.norm(dense @ y - float(value) * y)
        assert residual <= 1e-9 * max(1.0, abs(float(value)))

    monkeypatch.setattr(data, "products_as_programs", lambda f, params: False)
    in_loop = H.hessian_eigenpairs(cnn_loss, params, **EIGENPAIRS)
    np.testing.assert_allclose(pairs.values, in_loop.values, rtol=1e-11)


def test_density_agrees_with_products_in_the_loop_and_block_tops_with_dense(problem, monkeypatch):
    params, dense = problem
    options = dict(num_probes=2, steps=12)
    blocks = {"conv": "conv", "dense": "dense", "bias": "dense"}
    block_options = dict(k=1, max_matvecs=40, trace_matvecs=6, density_probes=1, density_steps=6)
    before = compiled_products()
    density = H.spectral_density(cnn_loss, params, **options)
    spectra = H.block_spectra(cnn_loss, params, blocks, **block_options)
    assert compiled_products() > before
    monkeypatch.setattr(data, "products_as_programs", lambda f, params: False)
    density_in_loop = H.spectral_density(cnn_loss, params, **options)
    # the same probes, the same Lanczos recurrences: equal to rounding
    np.testing.assert_allclose(density.nodes, density_in_loop.nodes, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(density.density, density_in_loop.density, rtol=1e-7, atol=1e-10)
    assert bool(density.finite)
    # SLQ's quadrature is exact on the trace of H^0 and H^1 per probe: nodes in the spectrum
    exact = np.linalg.eigvalsh(dense)
    assert exact[0] - 1e-9 <= float(np.min(density.nodes)) <= float(np.max(density.nodes))
    assert float(np.max(density.nodes)) <= exact[-1] + 1e-9
    flat, unravel = ravel_pytree(params)
    owner = unravel(jnp.arange(flat.size, dtype=flat.dtype))
    for name, leaves in (("conv", ["conv"]), ("dense", ["dense", "bias"])):
        index = np.concatenate([np.ravel(owner[leaf]) for leaf in leaves]).astype(int)
        top = np.linalg.eigvalsh(dense[np.ix_(index, index)])[-1]
        np.testing.assert_allclose(spectra[name].top.values[0], top, rtol=1e-8)
        assert bool(spectra[name].top.converged.all())


def test_which_closures_and_tools_keep_their_products_in_the_loop(problem, monkeypatch):
    params, _ = problem
    assert not data.products_as_programs(mlp_loss, params)  # no convolution
    seen = []

    @jax.jit
    def traced(p):
        seen.append(data.products_as_programs(cnn_loss, p))
        return H.hessian_eigenpairs(cnn_loss, p, **EIGENPAIRS).values

    before = compiled_products()
    untraced = H.hessian_eigenpairs(cnn_loss, params, **EIGENPAIRS).values
    np.testing.assert_allclose(traced(params), untraced, rtol=1e-9)
    assert seen == [False]  # inside a trace: products in the loop
    H.trace(cnn_loss, params, num_matvecs=6)  # Hutch++: one batch of products, no loop
    H.diagonal(cnn_loss, params, num_matvecs=4)
    assert compiled_products() <= before + 1  # the untraced eigenpairs' program only
    monkeypatch.setattr(data, "_cpu_threads", lambda: 1)  # the loop would hold the only thread
    assert not data.products_as_programs(cnn_loss, params)


def test_an_error_in_a_product_program_is_raised_by_the_tool(problem, monkeypatch):
    params, _ = problem

    def failing(f, params, vectors):
        raise FloatingPointError("the product program failed")

    monkeypatch.setattr(data, "_closure_products", failing)
    with pytest.raises(FloatingPointError, match="the product program failed"):
        H.hessian_eigenpairs(cnn_loss, params, **EIGENPAIRS)


def test_a_nan_product_is_reported_not_converged(problem):
    params, _ = problem
    bad = {**params, "bias": params["bias"].at[0].set(jnp.nan)}
    pairs = H.hessian_eigenpairs(cnn_loss, bad, **EIGENPAIRS)
    assert not bool(pairs.finite) and not bool(pairs.converged.any())
