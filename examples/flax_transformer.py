"""A small character-level transformer trained with flax (nnx) and gradxform.

    python examples/flax_transformer.py

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

``nnx.Optimizer`` keeps that state as nnx variables: ``nnx.as_pure`` reads
it as plain arrays for gradxform's functions and ``nnx.update`` writes it back.
"""

from __future__ import annotations

import inspect
import textwrap
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

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


class Embed(nnx.Module):
    def __init__(self, vocab_size: int, rngs: nnx.Rngs):
        self.tokens = nnx.Embed(vocab_size, D_MODEL, rngs=rngs)
        self.positions = nnx.Param(0.02 * jax.random.normal(rngs.params(), (CONTEXT, D_MODEL)))

    def __call__(self, ids):
        return self.tokens(ids) + self.positions[: ids.shape[-1]]


class Block(nnx.Module):
    """Pre-norm causal self-attention and a GELU MLP, each added to its input."""

    def __init__(self, rngs: nnx.Rngs):
        self.norm1 = nnx.LayerNorm(D_MODEL, epsilon=1e-5, rngs=rngs)
        self.qkv = nnx.Linear(D_MODEL, 3 * D_MODEL, rngs=rngs)  # queries, keys, values
        self.out = nnx.Linear(D_MODEL, D_MODEL, rngs=rngs)
        self.norm2 = nnx.LayerNorm(D_MODEL, epsilon=1e-5, rngs=rngs)
        self.up = nnx.Linear(D_MODEL, 4 * D_MODEL, rngs=rngs)
        self.down = nnx.Linear(4 * D_MODEL, D_MODEL, rngs=rngs)

    def __call__(self, x):  # (batch, time, D_MODEL)
        h = self.norm1(x)
        heads = x.shape[:-1] + (3, HEADS, D_MODEL // HEADS)
        q, k, v = jnp.unstack(self.qkv(h).reshape(heads), axis=-3)
        attended = jax.nn.dot_product_attention(q, k, v, is_causal=True)
        x = x + self.out(attended.reshape(x.shape))
        return x + self.down(jax.nn.gelu(self.up(self.norm2(x))))


class Transformer(nnx.Module):
    def __init__(self, vocab_size: int, layers: int, rngs: nnx.Rngs):
        self.embed = Embed(vocab_size, rngs)
        self.blocks = nnx.List([Block(rngs) for _ in range(layers)])
        self.norm_out = nnx.LayerNorm(D_MODEL, epsilon=1e-5, rngs=rngs)
        self.head = nnx.Linear(D_MODEL, vocab_size, rngs=rngs)

    def __call__(self, ids):  # (batch, time) -> next-character logits
        x = self.embed(ids)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm_out(x))


def loss_fn(model: Transformer, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()


def microbatches(tokens: np.ndarray, batch_size: int, seed: int):
    """An endless stream of random windows of the text (inputs, next characters)."""
    rng = np.random.default_rng(seed)
    while True:
        starts = rng.integers(0, len(tokens) - CONTEXT - 1, batch_size)
        windows = tokens[starts[:, None] + np.arange(CONTEXT + 1)]
        yield windows[:, :-1], windows[:, 1:]


# The group of each parameter, by glob patterns on its path in the model (such as
# "blocks/0/qkv/kernel" or "embed/tokens/embedding"); the first pattern that matches wins.
GROUPS = {"embed/*": "embed", "*/bias": "no_decay", "*/scale": "no_decay", "*": "decay"}


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
    model = Transformer(len(corpus.vocab), layers, nnx.Rngs(seed))
    tx = make_optimizer(
        learning_rate, embed_learning_rates[0], weight_decay, ema_decay, microbatches_per_step
    )
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    traces = []  # one entry per trace of train_step: a recompile would add one

    @nnx.jit
    def train_step(model, optimizer, x, y):
        traces.append(None)
        loss, grads = nnx.value_and_grad(loss_fn)(model, x, y)
        optimizer.update(model, grads)  # a step on every microbatches_per_step-th call
        return loss

    evaluate = nnx.jit(loss_fn)
    x_val, y_val = validation_batch(corpus.val)
    initial_val_loss = float(evaluate(model, x_val, y_val))
    hyperparams_start = gx.get_hyperparams(nnx.as_pure(optimizer.opt_state))
    batches = microbatches(corpus.train, batch_size, seed)
    losses = []
    for call in range(steps * microbatches_per_step):
        if call == (steps // 2) * microbatches_per_step:
            # the embeddings' group only, between steps; the state keeps its
            # shapes and dtypes, so train_step is not compiled again
            state = nnx.as_pure(optimizer.opt_state)
            state = gx.set_hyperparams(state, group="embed", learning_rate=embed_learning_rates[1])
            nnx.update(optimizer.opt_state, nnx.state(state))
        losses.append(float(train_step(model, optimizer, *next(batches))))

    state = nnx.as_pure(optimizer.opt_state)
    ema_model = nnx.clone(model)
    nnx.update(ema_model, gx.averaged_params(state))  # the model with the averaged weights
    return {
        "losses": losses,  # one per microbatch
        "initial_val_loss": initial_val_loss,
        "val_loss": float(evaluate(model, x_val, y_val)),
        "val_loss_ema": float(evaluate(ema_model, x_val, y_val)),
        "hyperparams_start": hyperparams_start,
        "hyperparams_end": gx.get_hyperparams(state),
        "train_step_traces": len(traces),
        "params": nnx.as_pure(nnx.state(model, nnx.Param)),
        "ema_params": nnx.as_pure(nnx.state(ema_model, nnx.Param)),
    }


if __name__ == "__main__":
    result = main()
    print(
        f"flax nnx transformer, validation loss: {result['initial_val_loss']:.3f} at the start, "
        f"{result['val_loss']:.3f} at the end, {result['val_loss_ema']:.3f} with the EMA weights"
    )
