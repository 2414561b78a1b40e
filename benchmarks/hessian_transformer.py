"""The small transformer of ``benchmarks/hessian_scale.py --model transformer``.

A decoder-only, pre-norm transformer (learned token and position embeddings, ``layers``
blocks of causal multi-head attention and a GELU MLP, a final layer norm and a linear
head), written twice with the same weights: in plain JAX, and as a ``torch.nn.Module``
whose parameters are the JAX leaves in ``jax.tree.leaves`` order and shapes (every weight
is used as ``x @ W``), so that a flat vector means the same thing on both sides.

Data: token sequences from a fixed random Markov chain (a seeded transition matrix with a
few likely successors per token), each position labelled by its next token; batch ``b``
is generated from ``(seed, b)`` when asked for, so a pass holds one batch. The JAX model's
logits are ``(batch, context, vocab)``, the labels ``(batch, context)``:
``gx.hessian.softmax_cross_entropy`` sums over the positions and averages over the
sequences. The torch module's logits are ``(batch * context, vocab)`` against the
flattened labels, so its loss is torch's mean cross-entropy times ``context``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

VOCAB = 32
CONTEXT = 16
_LN_EPS = 1e-5  # torch.nn.functional.layer_norm's default


def transition_matrix(seed: int = 4321) -> np.ndarray:
    """A row-stochastic ``(VOCAB, VOCAB)`` matrix: each token has 3 likely successors."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(VOCAB, VOCAB))
    for row in logits:
        row[rng.choice(VOCAB, 3, replace=False)] += 4.0
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    return p / p.sum(axis=1, keepdims=True)


def make_batch(seed: int, index: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``size`` sequences of ``CONTEXT`` tokens and their next tokens, both ``(size, CONTEXT)``."""
    rng = np.random.default_rng([seed, index, 7])
    cumulative = np.cumsum(transition_matrix(), axis=1)
    tokens = np.empty((size, CONTEXT + 1), np.int32)
    tokens[:, 0] = rng.integers(0, VOCAB, size)
    for t in range(CONTEXT):
        draw = rng.random(size)[:, None]
        tokens[:, t + 1] = np.minimum((draw > cumulative[tokens[:, t]]).sum(axis=1), VOCAB - 1)
    return tokens[:, :-1], tokens[:, 1:]


class TokenSource:
    """A re-iterable data set of ``batches`` batches generated on demand."""

    def __init__(self, seed: int, batches: int, size: int) -> None:
        self.seed, self.batches, self.size = seed, batches, size

    def __call__(self):
        for b in range(self.batches):
            yield make_batch(self.seed, b, self.size)

    def materialise(self) -> list[tuple[np.ndarray, np.ndarray]]:
        return list(self())


def init_transformer(key, d: int = 64, layers: int = 2, dtype=jnp.float32) -> dict:
    """Parameters: ``embed``, ``pos``, ``layer{i}/{ln1,ln2}/{scale,bias}``,
    ``layer{i}/{qkv,out,fc,proj}``, ``ln_f``, ``head``."""
    keys = iter(jax.random.split(key, 3 + 4 * layers))

    def dense(fan_in, fan_out):
        return jax.random.normal(next(keys), (fan_in, fan_out), dtype) / math.sqrt(fan_in)

    def norm():
        return {"bias": jnp.zeros(d, dtype), "scale": jnp.ones(d, dtype)}

    params: dict = {
        "embed": jax.random.normal(next(keys), (VOCAB, d), dtype) * 0.5,
        "pos": jax.random.normal(next(keys), (CONTEXT, d), dtype) * 0.1,
        "head": dense(d, VOCAB),
        "ln_f": norm(),
    }
    for i in range(layers):
        params[f"layer{i}"] = {
            "ln1": norm(),
            "ln2": norm(),
            "qkv": dense(d, 3 * d),
            "out": dense(d, d),
            "fc": dense(d, 4 * d),
            "proj": dense(4 * d, d),
        }
    return params


def _layer_norm(x, p):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / jnp.sqrt(var + _LN_EPS) * p["scale"] + p["bias"]


def _layers(params: dict) -> int:
    return sum(name.startswith("layer") for name in params)


def transformer(params: dict, tokens: jax.Array, heads: int = 4) -> jax.Array:
    """Next-token logits ``(batch, context, VOCAB)`` for ``(batch, context)`` tokens."""
    b, t = tokens.shape
    d = params["embed"].shape[1]
    h = params["embed"][tokens] + params["pos"][:t]
    causal = jnp.tril(jnp.ones((t, t), bool))
    for i in range(_layers(params)):
        p = params[f"layer{i}"]
        q, k, v = jnp.split(_layer_norm(h, p["ln1"]) @ p["qkv"], 3, axis=-1)
        q, k, v = (z.reshape(b, t, heads, d // heads).transpose(0, 2, 1, 3) for z in (q, k, v))
        scores = jnp.where(causal, q @ k.transpose(0, 1, 3, 2) / math.sqrt(d // heads), -1e9)
        mixed = (jax.nn.softmax(scores, axis=-1) @ v).transpose(0, 2, 1, 3).reshape(b, t, d)
        h = h + mixed @ p["out"]
        h = h + jax.nn.gelu(_layer_norm(h, p["ln2"]) @ p["fc"], approximate=False) @ p["proj"]
    return _layer_norm(h, params["ln_f"]) @ params["head"]


def torch_transformer(params: dict, torch, heads: int = 4):
    """The same network as a ``torch.nn.Module``: its parameters are ``params``' leaves."""
    nn, F = torch.nn, torch.nn.functional
    leaves, treedef = jax.tree.flatten(params)

    class Transformer(nn.Module):
        def __init__(self):
            super().__init__()
            self.leaves = nn.ParameterList(
                [nn.Parameter(torch.from_numpy(np.array(x, np.float32))) for x in leaves]
            )

        def forward(self, tokens):
            p = jax.tree.unflatten(treedef, list(self.leaves))
            b, t = tokens.shape
            d = p["embed"].shape[1]
            h = p["embed"][tokens] + p["pos"][:t]
            causal = torch.tril(torch.ones(t, t, dtype=torch.bool))
            for i in range(_layers(p)):
                q_ = p[f"layer{i}"]
                ln = q_["ln1"]
                x = F.layer_norm(h, (d,), ln["scale"], ln["bias"], _LN_EPS)
                q, k, v = torch.split(x @ q_["qkv"], d, dim=-1)
                q, k, v = (z.reshape(b, t, heads, d // heads).transpose(1, 2) for z in (q, k, v))
                scores = (q @ k.transpose(-1, -2)) / math.sqrt(d // heads)
                scores = torch.where(causal, scores, torch.tensor(-1e9))
                mixed = (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(b, t, d)
                h = h + mixed @ q_["out"]
                ln = q_["ln2"]
                x = F.layer_norm(h, (d,), ln["scale"], ln["bias"], _LN_EPS)
                h = h + F.gelu(x @ q_["fc"]) @ q_["proj"]
            ln = p["ln_f"]
            out = F.layer_norm(h, (d,), ln["scale"], ln["bias"], _LN_EPS) @ p["head"]
            return out.reshape(b * t, -1)

    return Transformer()


# per-layer analysis: the embeddings, each block, the final norm with the head
BLOCKS = {
    "embed": "embeddings",
    "pos": "embeddings",
    "layer0/*": "layer0",
    "layer1/*": "layer1",
    "ln_f/*": "ln_f+head",
    "head": "ln_f+head",
}
