"""The examples in examples/ run, learn, and mean what they say."""

import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

EXAMPLES = pathlib.Path(__file__).parents[1] / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # trains an MLP on digits with flax, then with equinox
@pytest.mark.parametrize("name", ["flax_mlp", "equinox_mlp"])
def test_framework_examples_learn_digits(name):
    result = load(name).main(steps=60, batch_size=64)
    losses = np.asarray(result["losses"])
    assert np.all(np.isfinite(losses)) and losses[-10:].mean() < 0.5 * losses[:5].mean()
    assert result["test_accuracy"] > 0.8  # chance is 0.1


def test_custom_optimizer_is_its_formula():
    example = load("custom_optimizer")
    tx = example.clipped_nesterov_rmsprop(peak_lr=0.1, steps=20, warmup=5, weight_decay=0.01)
    # the same algorithm, written out with optax's blocks as the oracle
    schedule = optax.join_schedules(
        [optax.linear_schedule(0.0, 0.1, 5), optax.cosine_decay_schedule(0.1, 15)], [5]
    )
    reference = optax.chain(
        optax.clip_by_global_norm(1.0),
        optax.scale_by_stddev(0.99, eps=1e-8),  # centered RMSProp's scaling
        optax.trace(0.9, nesterov=True),
        optax.add_decayed_weights(0.01),
        optax.scale_by_learning_rate(schedule),
    )
    params = jnp.array([1.0, -2.0, 0.5])
    s_ours, s_ref = tx.init(params), reference.init(params)
    # jitted: one compile each, instead of op-by-op eager dispatch (4.5 -> 2.0 s of CPU)
    update_ours, update_ref = jax.jit(tx.update), jax.jit(reference.update)
    for t in range(12):
        g = jnp.sin(params * (t + 1)) + 0.1 * t
        u_ours, s_ours = update_ours(g, s_ours, params)
        u_ref, s_ref = update_ref(g, s_ref, params)
        np.testing.assert_allclose(u_ours, u_ref, rtol=2e-5, atol=1e-7, err_msg=f"step {t}")
        params = params + u_ours


def test_custom_optimizer_example_descends_rosenbrock():
    result = load("custom_optimizer").main(steps=200)
    assert result["final"] < 1e-2 * result["start"]
    assert jax.tree.structure(result["params"]) == jax.tree.structure({"x": 0, "y": 0})


# --- the transformer examples: parameter groups, accumulation, EMA (issue #17) ---------------

TRANSFORMER = dict(steps=32, layers=1, batch_size=16, microbatches_per_step=4, seed=0)
RATES = dict(learning_rate=1e-2, embed_learning_rates=(3e-3, 1e-3), weight_decay=0.1, ema_decay=0.9)


@pytest.fixture(scope="module", params=["flax_transformer", "equinox_transformer"])
def transformer(request):
    """(the example module, its framework-free problem, main()'s result): one run each.

    Measured on a 2-core box under a load of ~9: 30-45 s wall, ~20 s of CPU per example
    (its compiles: the model's eager init, the train step, the evaluation), and 10 s wall
    for the reference below (two compiles)."""
    example = load(request.param)
    return example, pure_problem(request.param, example), example.main(**TRANSFORMER, **RATES)


def pure_problem(name, example):
    """The example's initial weights as a flat list, its loss on that list, each leaf's path
    and the label the reference gives it by its own rule, without glob patterns (an
    embedding lives under ``embed``, a vector is a bias or a norm's scale or shift, any
    other matrix is decayed)."""
    vocab_size, seed = len(example.load_corpus().vocab), TRANSFORMER["seed"]
    if name == "flax_transformer":
        from flax import nnx

        model = example.Transformer(vocab_size, TRANSFORMER["layers"], nnx.Rngs(seed))
        graphdef, params = nnx.split(model)
        params = nnx.as_pure(params)
        rebuild = lambda p: nnx.merge(graphdef, p)  # noqa: E731
    else:
        import equinox as eqx

        model = example.Transformer(vocab_size, TRANSFORMER["layers"], jax.random.PRNGKey(seed))
        params, static = eqx.partition(model, eqx.is_inexact_array)
        rebuild = lambda p: eqx.combine(p, static)  # noqa: E731
    with_paths, treedef = jax.tree_util.tree_flatten_with_path(params)
    paths = [
        "/".join(
            str(next(getattr(k, a) for a in ("key", "name", "idx") if hasattr(k, a))) for k in p
        )
        for p, _ in with_paths
    ]
    leaves = [leaf for _, leaf in with_paths]
    labels = [
        "embed" if path.startswith("embed/") else "no_decay" if leaf.ndim == 1 else "decay"
        for path, leaf in zip(paths, leaves)
    ]

    def loss(leaves, x, y):
        return example.loss_fn(rebuild(jax.tree.unflatten(treedef, leaves)), x, y)

    return leaves, loss, paths, labels


def reference_run(leaves, loss, labels, batches):
    """The examples' training, written without partition, accumulate or ema_params: optax's
    adamw/adam on each group's leaves, the mean of 4 microbatch gradients taken in NumPy,
    the embeddings' rate an argument of the jitted step (lowered halfway), a float64 NumPy EMA."""
    steps, k = TRANSFORMER["steps"], TRANSFORMER["microbatches_per_step"]
    lr, embed_lrs, wd = RATES["learning_rate"], RATES["embed_learning_rates"], RATES["weight_decay"]
    index = {g: [i for i, label in enumerate(labels) if label == g] for g in set(labels)}

    def optimizers(embed_lr):
        return {
            "decay": optax.adamw(lr, weight_decay=wd),
            "no_decay": optax.adam(lr),
            "embed": optax.adam(embed_lr),
        }

    @jax.jit
    def step(leaves, states, grads, embed_lr):
        new, new_states = list(leaves), {}
        for group, tx in optimizers(embed_lr).items():
            mine = lambda tree, group=group: [tree[i] for i in index[group]]  # noqa: E731
            updates, new_states[group] = tx.update(mine(grads), states[group], mine(leaves))
            for i, u in zip(index[group], updates):
                new[i] = leaves[i] + u
        return new, new_states

    states = {g: tx.init([leaves[i] for i in index[g]]) for g, tx in optimizers(0.0).items()}
    value_and_grad = jax.jit(jax.value_and_grad(loss))
    ema = [np.zeros(leaf.shape, np.float64) for leaf in leaves]
    losses = []
    for t in range(steps):
        grads = []
        for _ in range(k):
            value, g = value_and_grad(leaves, *next(batches))
            losses.append(float(value))
            grads.append([np.asarray(leaf) for leaf in g])
        mean = [sum(gs[1:], gs[0]) / np.float32(k) for gs in zip(*grads)]
        embed_lr = np.float32(embed_lrs[0] if t < steps // 2 else embed_lrs[1])
        leaves, states = step(leaves, states, mean, embed_lr)
        ema = [
            RATES["ema_decay"] * m + (1 - RATES["ema_decay"]) * np.asarray(x, np.float64)
            for m, x in zip(ema, leaves)
        ]
    debiased = [m / (1 - RATES["ema_decay"] ** steps) for m in ema]
    return np.asarray(losses), [np.asarray(x) for x in leaves], debiased


@pytest.mark.slow  # the fixture trains a small transformer with flax, then with equinox
def test_transformer_examples_learn_with_groups_accumulation_and_ema(transformer):
    example, _, result = transformer
    losses = np.asarray(result["losses"])
    k = TRANSFORMER["microbatches_per_step"]
    assert losses.shape == (TRANSFORMER["steps"] * k,) and np.all(np.isfinite(losses))
    # chance is log(vocabulary size) ~ 4.5; the last 5 steps' microbatches are far below it
    assert losses[-5 * k :].mean() < 0.65 * losses[:k].mean()
    assert np.isfinite(result["val_loss_ema"])
    assert result["val_loss_ema"] < 0.7 * result["initial_val_loss"]
    assert result["train_step_traces"] == 1  # the mid-run rate change did not recompile


@pytest.mark.slow  # shares the runs above
def test_transformer_examples_change_only_the_embedding_rate(transformer):
    _, _, result = transformer
    start, end = result["hyperparams_start"], result["hyperparams_end"]
    assert set(start) == set(end) == {"decay", "no_decay", "embed"}
    rate = lambda hyper, group: float(hyper[group]["learning_rate"])  # noqa: E731
    embed_lrs = RATES["embed_learning_rates"]
    assert rate(start, "embed") == np.float32(embed_lrs[0])
    assert rate(end, "embed") == np.float32(embed_lrs[1])
    for group in ("decay", "no_decay"):
        assert rate(start, group) == rate(end, group) == np.float32(RATES["learning_rate"])
    assert float(end["decay"]["weight_decay"]) == np.float32(RATES["weight_decay"])
    assert "weight_decay" not in end["no_decay"] and "weight_decay" not in end["embed"]


@pytest.mark.slow  # a second training run, with optax per group (two more compiles)
def test_transformer_examples_equal_a_per_group_reference(transformer):
    example, (leaves, loss, paths, labels), result = transformer
    assert labels.count("embed") == 2 and labels.count("decay") == 4 * TRANSFORMER["layers"] + 1
    batches = example.microbatches(
        example.load_corpus().train, TRANSFORMER["batch_size"], TRANSFORMER["seed"]
    )
    losses, final, ema = reference_run(leaves, loss, labels, batches)
    np.testing.assert_allclose(result["losses"], losses, rtol=2e-6)  # measured: 2.2e-7
    d = example.D_MODEL
    for kind, ours, theirs in (
        ("params", result["params"], final),
        ("EMA", result["ema_params"], ema),
    ):
        for path, a, b in zip(paths, jax.tree.leaves(ours), theirs):
            if path.endswith("qkv/bias"):
                # the keys' bias adds q.b to every logit of a query: the softmax cancels it, so
                # its gradient is zero but for rounding, which Adam scales up to steps of
                # ~learning_rate. Left out: the queries' and values' biases are compared.
                a, b = np.delete(a, np.s_[d : 2 * d]), np.delete(b, np.s_[d : 2 * d])
            # measured: 2.4e-7 apart at most
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=f"{kind} {path}")
