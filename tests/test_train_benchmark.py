"""benchmarks/train.py: the vmapped sweep against plain single-model loops, and a smoke run.

The benchmark trains every (learning rate, seed) model of an optimizer at once
with ``jax.vmap``, each model's rate set in its optimizer state. The check
that this trick is sound is independent of it: a plain Python loop of jitted
single-model steps, the optimizer built with the rate as its argument (no
``set_hyperparams``, no ``vmap``, no ``scan``), must give the same losses and
weights. They agree to float32 rounding, not bitwise: the vmapped program
batches the models' matrix products, and XLA sums in a different order. The
losses agree to ~1e-6 relative after 20 steps; single weights to ~6e-6 absolute
(Adam's ``m / sqrt(v)`` turns rounding in near-zero gradients into step
differences), far below the ~1e-2 a wrong rate (1e-3 against 8e-3) moves them.
"""

import json
import pathlib
import sys

import jax
import numpy as np
import pytest

import gradxform as gx

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
import train  # noqa: E402

STEPS = 20


@pytest.fixture(scope="module")
def task():
    scale = train.SCALES["quick"]
    return train.cnn_task(scale)._replace(steps=STEPS, eval_every=10)


def plain_run(task, lr: float, seed: int):
    """One model, the optimizer built with ``lr``, a Python loop of jitted steps."""
    tx = gx.chain(gx.adamw(lr, weight_decay=0.0), gx.scale_by_schedule(train.schedule(STEPS)))
    params = task.init(jax.random.split(jax.random.key(seed))[0])
    state = tx.init(params)
    data_key = jax.random.split(jax.random.key(seed))[1]

    @jax.jit
    def step(params, state, t):
        batch = task.sample(task.data, jax.random.fold_in(data_key, t))
        grads = jax.grad(task.loss)(params, batch)
        updates, state = tx.update(grads, state, params)
        return gx.apply_updates(params, updates), state

    losses = [float(task.loss(params, task.val))]
    for t in range(STEPS):
        params, state = step(params, state, t)
        if (t + 1) % task.eval_every == 0:
            losses.append(float(task.loss(params, task.val)))
    return np.array(losses), params


def test_vmapped_models_equal_separate_plain_runs(task):
    lrs, seeds = [1e-3, 8e-3], [0, 1]
    run = train.train_models(task, "adamw", lrs, seeds)
    for i, (lr, seed) in enumerate(zip(lrs, seeds)):
        losses, params = plain_run(task, lr, seed)
        np.testing.assert_allclose(run["val"][i], losses, rtol=2e-5)
        for ours, theirs in zip(jax.tree.leaves(run["params"]), jax.tree.leaves(params)):
            np.testing.assert_allclose(ours[i], theirs, rtol=1e-4, atol=2e-5)
    # the rates did reach the models: 8x the rate moved the weights differently
    assert not np.allclose(run["val"][0][1:], run["val"][1][1:], rtol=1e-3)
    assert run["val"][1][-1] < run["val"][1][0] - 0.5  # and the loss fell


@pytest.mark.slow  # ~30 s of compilation: timing rows, two sweeps
def test_quick_run_writes_results(tmp_path):
    args = ["--quick", "--optimizers", "adamw,sgd", "--tasks", "cnn", "--out", str(tmp_path)]
    train.main(args)
    results = json.loads((tmp_path / "train_quick.json").read_text())
    rows = results["tasks"]["cnn"]
    assert set(rows) == {"adamw", "sgd"}
    adamw = rows["adamw"]
    assert adamw["val_mean"][-1] < adamw["val_mean"][0]  # the loss decreased
    finite = [v for v in adamw["mean_final_val"] if np.isfinite(v)]
    assert adamw["best_final_val"] == min(finite)  # the best rate has the lowest mean
    assert adamw["steps_ratio_to_adamw"] == 1.0
    assert results["targets"]["cnn"] == adamw["best_final_val"]
    timing = results["timing"]["cnn"]["update"]
    assert timing["adamw"]["gx_bytes_per_param"] == pytest.approx(8.0, abs=0.01)  # m and v
    assert timing["sgd"]["gx_bytes_per_param"] == pytest.approx(4.0, abs=0.01)  # the momentum
    markdown = (tmp_path / "train_quick.md").read_text()
    assert "| adamw |" in markdown and "| sgd |" in markdown


def test_corpus_split_is_by_file_and_fixed():
    train_ids, val_ids, facts = train.load_corpus(50_000)
    assert facts["bytes"] == 50_000 == train_ids.size + val_ids.size
    assert train_ids.max() < len(train.VOCAB) and train_ids.dtype == np.int32
    shares = [train.is_validation_file(f"m{i}.py") for i in range(2000)]
    assert 0.07 < np.mean(shares) < 0.13  # one file in ten
    text = "def f(x):\n\treturn x  # é"
    ids = train._BYTE_TO_ID[np.frombuffer(text.encode(), np.uint8)]
    decoded = "".join(train.VOCAB[i] for i in ids)
    assert decoded.startswith("def f(x):\n\treturn x  # ")
    assert decoded.endswith("<other><other>")  # é is two bytes outside ASCII
