"""orthogonalize (Newton-Schulz) and muon against independent references.

* The iteration against the quintic written here in NumPy (float64, 1e-12) and
  against an SVD: the output is ``U p(S / |G|_F) V^T`` with ``p`` the 5-fold
  composed polynomial, its singular values in the documented band [0.68, 1.21]
  (not 1), and the scale factors of both references' rules.
* muon against optax.contrib.muon (0.2.8) over 200 steps on a tree with a 2-D, a
  batched 3-D and a 1-D leaf, float32 and float64: bitwise (with optax's options:
  bias-corrected momentum, ``eps`` added to the norm, NAdamW on the 1-D leaf; a
  single matrix goes through the iteration as a batch of one, as optax's vmap does,
  since XLA's batched and unbatched products round differently).
* muon against torch.optim.Muon (2.14, 2-D only, bfloat16 Newton-Schulz) recorded
  in tests/reference/torch_muon.npz by tests/reference/record_torch_muon.py: the
  recorded gradients are fed to gradxform and each step compared; with
  ``ns_dtype=bfloat16`` (torch's rounding points) within float32 rounding
  (2.4e-7 per step measured) except where a 1-ulp float32 difference in the
  momentum flips a bfloat16 rounding of the iteration (one step in 200 of one
  config: 2.6e-4 < one bfloat16 ulp of the update).
"""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib as oc
import pytest

import gradxform as gx
from tests.helpers import replay_recorded_gradients

COEFFS = (3.4445, -4.7750, 2.0315)
STEPS = 200
REFERENCE = pathlib.Path(__file__).parent / "reference" / "torch_muon.npz"


def numpy_quintic(g: np.ndarray, steps: int = 5, eps: float = 1e-7) -> np.ndarray:
    """The iteration as Keller Jordan writes it, float64 NumPy, one matrix."""
    a, b, c = COEFFS
    x = g.T if g.shape[0] > g.shape[1] else g
    x = x / max(np.linalg.norm(x), eps)
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if g.shape[0] > g.shape[1] else x


def composed_polynomial(s: np.ndarray, steps: int = 5) -> np.ndarray:
    a, b, c = COEFFS
    for _ in range(steps):
        s = a * s + b * s**3 + c * s**5
    return s


@pytest.fixture(scope="module")
def matrices():
    rng = np.random.default_rng(1)
    return [rng.standard_normal(s) for s in [(7, 4), (4, 7), (5, 5)]]


def test_newton_schulz_is_the_quintic_and_maps_singular_values(matrices):
    with jax.enable_x64(True):
        for g in matrices:
            out = np.asarray(gx.newton_schulz(jnp.asarray(g), COEFFS, 5, 1e-7))
            np.testing.assert_allclose(out, numpy_quintic(g), rtol=0, atol=1e-12)
            u, s, vt = np.linalg.svd(g, full_matrices=False)
            expected = u @ np.diag(composed_polynomial(s / np.linalg.norm(g))) @ vt
            np.testing.assert_allclose(out, expected, rtol=0, atol=1e-10)
            sv = np.linalg.svd(out, compute_uv=False)
            assert sv.min() >= 0.68 and sv.max() <= 1.21, sv
            assert np.abs(sv - 1).max() > 1e-3  # a band, not U V^T exactly
            # the polar factor U V^T is what it approximates
            assert np.abs(out - u @ vt).max() < 0.35


def test_scaling_rules_and_batching():
    rng = np.random.default_rng(2)
    g = jnp.asarray(rng.standard_normal((2, 3, 6)), jnp.float32)
    ns = gx.newton_schulz(g, COEFFS, 5, 1e-7)
    cases = {
        ("original", "in_out"): np.sqrt(6 / 3),  # fan_out / fan_in = cols / rows
        ("original", "out_in"): 1.0,  # rows / cols < 1
        ("match_rms_adamw", "in_out"): 0.2 * np.sqrt(6),
        ("none", "in_out"): 1.0,
    }
    for (scaling, layout), factor in cases.items():
        tx = gx.orthogonalize(scaling=scaling, layout=layout)
        u, _ = tx.update(g, tx.init(g))
        np.testing.assert_allclose(u, factor * np.asarray(ns), rtol=1e-6, err_msg=scaling)
    for i in range(2):  # the leading axis is a batch of independent matrices
        np.testing.assert_array_equal(ns[i], gx.newton_schulz(g[i], COEFFS, 5, 1e-7))
    tx = gx.orthogonalize(batching="flatten", scaling="none")
    u, _ = tx.update(g, tx.init(g))
    flat = gx.newton_schulz(g.reshape(2, 18), COEFFS, 5, 1e-7)
    np.testing.assert_array_equal(u, np.asarray(flat).reshape(2, 3, 6))


def _tree_problem(dtype):
    rng = np.random.default_rng(0)
    shapes = {"w": (8, 5), "k": (3, 4, 6), "b": (5,)}
    p0 = {k: jnp.asarray(rng.standard_normal(s), dtype) for k, s in shapes.items()}
    target = {k: jnp.asarray(rng.standard_normal(s), dtype) for k, s in shapes.items()}
    noise = {
        k: jnp.asarray(0.1 * rng.standard_normal((STEPS, *s)), dtype) for k, s in shapes.items()
    }
    return p0, target, noise


def _run(tx, p0, target, noise):
    def step(carry, n):
        p, s = carry
        g = jax.tree.map(lambda p, t, n: 2 * (p - t) + n + 0.1 * jnp.sin(p), p, target, n)
        u, s = tx.update(g, s, p)
        p = optax.apply_updates(p, u)
        return (p, s), p

    return jax.jit(lambda p, n: jax.lax.scan(step, (p, tx.init(p)), n)[1])(p0, noise)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_parity_with_optax_contrib_muon(dtype):
    mdn = oc.MuonDimensionNumbers
    with jax.enable_x64(dtype == "float64"):
        p0, target, noise = _tree_problem(jnp.dtype(dtype))
        theirs = oc.muon(
            0.02,
            weight_decay=0.01,
            adam_weight_decay=0.001,
            muon_weight_dimension_numbers={"w": mdn(0, 1), "k": mdn(1, 2), "b": None},
        )
        ours = gx.muon(
            0.02,
            weight_decay=0.01,
            adam_weight_decay=0.001,
            bias_correction=True,  # optax bias-corrects the momentum
            eps=1e-8,
            eps_mode="add",  # X / (|X| + eps)
            adam_nesterov=True,  # optax's adam group is NAdamW when nesterov=True
        )
        a, b = _run(theirs, p0, target, noise), _run(ours, p0, target, noise)
    for leaf in a:  # the same expressions in the same order: the same bits
        np.testing.assert_array_equal(np.asarray(b[leaf]), np.asarray(a[leaf]), err_msg=leaf)


@pytest.fixture(scope="module")
def torch_record():
    return np.load(REFERENCE)


def _torch_replay(record, config, **kwargs):
    """gradxform fed torch's recorded gradients, from torch's initial params."""
    tx = gx.muon(layout="out_in", **kwargs)  # torch's Linear.weight is (out, in)
    return replay_recorded_gradients(tx, record, config, ("w1", "w2"))


TORCH_CONFIGS = {
    "default": {"learning_rate": 0.02, "weight_decay": 0.1},
    "plain_rms": {
        "learning_rate": 0.05,
        "momentum": 0.9,
        "nesterov": False,
        "scaling": "match_rms_adamw",
    },
}


@pytest.mark.parametrize("config", sorted(TORCH_CONFIGS))
def test_parity_with_torch_muon_recording(torch_record, config):
    steps = _torch_replay(torch_record, config, ns_dtype=jnp.bfloat16, **TORCH_CONFIGS[config])
    for leaf, (diff, size) in steps.items():
        per_step = diff.reshape(STEPS, -1).max(axis=1)
        assert np.mean(per_step <= 3e-7) >= 0.99, (leaf, np.sort(per_step)[-5:])
        assert per_step.max() <= size.max() * 2**-6, (leaf, per_step.max())
    # iterating in float32 instead is 10-25% of a step away from torch: the option matters
    f32 = _torch_replay(torch_record, config, **TORCH_CONFIGS[config])
    assert max(d.max() / s.max() for d, s in f32.values()) > 0.05


def test_bad_input():
    p = {"layer": {"w": jnp.ones((3, 2)), "b": jnp.ones(2)}}
    with pytest.raises(ValueError, match="leaf 'layer/b' of params must be an array of rank >= 2"):
        gx.orthogonalize().init(p)
    bad = [
        (lambda: gx.orthogonalize(ns_steps=0), ValueError, "ns_steps must be"),
        (lambda: gx.orthogonalize(ns_steps=2.5), TypeError, "ns_steps must be"),
        (lambda: gx.orthogonalize((1.0, 2.0)), ValueError, "ns_coeffs must be"),
        (lambda: gx.orthogonalize(eps=0.0), ValueError, "eps must be"),
        (lambda: gx.orthogonalize(scaling="adaptive"), ValueError, "scaling must be one of"),
        (lambda: gx.orthogonalize(layout="rows"), ValueError, "layout must be one of"),
        (lambda: gx.orthogonalize(batching="vmap"), ValueError, "batching must be one of"),
        (lambda: gx.orthogonalize(eps_mode="max"), ValueError, "eps_mode must be one of"),
        (lambda: gx.orthogonalize(ns_dtype=jnp.int32), (TypeError, ValueError), "ns_dtype must"),
        (lambda: gx.muon(0.1, momentum=1.0), ValueError, "momentum must be"),
        (lambda: gx.muon(0.1, weight_decay=-1.0), ValueError, "weight_decay must be"),
        (lambda: gx.muon(-0.1), ValueError, "learning_rate must be"),
        (lambda: gx.muon(0.1, adam_b2=1.0), ValueError, "b2 must be"),
        (lambda: gx.muon(0.1, labels={"*": "sgd"}), ValueError, "label"),
    ]
    for build, error, message in bad:
        with pytest.raises(error, match=message):
            build()


def test_labels_override_and_hyperparams():
    p = {"w": jnp.ones((3, 2)), "emb": jnp.ones((4, 2)), "b": jnp.ones(2)}
    g = jax.tree.map(lambda x: 2 * x, p)
    tx = gx.muon(0.1, labels={"emb": "adam", "b": "adam", "*": "muon"})
    state = tx.init(p)
    u, _ = tx.update(g, state, p)
    adam = gx.adamw(0.1, weight_decay=0.0)
    sub = {"emb": p["emb"], "b": p["b"]}
    expected, _ = adam.update({"emb": g["emb"], "b": g["b"]}, adam.init(sub), sub)
    np.testing.assert_array_equal(u["emb"], expected["emb"])  # the override routes emb to AdamW
    default, _ = gx.muon(0.1).update(g, gx.muon(0.1).init(p), p)
    assert np.abs(np.asarray(default["emb"]) - np.asarray(u["emb"])).max() > 1e-3
    state = gx.set_hyperparams(state, group="muon", ns_a=3.0)
    assert float(gx.get_hyperparams(state)["muon"]["ns_a"]) == 3.0
    changed, _ = tx.update(g, state, p)
    assert not np.array_equal(changed["w"], u["w"])  # read from the state, no rebuild


def test_checkpoint_resume_is_bitwise(tmp_path):
    p0, target, noise = _tree_problem(jnp.float32)
    tx = gx.muon(0.02, weight_decay=0.01)

    @jax.jit
    def step(p, s, n):
        return tx.update(jax.tree.map(lambda p, t, n: 2 * (p - t) + n, p, target, n), s, p)

    def advance(p, s, ts):
        for t in ts:
            u, s = step(p, s, {k: a[t] for k, a in noise.items()})
            p = gx.apply_updates(p, u)
        return p, s

    p, s = advance(p0, tx.init(p0), range(3))
    gx.checkpoint.save(tmp_path / "p.npz", p)
    gx.checkpoint.save(tmp_path / "s.npz", s)
    straight = advance(p, s, range(3, 6))
    p = gx.checkpoint.restore(tmp_path / "p.npz", like=p0)
    s = gx.checkpoint.restore(tmp_path / "s.npz", like=tx.init(p0))
    resumed = advance(p, s, range(3, 6))
    jax.tree.map(np.testing.assert_array_equal, resumed, straight)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32", "float64"])
def test_dtype_rows(dtype):
    with jax.enable_x64(dtype == "float64"):
        g = jnp.asarray(np.random.default_rng(3).standard_normal((4, 6)), dtype)
        tx = gx.muon(0.1)
        u, s = tx.update({"w": g}, tx.init({"w": g}), {"w": g})
        assert u["w"].dtype == jnp.dtype(dtype)
        assert s.inner_states["muon"].inner_state[0].mu["w"].dtype == jnp.dtype(dtype)
        ref = -0.1 * numpy_quintic(np.asarray(g, np.float64)) * np.sqrt(6 / 4)
        tol = {"bfloat16": 0.1, "float16": 0.02, "float32": 1e-5, "float64": 1e-12}[dtype]
        np.testing.assert_allclose(np.asarray(u["w"], np.float64), ref, atol=tol * 0.2)


def test_complex_matrices_use_the_conjugate_transpose():
    rng = np.random.default_rng(4)
    g = rng.standard_normal((4, 6)) + 1j * rng.standard_normal((4, 6))
    tx = gx.orthogonalize(scaling="none")
    x = jnp.asarray(g, jnp.complex64)
    out, _ = tx.update(x, tx.init(x))
    assert out.dtype == jnp.complex64
    u, s, vh = np.linalg.svd(g, full_matrices=False)
    expected = u @ np.diag(composed_polynomial(s / np.linalg.norm(g))) @ vh
    np.testing.assert_allclose(np.asarray(out), expected, rtol=0, atol=2e-5)
