"""The Hessian tools, ``gx.minimize`` and the second-order transforms on a
convolutional objective: library-layout convolutions inside their loops
(``gx.canonical_convolutions``, applied on CPU).

XLA's CPU backend leaves a convolution inside a loop in its own layout (a generic,
~10x slower kernel for a kernel's gradient); the tools and solvers put every
convolution of their program in the library layout. The references: NumPy's
``eigvalsh`` of the dense Hessian (``jax.hessian``), and the same tool or solver
with the rewrite switched off, which must agree with it to rounding.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import gradxform as gx
from gradxform.hessian import operators
from gradxform.second_order import bounded, least_squares, transforms
from gradxform.second_order import minimize as minimize_module

H = gx.hessian

pytestmark = pytest.mark.usefixtures("x64")

EIGENPAIRS = dict(k=1, which="both", tol=1e-9, max_matvecs=80)
LIBRARY = "b01f_01io->b01f"
DIMS = ("NHWC", "HWIO", "NHWC")


def _images_and_labels():
    rng = np.random.default_rng(0)
    return rng.normal(size=(12, 5, 5, 1)), rng.integers(0, 3, size=12)


IMAGES, LABELS = _images_and_labels()


def cnn_loss(p):
    """A convolution (3x3, 2 channels), tanh, a dense layer to 3 classes: 173 parameters."""
    h = jax.lax.conv_general_dilated(
        jnp.asarray(IMAGES), p["conv"], (1, 1), "SAME", dimension_numbers=DIMS
    )
    logits = jnp.tanh(h).reshape(h.shape[0], -1) @ p["dense"] + p["bias"]
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


def layouts(fn, *args):
    """The layouts of the convolutions in ``jit(fn)``'s compiled program."""
    text = jax.jit(fn).lower(*args).compile().as_text()
    return set(re.findall(r"dim_labels=([^,\s}]+)", text))


@pytest.fixture
def without_rewrite(monkeypatch):
    """Switches the rewrite off in the tools and the solver (their programs recompiled),
    and the programs compiled without it are dropped afterwards."""

    def switch_off():
        for module in (operators, minimize_module, bounded, least_squares, transforms):
            monkeypatch.setattr(module, "canonical_convolutions", lambda fn: fn)
        jax.clear_caches()

    yield switch_off
    jax.clear_caches()


def test_eigenpairs_of_a_convolutional_closure(problem, without_rewrite):
    params, dense = problem
    pairs = H.hessian_eigenpairs(cnn_loss, params, **EIGENPAIRS)
    exact = np.linalg.eigvalsh(dense)
    assert bool(pairs.converged.all()) and bool(pairs.finite)
    np.testing.assert_allclose(pairs.values, [exact[0], exact[-1]], rtol=1e-9)
    # each residual certifies its value: |H y - theta y| recomputed with the dense matrix
    for i, value in enumerate(pairs.values):
        y = np.asarray(ravel_pytree(jax.tree.map(lambda v, i=i: v[i], pairs.vectors))[0])
        residual = np.linalg.norm(dense @ y - float(value) * y)
        assert residual <= 1e-9 * max(1.0, abs(float(value)))

    def tool(p):
        return H.hessian_eigenpairs(cnn_loss, p, **EIGENPAIRS).values

    assert layouts(tool, params) == {LIBRARY}  # every product in the loop, library layout
    without_rewrite()
    assert layouts(tool, params) - {LIBRARY}  # XLA leaves the loop's kernel gradient as is
    in_loop = H.hessian_eigenpairs(cnn_loss, params, **EIGENPAIRS)
    np.testing.assert_allclose(pairs.values, in_loop.values, rtol=1e-11)


def test_density_agrees_without_the_rewrite_and_block_tops_with_dense(problem, without_rewrite):
    params, dense = problem
    options = dict(num_probes=2, steps=12)
    blocks = {"conv": "conv", "dense": "dense", "bias": "dense"}
    block_options = dict(k=1, max_matvecs=40, trace_matvecs=6, density_probes=1, density_steps=6)
    density = H.spectral_density(cnn_loss, params, **options)
    spectra = H.block_spectra(cnn_loss, params, blocks, **block_options)
    # SLQ's quadrature is exact on the trace of H^0 and H^1 per probe: nodes in the spectrum
    exact = np.linalg.eigvalsh(dense)
    assert bool(density.finite)
    assert exact[0] - 1e-9 <= float(np.min(density.nodes)) <= float(np.max(density.nodes))
    assert float(np.max(density.nodes)) <= exact[-1] + 1e-9
    flat, unravel = ravel_pytree(params)
    owner = unravel(jnp.arange(flat.size, dtype=flat.dtype))
    for name, leaves in (("conv", ["conv"]), ("dense", ["dense", "bias"])):
        index = np.concatenate([np.ravel(owner[leaf]) for leaf in leaves]).astype(int)
        top = np.linalg.eigvalsh(dense[np.ix_(index, index)])[-1]
        np.testing.assert_allclose(spectra[name].top.values[0], top, rtol=1e-8)
        assert bool(spectra[name].top.converged.all())
    without_rewrite()
    density_in_loop = H.spectral_density(cnn_loss, params, **options)
    # the same probes, the same Lanczos recurrences: equal to rounding
    np.testing.assert_allclose(density.nodes, density_in_loop.nodes, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(density.density, density_in_loop.density, rtol=1e-7, atol=1e-10)


def descends_alike_without_the_rewrite(fn, params, without_rewrite, loss=None):
    """``jit(fn)`` (params -> new params) has only library-layout convolutions, and equals
    itself compiled without the rewrite (which has others) to rounding; it descends."""
    assert layouts(fn, params) == {LIBRARY}
    ours = jax.jit(fn)(params)
    without_rewrite()
    assert layouts(fn, params) - {LIBRARY}
    theirs = jax.jit(fn)(params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12), ours, theirs)
    loss = loss or cnn_loss
    assert float(loss(ours)) < float(loss(params))


@pytest.mark.parametrize("method", ["newton-cg", "bfgs", "l-bfgs-b"])
def test_minimize_runs_its_loop_in_the_library_layout(problem, without_rewrite, method):
    """The solver's gradients (and Newton-CG's products) sit in its loop."""
    params, _ = problem
    bounds = (-2.0, 2.0) if method == "l-bfgs-b" else None

    def solve(p):
        return gx.minimize(cnn_loss, p, method=method, maxiter=4, bounds=bounds).params

    descends_alike_without_the_rewrite(solve, params, without_rewrite)


def test_least_squares_runs_its_loop_in_the_library_layout(problem, without_rewrite):
    """Residuals through a convolution: the Jacobian's products sit in the solver's loop."""
    params, _ = problem

    def residuals(p):
        h = jax.lax.conv_general_dilated(
            jnp.asarray(IMAGES), p["conv"], (1, 1), "SAME", dimension_numbers=DIMS
        )
        return jnp.tanh(h).reshape(h.shape[0], -1) @ p["dense"] + p["bias"] - 0.1

    def solve(p):
        return gx.least_squares(residuals, p, jacobian="matvec", max_nfev=4).params

    squares = lambda p: jnp.sum(residuals(p) ** 2)  # noqa: E731
    descends_alike_without_the_rewrite(solve, params, without_rewrite, squares)


def test_a_nan_product_is_reported_not_converged(problem):
    params, _ = problem
    bad = {**params, "bias": params["bias"].at[0].set(jnp.nan)}
    pairs = H.hessian_eigenpairs(cnn_loss, bad, **EIGENPAIRS)
    assert not bool(pairs.finite) and not bool(pairs.converged.any())


@pytest.mark.parametrize("make", [gx.newton_cg, gx.trust_ncg], ids=["newton_cg", "trust_ncg"])
def test_a_second_order_transform_runs_its_loops_in_the_library_layout(
    problem, without_rewrite, make
):
    """One jitted step: the line search's or the trust region's evaluations and CG's
    products sit in loops inside ``update``."""
    params, _ = problem
    tx = make()

    def step(p):
        updates, _ = tx.update(jax.grad(cnn_loss)(p), tx.init(p), p, value_fn=cnn_loss)
        return gx.apply_updates(p, updates)

    descends_alike_without_the_rewrite(step, params, without_rewrite)
