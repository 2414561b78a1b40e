"""gx.hessian.dataset_mean: streamed and stacked data sources against the full-batch dense Hessian.

The reference throughout is the dense Hessian (``jax.hessian`` through
``gx.hessian.hessian_matrix``) of the loss written out on the whole data set
at once, and NumPy's ``eigvalsh`` / ``trace`` of it.
"""

import gc
import os
import subprocess
import sys
import weakref

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

import gradxform as gx

H = gx.hessian

pytestmark = pytest.mark.usefixtures("x64")

SIZES = (7, 7, 7, 5)  # a smaller last batch: the mean weights batches by their size


N_EXAMPLES = sum(SIZES)
# the options of every eigenpairs call on a streamed objective: one compiled solver for all
EIGENPAIRS = dict(k=2, which="both", tol=1e-9, max_matvecs=31)


def make_data(seed=0, n=N_EXAMPLES):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    labels = rng.integers(0, 3, size=n)
    return x, labels


def model(p, x):
    return jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]


def make_params(seed=1):
    rng = np.random.default_rng(seed)
    return {
        "w1": jnp.asarray(rng.normal(size=(3, 4))),
        "b1": jnp.asarray(0.1 * rng.normal(size=4)),
        "w2": jnp.asarray(rng.normal(size=(4, 3))),
        "b2": jnp.zeros(3),
    }


def split(x, labels, sizes=SIZES):
    edges = np.cumsum((0, *sizes))
    return [(x[a:b], labels[a:b]) for a, b in zip(edges[:-1], edges[1:])]


def batch_loss(p, batch):
    x, labels = batch
    return H.softmax_cross_entropy(model(p, x), labels)


@pytest.fixture(scope="module")
def problem():
    with jax.enable_x64(True):
        x, labels = make_data()
        params = make_params()
        dense = np.asarray(H.hessian_matrix(lambda p: batch_loss(p, (x, labels)), params))
        yield x, labels, params, dense


def test_streamed_products_value_and_gradient_are_the_full_batch_ones(problem):
    """Unequal batches weighted by their size give the full-data mean exactly (to rounding)."""
    x, labels, params, dense = problem
    objective = H.dataset_mean(batch_loss, split(x, labels))
    op = objective.operator(params)
    V = np.random.default_rng(2).normal(size=(3, op.size))
    out = jax.vmap(op.matvec)(jnp.asarray(V))  # three vectors, one pass
    assert objective.report.batches == len(SIZES) and objective.report.examples == len(x)
    np.testing.assert_allclose(out, V @ dense, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(objective.matrix(params), dense, rtol=1e-12, atol=1e-13)
    full = lambda p: batch_loss(p, (x, labels))  # noqa: E731
    np.testing.assert_allclose(objective.value(params), full(params), rtol=1e-13)
    grads = jax.tree.map(np.asarray, (objective.grad(params), jax.grad(full)(params)))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-13), *grads)


def test_stacked_arrays_are_one_scan_with_the_same_products(problem):
    x, labels, params, _ = problem
    n = 3 * 7  # equal batches only
    stacked = {"x": x[:n].reshape(3, 7, 3), "y": labels[:n].reshape(3, 7)}
    objective = H.dataset_mean(lambda p, b: batch_loss(p, (b["x"], b["y"])), stacked)
    assert objective.stacked
    want = np.asarray(H.hessian_matrix(lambda p: batch_loss(p, (x[:n], labels[:n])), params))
    np.testing.assert_allclose(objective.matrix(params), want, rtol=1e-12, atol=1e-13)
    assert objective.report.passes == 0  # no host pass: the scan ran inside the program


def test_memory_does_not_grow_with_the_data_set(problem):
    """10 distinct batches against 1 batch repeated 10 times: the same mean, and the source
    (a callable returning a generator) never has more than one batch alive at a time."""
    x, labels, params, _ = problem
    batch = (x[:7], labels[:7])
    alive, most = [], [0]

    def source():
        for _ in range(10):
            gc.collect()
            most[0] = max(most[0], sum(ref() is not None for ref in alive))
            fresh = (np.array(batch[0]), np.array(batch[1]))  # a new array every time
            alive.append(weakref.ref(fresh[0]))
            yield fresh

    repeated = H.dataset_mean(batch_loss, source)
    once = H.dataset_mean(batch_loss, [batch])
    v = jnp.asarray(np.random.default_rng(3).normal(size=31))
    ten, one = repeated.operator(params).matvec(v), once.operator(params).matvec(v)
    np.testing.assert_allclose(ten, one, rtol=1e-12, atol=1e-14)
    assert repeated.report.batches == 10 and repeated.report.examples == 70
    assert most[0] <= 1, most[0]  # at most the previous batch, never the data set


@pytest.mark.slow
def test_spectral_tools_take_a_streamed_objective(problem):
    x, labels, params, dense = problem
    objective = H.dataset_mean(batch_loss, split(x, labels))
    lam = np.linalg.eigvalsh(dense)
    pairs = H.hessian_eigenpairs(objective, params, **EIGENPAIRS)
    assert bool(pairs.converged.all()) and pairs.nonfinite_batch is None
    np.testing.assert_allclose(pairs.values, [*lam[:2], *lam[::-1][:2]], rtol=1e-9)
    # Hutch++ is exact once its sketch (a third of the products) spans all 31 directions
    est = H.trace(objective, params, num_matvecs=93)
    np.testing.assert_allclose(est.estimate, np.trace(dense), rtol=1e-10)
    point = H.classify_critical_point(objective, params, method="dense")
    assert point.verdict == "not_critical"
    np.testing.assert_allclose([point.lambda_min, point.lambda_max], lam[[0, -1]], rtol=1e-10)


def test_an_empty_source_and_a_one_shot_iterator_are_errors():
    with pytest.raises(ValueError, match="batches must be a source that yields at least one"):
        H.dataset_mean(batch_loss, [])
    with pytest.raises(ValueError, match="at least one batch"):
        H.dataset_mean(batch_loss, lambda: iter(()))
    with pytest.raises(ValueError, match="re-iterable"):
        H.dataset_mean(batch_loss, iter([(np.ones((2, 3)), np.zeros(2, int))]))
    with pytest.raises(ValueError, match="model must be given for curvature='ggn'"):
        H.dataset_mean(batch_loss, [(np.ones((2, 3)), np.zeros(2, int))], curvature="ggn")


def test_a_batch_whose_shape_changes_mid_pass_is_named(problem):
    x, labels, params, _ = problem
    batches = split(x, labels)
    batches[2] = (np.ones((7, 5)), batches[2][1])  # 5 features instead of 3
    objective = H.dataset_mean(batch_loss, batches)
    with pytest.raises(ValueError, match=r"batch 2 must be shaped like batch 0"):
        H.trace(objective, params, num_matvecs=6)  # the other tests' compiled trace
    with pytest.raises(ValueError, match=r"batch 2 must be shaped like batch 0"):
        objective.value(params)


def test_a_nan_batch_is_reported_with_its_index(problem):
    x, labels, params, _ = problem
    batches = split(x, labels)
    bad = batches[1][0].copy()
    bad[3, 1] = np.nan
    batches[1] = (bad, batches[1][1])
    clean = H.trace(H.dataset_mean(batch_loss, split(x, labels)), params, num_matvecs=6)
    assert bool(clean.finite) and clean.nonfinite_batch is None
    objective = H.dataset_mean(batch_loss, batches)
    with pytest.warns(RuntimeWarning, match="batch 1 gave a NaN"):
        est = H.trace(objective, params, num_matvecs=6)
    assert not bool(est.finite) and est.nonfinite_batch == 1
    assert objective.report.nonfinite_batch == 1


@pytest.mark.slow
def test_block_spectra_are_the_dense_diagonal_blocks(problem):
    """Each block against NumPy on the dense Hessian's diagonal block: top eigenvalue,
    trace (Hutch++ exact: its sketch spans the block), SLQ nodes (Lanczos with as many
    steps as the block has entries finds its eigenvalues)."""
    x, labels, params, dense = problem
    objective = H.dataset_mean(batch_loss, split(x, labels))
    blocks = {"w1": "hidden", "b1": "hidden", "*": "out"}
    out = H.block_spectra(
        objective, params, blocks, max_matvecs=16, trace_matvecs=48, density_steps=16
    )
    flat_index = {"hidden": np.r_[0:4, 7:19], "out": np.r_[4:7, 19:31]}  # ravel: b1 b2 w1 w2
    assert list(out) == ["hidden", "out"]
    assert out["hidden"].paths == ("b1", "w1") and out["out"].paths == ("b2", "w2")
    for label, index in flat_index.items():
        block = dense[np.ix_(index, index)]
        lam = np.linalg.eigvalsh(block)
        spectrum = out[label]
        assert spectrum.size == index.size
        np.testing.assert_allclose(spectrum.top.values[0], lam[-1], rtol=1e-9)
        np.testing.assert_allclose(spectrum.trace.estimate, np.trace(block), rtol=1e-9)
        nodes = np.asarray(spectrum.density.nodes)[np.asarray(spectrum.density.weights) > 1e-12]
        assert np.min(np.abs(nodes[:, None] - lam[None, :]), axis=1).max() < 1e-8
    with pytest.raises(ValueError, match="blocks pattern 'conv\\*' must be a pattern matching"):
        H.block_spectra(objective, params, {"conv*": "conv", "*": "rest"})


@pytest.mark.slow
def test_block_spectra_find_every_blocks_top_pairs_in_lockstep(problem):
    """The top two pairs of each block against the dense diagonal block, and the passes:
    the blocks' searches share them, so a smaller budget saves the slowest block's
    products in passes, not the sum over the blocks."""
    x, labels, params, dense = problem
    objective = H.dataset_mean(batch_loss, split(x, labels))
    blocks = {"w1": "hidden", "b1": "hidden", "*": "out"}
    index = {"hidden": np.r_[0:4, 7:19], "out": np.r_[4:7, 19:31]}
    passes, products = [objective.report.passes], []
    for budget in (12, 6):
        out = H.block_spectra(
            objective, params, blocks, k=2, max_matvecs=budget, trace_matvecs=3,
            density_probes=1, density_steps=2,
        )  # fmt: skip
        passes.append(objective.report.passes)
        products.append([int(out[b].top.num_matvecs) for b in index])
    assert products[1] == [6, 6] and min(products[0]) > 6, products
    per_call = np.diff(passes)  # the traces' and densities' passes are the same in both
    saved = per_call[0] - per_call[1]
    assert saved == max(products[0]) - max(products[1]), (passes, products)  # not the sum
    for label, rows in index.items():
        lam = np.linalg.eigvalsh(dense[np.ix_(rows, rows)])
        pairs = out[label].top
        assert sorted(pairs.vectors) == sorted(out[label].paths)
        residual = np.asarray(pairs.residuals)
        np.testing.assert_allclose(pairs.values, lam[::-1][:2], atol=residual.max() * 1.01)


def test_a_nan_batch_on_the_stacked_path_is_reported_with_its_index(problem):
    """The stacked scan names the first non-finite batch as the streamed pass does."""
    x, labels, params, _ = problem
    xs, ys = x[:21].reshape(3, 7, 3).copy(), labels[:21].reshape(3, 7)
    clean = H.dataset_mean(lambda p, b: batch_loss(p, (b["x"], b["y"])), {"x": xs, "y": ys})
    np.testing.assert_allclose(clean.value(params), batch_loss(params, (x[:21], labels[:21])))
    assert clean.report.nonfinite_batch is None
    poisoned = xs.copy()
    poisoned[2, 4, 0] = np.nan  # the last of three batches: not batch 0, not the only one
    objective = H.dataset_mean(
        lambda p, b: batch_loss(p, (b["x"], b["y"])), {"x": poisoned, "y": ys}
    )
    with pytest.warns(RuntimeWarning, match="batch 2 gave a NaN"):
        est = H.trace(objective, params, num_matvecs=6)
    assert not bool(est.finite) and est.nonfinite_batch == 2
    with pytest.warns(RuntimeWarning, match="batch 2 gave a NaN"):
        objective.value(params)
    assert objective.report.nonfinite_batch == 2


def test_progress_line_reports_each_pass_batches_and_examples(problem, capsys):
    """progress=True: one line on stderr, rewritten in place, whose last state is the last
    pass's batch count and example count (the split's 4 batches, 26 examples)."""
    x, labels, params, _ = problem
    quiet = H.dataset_mean(batch_loss, split(x, labels))
    quiet.value(params)
    assert "dataset_mean: pass" not in capsys.readouterr().err
    objective = H.dataset_mean(batch_loss, split(x, labels), progress=True)
    H.trace(objective, params, num_matvecs=6)
    err = capsys.readouterr().err
    assert err.endswith("\n") and err.count("\n") == 1  # one line, closed when the tool returns
    states = [s for s in err.strip().split("\r") if s]
    last = states[-1]
    passes = objective.report.passes
    assert last.startswith(f"dataset_mean: pass {passes}  batch {len(SIZES)}/{len(SIZES)}  ")
    assert f"  {N_EXAMPLES} examples  " in last and last.endswith(" s")
    assert any(s.startswith("dataset_mean: pass 1  batch 4/4") for s in states)
    with pytest.raises(TypeError, match="progress must be True or False"):
        H.dataset_mean(batch_loss, split(x, labels), progress="yes")


def _stacked_objective(x, labels, batches=3, size=7):
    n = batches * size
    stacked = {"x": x[:n].reshape(batches, size, 3), "y": labels[:n].reshape(batches, size)}
    return H.dataset_mean(lambda p, b: batch_loss(p, (b["x"], b["y"])), stacked)


@pytest.mark.slow
def test_stacked_streamed_and_plain_objectives_give_the_same_tool_results(problem):
    """Three equal batches: the stacked scan, the streamed pass and the plain full-data ``f``
    give the same eigenpairs (both ends) to 1e-12 with the same product counts, and the
    plain ones are the dense Hessian's. (The batched products of the estimators are
    checked against the dense Hessian above, on both paths.)"""
    x, labels, params, _ = problem
    n = 21
    plain = lambda p: batch_loss(p, (x[:n], labels[:n]))  # noqa: E731
    streamed = H.dataset_mean(batch_loss, split(x[:n], labels[:n], (7, 7, 7)))
    dense = np.asarray(H.hessian_matrix(plain, params))
    runs = [
        H.hessian_eigenpairs(f, params, **EIGENPAIRS)
        for f in (plain, _stacked_objective(x, labels), streamed)
    ]
    pairs, others = runs[0], runs[1:]
    lam = np.linalg.eigvalsh(dense)
    np.testing.assert_allclose(pairs.values, [*lam[:2], *lam[::-1][:2]], rtol=1e-9)
    for other in others:
        assert int(other.num_matvecs) == int(pairs.num_matvecs)
        np.testing.assert_allclose(other.values, pairs.values, rtol=1e-12)
        np.testing.assert_allclose(other.residuals, pairs.residuals, atol=1e-12)
        for a, b in zip(jax.tree.leaves(other.vectors), jax.tree.leaves(pairs.vectors)):
            np.testing.assert_allclose(np.abs(a), np.abs(b), atol=1e-9)  # a sign each


def _equations(jaxpr):
    for eqn in jaxpr.eqns:
        yield eqn
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            yield from _equations(sub)


@pytest.mark.slow
def test_no_flat_vector_is_joined_on_the_stacked_or_streamed_path(problem):
    """The traced tools on both data paths: no concatenate builds an axis of n = 31 (a flat
    vector), and the streamed callback's operands are the leaves, not one flat buffer."""
    x, labels, params, _ = problem
    n = 31

    def tools(objective):
        def run(p):
            pairs = H.hessian_eigenpairs(objective, p, k=1, max_matvecs=8)
            return pairs.values, H.trace(objective, p, num_matvecs=6).estimate

        return list(_equations(jax.make_jaxpr(run)(params).jaxpr))

    streamed = H.dataset_mean(batch_loss, split(x, labels))
    for objective in (_stacked_objective(x, labels), streamed):
        eqns = tools(objective)
        joined = [
            e for e in eqns if e.primitive.name == "concatenate" and n in e.outvars[0].aval.shape
        ]
        assert not joined, joined
    callbacks = [e for e in eqns if e.primitive.name == "pure_callback"]
    assert callbacks
    for e in callbacks:
        shapes = [v.aval.shape for v in e.invars]
        assert len(shapes) == 2 * len(jax.tree.leaves(params)), shapes  # params and v, per leaf
        assert not any(n in s for s in shapes), shapes


_ONE_CPU = """
import os, sys
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
import jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_enable_x64", True)
import gradxform as gx
x = np.random.default_rng(0).normal(size=(12, 3))
loss = lambda p, b: jnp.mean(jnp.tanh(b[0] @ p) ** 2)
streamed = gx.hessian.dataset_mean(loss, [(x[:6],), (x[6:],)])
stacked = gx.hessian.dataset_mean(loss, (x.reshape(2, 6, 3),))
p = jnp.linspace(0.5, 1.5, 3)
dense = np.linalg.eigvalsh(np.asarray(jax.hessian(lambda q: loss(q, (x,)))(p)))
try:
    pairs = gx.hessian.hessian_eigenpairs(streamed, p, k=1, tol=1e-10, max_matvecs=3)
    print("streamed", float(pairs.values[0]), float(dense[-1]))
except RuntimeError as error:
    print("RuntimeError:", error)
pairs = gx.hessian.hessian_eigenpairs(stacked, p, k=1, tol=1e-10, max_matvecs=3)
print("stacked", float(pairs.values[0]), float(dense[-1]))
"""


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs os.sched_setaffinity")
def test_on_one_cpu_a_streamed_tool_needs_a_second_pool_thread_and_a_stacked_one_runs():
    # the compiled tool holds a thread of XLA's CPU pool while its products' programs wait
    # for another: an error with one thread, NPROC=2 gives the pool a second on one CPU
    for nproc in (None, "2"):
        env = {k: v for k, v in os.environ.items() if k != "NPROC"}
        env.update({} if nproc is None else {"NPROC": nproc})
        done = subprocess.run(
            [sys.executable, "-c", _ONE_CPU], capture_output=True, text=True, timeout=300, env=env
        )
        assert done.returncode == 0, done.stderr
        first, stacked = done.stdout.strip().splitlines()[-2:]
        if nproc is None:
            prefix = "RuntimeError: the threads of XLA's CPU pool that a streamed objective's "
            assert first.startswith(prefix), first
            assert "NPROC" in first and first.endswith("got '1 thread on 1 CPU'"), first
        else:
            assert first.startswith("streamed "), first
        for line in (stacked,) if nproc is None else (first, stacked):
            got, want = map(float, line.split()[1:])  # against eigvalsh of the dense Hessian
            np.testing.assert_allclose(got, want, rtol=1e-10)
