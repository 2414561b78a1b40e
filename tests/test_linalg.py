"""gradxform._linalg: one-matrix decompositions that a vmap turns into a loop on CPU.

References: the ``jnp.linalg`` call on each matrix alone (bitwise), NumPy's
decompositions (reconstruction), the lowered program (the LAPACK call's operand
is one matrix, not the batch), and, in a subprocess, ``gx.minimize`` with
Newton's method ``vmap``-ed over 15 starts, which hung on 2 cores before.
"""

import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradxform as gx
from gradxform import _linalg

BATCH, N = 5, 6


def _symmetric(seed=0):
    x = np.random.default_rng(seed).normal(size=(BATCH, N, N))
    return jnp.asarray(x @ np.swapaxes(x, -1, -2) + N * np.eye(N), jnp.float32)


CASES = {
    "eigh": (_linalg.eigh, lambda m: jnp.linalg.eigh(m, symmetrize_input=True)),
    "cholesky": (_linalg.cholesky, lambda m: jax.lax.linalg.cholesky(m, symmetrize_input=False)),
    "qr_basis": (_linalg.qr_basis, lambda m: jnp.linalg.qr(m)[0]),
    "svd": (_linalg.svd, lambda m: jnp.linalg.svd(m, full_matrices=False)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_vmap_is_the_one_matrix_call_on_each_matrix(name):
    ours, reference = CASES[name]
    m = _symmetric()
    batched = jax.jit(jax.vmap(ours))(m)
    for i in range(BATCH):
        alone = jax.jit(reference)(m[i])
        for got, want in zip(jax.tree.leaves(batched), jax.tree.leaves(alone)):
            np.testing.assert_array_equal(got[i], want)


def test_decompositions_reconstruct_their_matrices():
    m = np.asarray(_symmetric(1), np.float64)
    with jax.enable_x64(True):
        a = jnp.asarray(m)
        w, v = jax.vmap(_linalg.eigh)(a)
        np.testing.assert_allclose(v @ (w[..., None] * np.swapaxes(v, -1, -2)), m, atol=1e-12)
        np.testing.assert_allclose(w, np.linalg.eigvalsh(m), rtol=1e-13)
        c = jax.vmap(_linalg.cholesky)(a)
        np.testing.assert_allclose(c @ np.swapaxes(c, -1, -2), m, atol=1e-12)
        b = np.random.default_rng(2).normal(size=(BATCH, N))
        x = jax.vmap(_linalg.solve)(a, jnp.asarray(b))
        np.testing.assert_allclose(x, np.linalg.solve(m, b[..., None])[..., 0], rtol=1e-10)
        q = _linalg.batched(_linalg.qr_basis, a)
        np.testing.assert_allclose(
            np.swapaxes(q, -1, -2) @ q, np.broadcast_to(np.eye(N), m.shape), atol=1e-13
        )


@pytest.mark.parametrize("name", sorted(CASES))
def test_derivatives_in_both_modes_are_the_one_matrix_calls(name):
    ours, reference = CASES[name]
    m = _symmetric(3)

    def loss(decompose):
        return lambda a: sum(jnp.sum(jnp.abs(x) ** 1.5) for x in jax.tree.leaves(decompose(a)))

    # a custom_vmap alone has no transpose: reverse mode must still work, under vmap too
    got = jax.jit(jax.vmap(jax.grad(loss(ours))))(m)
    want = jnp.stack([jax.jit(jax.grad(loss(reference)))(m[i]) for i in range(BATCH)])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    tangent = jnp.ones_like(m[0])
    np.testing.assert_allclose(
        jax.jvp(loss(ours), (m[0],), (tangent,))[1],
        jax.jvp(loss(reference), (m[0],), (tangent,))[1],
        rtol=1e-5,
    )


def test_the_top_hessian_eigenvalue_is_differentiable():
    def f(p):
        return jnp.sum(p**4) + p[0] * p[1]

    def top(p):
        return jnp.linalg.eigh(jax.hessian(f)(p))[0][-1]  # the reference, plain jnp

    p = jnp.array([1.0, 2.0])
    got = jax.grad(lambda q: gx.hessian.eigh(f, q)[0][-1])(p)
    np.testing.assert_allclose(got, jax.grad(top)(p), rtol=1e-6)


def test_on_cpu_the_lapack_call_gets_one_matrix_in_a_loop():
    text = jax.jit(jax.vmap(_linalg.eigh)).lower(_symmetric()).as_text()
    operands = re.findall(r"lapack_ssyevd\w*.*?tensor<([0-9x]+)xf32>", text)
    assert operands and all(shape == f"{N}x{N}" for shape in operands), operands
    assert "stablehlo.while" in text
    plain = jax.jit(jax.vmap(lambda m: jnp.linalg.eigh(m)[0])).lower(_symmetric()).as_text()
    batched = re.findall(r"lapack_ssyevd\w*.*?tensor<([0-9x]+)xf32>", plain)
    assert batched == [f"{BATCH}x{N}x{N}"], batched  # jnp's own call: the whole batch at once


_NEWTON_STARTS = """
import jax, jax.numpy as jnp, numpy as np
import gradxform as gx
n, starts = 60, 15
rng = np.random.default_rng(0)
A = rng.normal(size=(n, n)); A = A @ A.T / n + np.eye(n)
def f(x):
    return 0.5 * x @ (jnp.asarray(A, jnp.float32) @ x) + jnp.sum(jnp.cos(x)) + 0.1 * jnp.sum(x**4)
x0 = jnp.asarray(rng.normal(size=(starts, n)), jnp.float32)
solve = lambda x: gx.minimize(f, x, method="newton", maxiter=30).params
together = jax.jit(jax.vmap(solve))(x0)
for i in (0, starts - 1):
    print(float(jnp.max(jnp.abs(jax.jit(solve)(x0[i]) - together[i]))))
"""


@pytest.mark.slow
def test_newton_vmapped_over_starts_finishes_and_equals_separate_solves():
    # in a subprocess: before the decompositions looped under vmap, this hung on 2 cores
    done = subprocess.run(
        [sys.executable, "-c", _NEWTON_STARTS], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    diffs = [float(line) for line in done.stdout.split()]
    assert len(diffs) == 2 and max(diffs) <= 1e-5, diffs
