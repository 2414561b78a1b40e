"""Property-based tests (hypothesis), on a few fixed shapes so that compiles stay cheap.

chain is associative with identity as its unit; scale is linear; Adam's
direction does not change when the gradients are scaled by c > 0; the L-BFGS
two-loop recursion equals the dense matrix it represents and N&W's naive loop;
Lanczos Ritz values lie within the dense spectrum. (Schedules staying within their bounds:
tests/test_schedules.py.)
"""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import gradxform as gx
from gradxform.second_order import directions as dirs
from tests.references import dense_lbfgs_inverse, naive_lbfgs_two_loop

N = 4
vectors = st.lists(st.floats(-10.0, 10.0, allow_nan=False, width=32), min_size=N, max_size=N).map(
    lambda v: np.asarray(v, np.float32)
)

BLOCKS = [
    lambda: gx.scale(0.5),
    lambda: gx.scale_by_momentum(0.9),
    lambda: gx.scale_by_rms(0.9),
    lambda: gx.clip(2.0),
    lambda: gx.add_decayed_weights(0.1),
    lambda: gx.scale_by_adam(),
]


def trajectory(tx, grads, params):
    """The updates of ``tx`` for each gradient in turn (op by op: no compile per example)."""
    state = tx.init(params)
    out = []
    for g in grads:
        u, state = tx.update(jnp.asarray(g), state, params)
        out.append(np.asarray(u))
    return np.stack(out)


@functools.cache
def compiled_trajectory(tx):
    """trajectory for a transform built once, as one compiled scan (reused across examples)."""

    @jax.jit
    def run(grads, params):
        def step(state, g):
            u, state = tx.update(g, state, params)
            return state, u

        return jax.lax.scan(step, tx.init(params), grads)[1]

    return lambda grads, params: np.asarray(run(jnp.asarray(np.stack(grads)), params))


ADAM = gx.scale_by_adam()
ADAM_NO_EPS = gx.scale_by_adam(eps=0.0)
_lbfgs_update = jax.jit(dirs.lbfgs_update)
_lbfgs_two_loop = jax.jit(dirs.lbfgs_two_loop)


@settings(max_examples=15, deadline=None)
@given(
    picks=st.lists(st.integers(0, len(BLOCKS) - 1), min_size=3, max_size=3),
    grads=st.lists(vectors, min_size=3, max_size=3),
    params=vectors,
)
def test_chain_is_associative_with_identity_as_unit(picks, grads, params):
    a, b, c = (BLOCKS[i] for i in picks)
    params = jnp.asarray(params)
    left = trajectory(gx.chain(gx.chain(a(), b()), c()), grads, params)
    right = trajectory(gx.chain(a(), gx.chain(b(), c())), grads, params)
    np.testing.assert_array_equal(left, right)
    alone = trajectory(a(), grads, params)
    np.testing.assert_array_equal(trajectory(gx.chain(gx.identity(), a()), grads, params), alone)
    np.testing.assert_array_equal(trajectory(gx.chain(a(), gx.identity()), grads, params), alone)


@settings(max_examples=40, deadline=None)
@given(factor=st.floats(-5.0, 5.0, width=32), x=vectors, y=vectors, c=st.floats(-3.0, 3.0))
def test_scale_is_linear(factor, x, y, c):
    tx = gx.scale(factor)
    state = tx.init(jnp.zeros(N))

    def apply(v):
        return np.asarray(tx.update(jnp.asarray(v, jnp.float32), state)[0], np.float64)

    size = np.abs(factor) * (np.abs(x) + np.abs(y) + 1e-30)
    np.testing.assert_allclose(apply(x + y), apply(x) + apply(y), atol=1e-6 * size.max() + 1e-30)
    np.testing.assert_allclose(
        apply(np.float32(c) * x), np.float32(c) * apply(x), atol=1e-6 * size.max() + 1e-30
    )


@settings(max_examples=20, deadline=None)
@given(
    grads=st.lists(
        st.lists(st.floats(0.0625, 10.0, width=32), min_size=N, max_size=N), min_size=3, max_size=3
    ),
    signs=st.lists(st.sampled_from([-1.0, 1.0]), min_size=N, max_size=N),
    c=st.floats(1e-3, 1e3),
)
def test_adam_direction_is_invariant_to_gradient_scale(grads, signs, c):
    grads = [np.asarray(g, np.float64) * np.asarray(signs) for g in grads]
    run = compiled_trajectory(ADAM_NO_EPS)
    with jax.enable_x64(True):
        params = jnp.zeros(N, jnp.float64)
        base = run(grads, params)
        scaled = run([c * g for g in grads], params)
    np.testing.assert_allclose(scaled, base, rtol=1e-12)
    # with the default eps the invariance holds up to eps / sqrt(v)
    run = compiled_trajectory(ADAM)
    base32 = run([g.astype(np.float32) for g in grads], jnp.zeros(N))
    scaled32 = run([(c * g).astype(np.float32) for g in grads], jnp.zeros(N))
    smallest = c * min(np.abs(g).min() for g in grads)  # eps=1e-8 matters relative to this
    np.testing.assert_allclose(scaled32, base32, rtol=1e-5 + 4e-8 / smallest)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), num_pairs=st.integers(1, 7))
def test_lbfgs_two_loop_equals_its_dense_matrix(seed, num_pairs):
    rng = np.random.default_rng(seed)
    n, m = 5, 4
    B = rng.normal(size=(n, n))
    spd = B @ B.T + n * np.eye(n)
    pairs = []
    with jax.enable_x64(True):
        memory = dirs.lbfgs_init(n, m, jnp.float64)
        for _ in range(num_pairs):
            s = rng.normal(size=n)
            y = spd @ s  # y.s > 0
            memory = _lbfgs_update(memory, jnp.asarray(s), jnp.asarray(y))
            pairs.append((s, y))
        kept = pairs[-m:]
        s_new, y_new = kept[-1]
        gamma = (s_new @ y_new) / (y_new @ y_new)
        H = dense_lbfgs_inverse(kept, gamma, n)
        g = rng.normal(size=n)
        got = np.asarray(_lbfgs_two_loop(memory, jnp.asarray(g)))
    atol = 1e-12 * np.abs(H @ g).max()
    np.testing.assert_allclose(got, H @ g, rtol=1e-9, atol=atol)
    np.testing.assert_allclose(got, naive_lbfgs_two_loop(kept, gamma, g), rtol=1e-9, atol=atol)


SIZE = 10


@jax.jit
def _ritz_values(matrix, v0):
    result = gx.hessian.lanczos(lambda v: matrix @ v, v0, 6)
    return gx.hessian.ritz_pairs(result)[0], result.size


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), spread=st.floats(1e-3, 1e3))
def test_lanczos_ritz_values_lie_within_the_dense_spectrum(seed, spread):
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.normal(size=(SIZE, SIZE)))
    eigenvalues = spread * rng.normal(size=SIZE)
    matrix = (Q * eigenvalues) @ Q.T
    with jax.enable_x64(True):
        theta, size = _ritz_values(jnp.asarray(matrix), jnp.asarray(rng.normal(size=SIZE)))
        theta = np.asarray(theta)[: int(size)]
    lo, hi = eigenvalues.min(), eigenvalues.max()
    slack = 1e-10 * np.abs(eigenvalues).max()
    assert np.all(theta >= lo - slack) and np.all(theta <= hi + slack)


def test_hypothesis_profile_follows_the_ci_variable():
    # tests/conftest.py: derandomised examples and printed blobs under CI
    ci = settings.get_profile("ci")
    assert ci.derandomize and ci.deadline is None and ci.print_blob
    if os.environ.get("CI") and "HYPOTHESIS_PROFILE" not in os.environ:
        assert settings.default.derandomize
