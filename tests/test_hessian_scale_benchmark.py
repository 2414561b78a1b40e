"""Smoke test of benchmarks/hessian_scale.py: its pieces against independent references
(an end-to-end ``--smoke`` run compiles seven spectral tools, ~2 minutes of CPU: too
much for the suite, so it is left to the script itself).

References: the parameter count of ResNet-20 written out layer by layer; scipy's
``wasserstein_distance``; NumPy's own permutation check of the torch-order index;
the full-batch loss of the same images for the streamed source's mean.
"""

import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

import gradxform as gx

PATH = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "hessian_scale.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("hessian_scale", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_resnet20_has_the_papers_parameter_count_and_a_torch_order_permutation(bench):
    params = jax.eval_shape(lambda: bench.init_resnet(jax.random.PRNGKey(0)))
    convs = [(3, 16)] + [(16, 16)] * 6 + [(16, 32)] + [(32, 32)] * 5 + [(32, 64)] + [(64, 64)] * 5
    want = sum(9 * a * b + b for a, b in convs) + 64 * 10 + 10
    assert bench.count(params) == want == 269_034
    index = bench.torch_flat_index(params)
    np.testing.assert_array_equal(np.sort(index), np.arange(want))


def test_wasserstein_and_the_streamed_source(bench):
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=7), rng.normal(size=5) + 1
    wa, wb = rng.random(7), rng.random(5)
    want = scipy.stats.wasserstein_distance(a, b, wa, wb)
    assert abs(bench.wasserstein1(a, wa, b, wb) - want) < 1e-12
    source = bench.Source(seed=3, batches=3, size=4, image=8)
    first, again = list(source()), list(source())  # re-iterable, deterministic
    for (x1, y1), (x2, y2) in zip(first, again):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    assert first[0][0].shape == (4, 8, 8, 3) and first[0][0].dtype == np.float32
    params = bench.init_resnet(jax.random.PRNGKey(1), (2, 2, 2))
    objective = gx.hessian.dataset_mean("softmax_cross_entropy", source, model=bench.resnet)
    x = np.concatenate([b[0] for b in first])
    y = np.concatenate([b[1] for b in first])
    full = gx.hessian.softmax_cross_entropy(bench.resnet(params, jnp.asarray(x)), y)
    np.testing.assert_allclose(objective.value(params), full, rtol=1e-5)


@pytest.fixture(scope="module")
def transformer_bench(bench):  # imported by hessian_scale from its own folder
    import hessian_transformer

    return hessian_transformer


def test_the_transformer_its_data_and_its_torch_twin(transformer_bench):
    T = transformer_bench
    d, layers = 8, 2
    params = T.init_transformer(jax.random.PRNGKey(0), d, layers)
    per_layer = 2 * 2 * d + d * 3 * d + d * d + d * 4 * d + 4 * d * d  # norms, qkv, out, mlp
    want = T.VOCAB * d + T.CONTEXT * d + layers * per_layer + 2 * d + d * T.VOCAB
    assert sum(np.size(x) for x in jax.tree.leaves(params)) == want
    np.testing.assert_allclose(T.transition_matrix().sum(axis=1), 1.0, rtol=1e-12)
    source = T.TokenSource(seed=2, batches=2, size=3)
    first, again = list(source()), list(source())
    for (x1, y1), (x2, y2) in zip(first, again):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    x, y = first[0]
    assert x.shape == y.shape == (3, T.CONTEXT)
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])  # each label is the next token
    # the streamed mean is the full-batch loss (per-sequence sums, averaged over sequences)
    objective = gx.hessian.dataset_mean("softmax_cross_entropy", source, model=T.transformer)
    xs, ys = (np.concatenate([b[i] for b in first]) for i in (0, 1))
    logits = T.transformer(params, jnp.asarray(xs))
    log_p = jax.nn.log_softmax(logits, axis=-1)
    picked = np.take_along_axis(np.asarray(log_p), ys[..., None], axis=-1)
    np.testing.assert_allclose(objective.value(params), -picked.sum() / len(xs), rtol=1e-5)
    # causal: the logits at a position do not depend on the tokens after it
    changed = xs.copy()
    changed[:, -1] = (changed[:, -1] + 1) % T.VOCAB
    other = T.transformer(params, jnp.asarray(changed))
    np.testing.assert_allclose(other[:, :-1], logits[:, :-1], rtol=1e-5, atol=1e-6)
    torch = pytest.importorskip("torch")
    module = T.torch_transformer(params, torch)
    ours = module(torch.from_numpy(xs.astype(np.int64))).detach().numpy()
    np.testing.assert_allclose(ours, np.asarray(logits).reshape(-1, T.VOCAB), atol=1e-5)
