"""A small character-level transformer trained with equinox and gradxform.

    python examples/equinox_transformer.py

The model (token and position embeddings, pre-norm blocks of causal
self-attention and a GELU MLP, layer norms with a scale and a bias, every
linear layer with a bias) learns to predict the next character of a small
corpus: the source of Python's ``textwrap`` module. One optimizer, built in
``make_optimizer``, holds in its state:

* parameter groups (``gx.partition``, labelled by glob patterns on the
  parameters' paths, ``GROUPS``): AdamW with weight decay on the matrices,
  Adam without decay on the biases and norms, and Adam with a smaller
  learning rate on the embeddings;
* gradient accumulation (``gx.accumulate``): every 4 microbatches make one
  step on their mean gradient;
* an EMA of the weights (``gx.ema_params``), read with
  ``gx.averaged_params`` for the validation loss.

Halfway through, ``gx.set_hyperparams(state, group="embed", learning_rate=...)``
lowers the embeddings' rate alone, and the jitted step is not compiled again.

The optimizer sees the model's arrays only (``eqx.partition``); the step
closes over the rest of the model.
"""

import inspect
import textwrap
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import gradxform as gx

CONTEXT = 32  # characters a prediction sees
D_MODEL = 32
HEADS = 4


class Corpus(NamedTuple):
    vocab: str  # every character of the text, sorted; a token is an index into it
    train: np.ndarray  # int32 token ids, the first 90% of the text
    val: np.ndarray  # the last 10%


def load_corpus() -> Corpus:
    text = inspect.getsource(textwrap)
    vocab = "".join(sorted(set(text)))
    index = {char: i for i, char in enumerate(vocab)}
    ids = np.array([index[char] for char in text], np.int32)
    split = int(0.9 * len(ids))
    return Corpus(vocab, ids[:split], ids[split:])


def validation_batch(tokens: np.ndarray, batch_size: int = 64):
    """Evenly spaced windows of the held-out text (the same ones at every call)."""
    starts = np.linspace(0, len(tokens) - CONTEXT - 1, batch_size).astype(int)
    windows = tokens[starts[:, None] + np.arange(CONTEXT + 1)]
    return windows[:, :-1], windows[:, 1:]


class Embed(eqx.Module):
    tokens: eqx.nn.Embedding
    positions: jax.Array

    def __init__(self, vocab_size: int, key):
        tokens_key, positions_key = jax.random.split(key)
        self.tokens = eqx.nn.Embedding(vocab_size, D_MODEL, key=tokens_key)
        self.positions = 0.02 * jax.random.normal(positions_key, (CONTEXT, D_MODEL))

    def __call__(self, ids):  # (time,) -> (time, D_MODEL)
        return jax.vmap(self.tokens)(ids) + self.positions[: ids.shape[0]]


class Block(eqx.Module):
    """Pre-norm causal self-attention and a GELU MLP, each added to its input."""

    norm1: eqx.nn.LayerNorm
    qkv: eqx.nn.Linear
    out: eqx.nn.Linear
    norm2: eqx.nn.LayerNorm
    up: eqx.nn.Linear
    down: eqx.nn.Linear

    def __init__(self, key):
        keys = jax.random.split(key, 4)
        self.norm1 = eqx.nn.LayerNorm(D_MODEL, eps=1e-5)
        self.qkv = eqx.nn.Linear(D_MODEL, 3 * D_MODEL, key=keys[0])  # queries, keys, values
        self.out = eqx.nn.Linear(D_MODEL, D_MODEL, key=keys[1])
        self.norm2 = eqx.nn.LayerNorm(D_MODEL, eps=1e-5)
        self.up = eqx.nn.Linear(D_MODEL, 4 * D_MODEL, key=keys[2])
        self.down = eqx.nn.Linear(4 * D_MODEL, D_MODEL, key=keys[3])

    def __call__(self, x):  # (time, D_MODEL), one sequence
        h = jax.vmap(self.norm1)(x)
        heads = (x.shape[0], 3, HEADS, D_MODEL // HEADS)
        q, k, v = jnp.unstack(jax.vmap(self.qkv)(h).reshape(heads), axis=-3)
        attended = jax.nn.dot_product_attention(q, k, v, is_causal=True)
        x = x + jax.vmap(self.out)(attended.reshape(x.shape))
        return x + jax.vmap(lambda t: self.down(jax.nn.gelu(self.up(self.norm2(t)))))(x)


class Transformer(eqx.Module):
    embed: Embed
    blocks: list[Block]
    norm_out: eqx.nn.LayerNorm
    head: eqx.nn.Linear

    def __init__(self, vocab_size: int, layers: int, key):
        keys = jax.random.split(key, layers + 2)
        self.embed = Embed(vocab_size, keys[0])
        self.blocks = [Block(k) for k in keys[1:-1]]
        self.norm_out = eqx.nn.LayerNorm(D_MODEL, eps=1e-5)
        self.head = eqx.nn.Linear(D_MODEL, vocab_size, key=keys[-1])

    def __call__(self, ids):  # (time,) -> next-character logits
        x = self.embed(ids)
        for block in self.blocks:
            x = block(x)
        return jax.vmap(lambda t: self.head(self.norm_out(t)))(x)


def loss_fn(model: Transformer, x, y):
    logits = jax.vmap(model)(x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def microbatches(tokens: np.ndarray, batch_size: int, seed: int):
    """An endless stream of random windows of the text (inputs, next characters)."""
    rng = np.random.default_rng(seed)
    while True:
        starts = rng.integers(0, len(tokens) - CONTEXT - 1, batch_size)
        windows = tokens[starts[:, None] + np.arange(CONTEXT + 1)]
        yield windows[:, :-1], windows[:, 1:]


# The group of each parameter, by glob patterns on its path in the model (such as
# "blocks/0/qkv/weight" or "embed/tokens/weight"); the first pattern that matches wins.
# A layer norm's scale is called "weight" here, like a linear layer's matrix.
GROUPS = {"embed/*": "embed", "*/bias": "no_decay", "*norm*/weight": "no_decay", "*": "decay"}


def make_optimizer(
    learning_rate: float,
    embed_learning_rate: float,
    weight_decay: float,
    ema_decay: float,
    microbatches_per_step: int,
):
    """AdamW on the matrices, Adam on the biases and norms, a slower Adam on the embeddings.

    Every ``microbatches_per_step`` calls make one step on their mean gradient;
    an EMA of the parameters after each step is kept in the state for evaluation.
    """
    groups = gx.partition(
        {
            "decay": gx.adamw(learning_rate, weight_decay=weight_decay),
            "no_decay": gx.adam(learning_rate),
            "embed": gx.adam(embed_learning_rate),
        },
        GROUPS,
    )
    return gx.accumulate(gx.chain(groups, gx.ema_params(ema_decay)), every=microbatches_per_step)


def main(
    steps: int = 200,
    layers: int = 2,
    batch_size: int = 16,
    microbatches_per_step: int = 4,
    learning_rate: float = 1e-2,
    embed_learning_rates: tuple[float, float] = (3e-3, 1e-3),
    weight_decay: float = 0.1,
    ema_decay: float = 0.9,
    seed: int = 0,
) -> dict:
    """Trains for ``steps`` optimizer steps, each on ``microbatches_per_step`` microbatches.

    The embeddings' learning rate is ``embed_learning_rates[0]`` for the
    first half of the steps and ``embed_learning_rates[1]`` after.
    """
    corpus = load_corpus()
    model = Transformer(len(corpus.vocab), layers, jax.random.PRNGKey(seed))
    params, static = eqx.partition(model, eqx.is_inexact_array)  # arrays, and the rest
    tx = make_optimizer(
        learning_rate, embed_learning_rates[0], weight_decay, ema_decay, microbatches_per_step
    )
    state = tx.init(params)
    traces = []  # one entry per trace of train_step: a recompile would add one

    @eqx.filter_jit
    def train_step(params, state, x, y):
        traces.append(None)
        loss, grads = jax.value_and_grad(lambda p: loss_fn(eqx.combine(p, static), x, y))(params)
        updates, state = tx.update(grads, state, params)  # a step every microbatches_per_step calls
        return gx.apply_updates(params, updates), state, loss

    evaluate = eqx.filter_jit(lambda params, x, y: loss_fn(eqx.combine(params, static), x, y))
    x_val, y_val = validation_batch(corpus.val)
    initial_val_loss = float(evaluate(params, x_val, y_val))
    hyperparams_start = gx.get_hyperparams(state)
    batches = microbatches(corpus.train, batch_size, seed)
    losses = []
    for call in range(steps * microbatches_per_step):
        if call == (steps // 2) * microbatches_per_step:
            # the embeddings' group only, between steps; the state keeps its
            # shapes and dtypes, so train_step is not compiled again
            state = gx.set_hyperparams(state, group="embed", learning_rate=embed_learning_rates[1])
        params, state, loss = train_step(params, state, *next(batches))
        losses.append(float(loss))

    ema_params = gx.averaged_params(state)  # the averaged weights, shaped like params
    return {
        "losses": losses,  # one per microbatch
        "initial_val_loss": initial_val_loss,
        "val_loss": float(evaluate(params, x_val, y_val)),
        "val_loss_ema": float(evaluate(ema_params, x_val, y_val)),
        "hyperparams_start": hyperparams_start,
        "hyperparams_end": gx.get_hyperparams(state),
        "train_step_traces": len(traces),
        "params": params,
        "ema_params": ema_params,
    }


if __name__ == "__main__":
    result = main()
    print(
        f"equinox transformer, validation loss: {result['initial_val_loss']:.3f} at the start, "
        f"{result['val_loss']:.3f} at the end, {result['val_loss_ema']:.3f} with the EMA weights"
    )
