"""Real training runs: every gradxform optimizer on a small GPT and a small CNN.

Two tasks, written in plain JAX here:

- ``gpt``: a character-level GPT (pre-norm blocks of causal self-attention and a
  GELU MLP, learned positions, untied head) trained on the Python standard
  library's own ``.py`` files (``sysconfig.get_paths()["stdlib"]``, sorted by
  relative path, read until a fixed number of bytes; a file goes to validation
  when the MD5 of its relative path is 0 modulo 10). Bytes map to 95 printable
  ASCII characters, tab, newline and one "other" token (98 tokens). The corpus
  depends on the Python version: both are recorded in the results.
- ``cnn``: two 3x3 convolutions (as patch matrices, so every weight is 2-D),
  a dense layer and a classifier on scikit-learn's 8x8 digits (1,437 training
  and 360 validation images, a fixed permutation).

Protocol, the same for every optimizer:

- a learning-rate sweep of ``len(LR_FACTORS)`` rates on a log grid (factors of
  2) around the optimizer's usual rate for the task (``Opt.center``), each rate
  with the same seeds (a seed fixes the initial weights and the batches);
- all (rate, seed) models of one optimizer train at once: ``jax.vmap`` over
  parameters and optimizer states, one compiled program per optimizer. This
  works because gradxform keeps hyperparameters in the state: each model's
  state gets its rate through ``gx.set_hyperparams`` (traced under ``vmap``);
- a linear warm-up (5% of the steps) and a cosine decay to 10% of the rate,
  applied as ``gx.scale_by_schedule`` chained after the optimizer (schedule-free
  AdamW: no schedule, its own warm-up); no weight decay, no clipping;
- the best rate is the one with the lowest mean final validation loss over the
  seeds (a diverged seed counts as infinite); its seeds' curves are reported
  (mean and range), as are steps and seconds to reach the tuned AdamW's final
  validation loss (mean curve, first evaluation at or below it) and the ratio
  to AdamW's steps;
- seconds are steps times a single model's step time, measured separately:
  the forward and backward pass (once per task) plus the optimizer's update
  (per optimizer), each a median of interleaved repeats. The vmapped sweeps'
  own wall times are recorded too (``sweep_s``) but depend on the batch of
  models.

Step time: for every optimizer that optax also has, one jitted update
(``update`` then ``apply_updates``, buffers donated) of gradxform and of optax
on the GPT's parameter tree, interleaved in one run (median of repeats); also
each optimizer's overhead against ``gx.adamw`` and its state's bytes per
parameter (sum of the state's array bytes over the parameter count).

Modes::

    python benchmarks/train.py                 # CPU, reduced scale, ~15 min on 2 cores
    python benchmarks/train.py --device gpu    # the issue's scale (~1.8M-param GPT), < 6 min
    python benchmarks/train.py --quick         # smoke run, tiny models, seconds

``--optimizers adamw,muon`` restricts the list; ``--budget-s`` stops starting
new sweeps once the time spent plus the slowest sweep so far would pass it (the
results say which were skipped). JSON, Markdown and a PNG figure are written to
``--out`` (default ``benchmarks/results/``) as ``train_<device>.*`` after every
optimizer, so a run cut short keeps what finished.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import pathlib
import platform
import statistics
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable
from typing import Any, NamedTuple

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # this checkout's gradxform

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import gradxform as gx  # noqa: E402

LR_FACTORS = (0.25, 0.5, 1.0, 2.0, 4.0)
ADAM_GROUP = ("embed", "pos", "head")  # muon: these matrices and every vector go to AdamW


# ----------------------------------------------------------------------------- configuration


class Scale(NamedTuple):
    """Sizes and budgets of one mode."""

    d_model: int
    layers: int
    heads: int
    context: int
    batch: int
    corpus_bytes: int
    val_windows: int
    steps: int
    eval_every: int
    cnn_steps: int
    cnn_batch: int
    lr_factors: tuple[float, ...]
    seeds: tuple[int, ...]
    timing_repeats: int
    budget_s: float


SCALES = {
    # the scale: 1.8M parameters, context 128; < 6 minutes on an H200 with compiles
    "gpu": Scale(
        192, 4, 6, 128, 32, 4_000_000, 256, 600, 50, 600, 128, LR_FACTORS, (0, 1, 2), 50, 330
    ),
    # reduced for a 2-core CPU: 0.12M parameters, context 64, 150 steps
    "cpu": Scale(
        64, 2, 4, 64, 16, 2_000_000, 64, 150, 15, 300, 64, LR_FACTORS, (0, 1, 2), 20, 1200
    ),
    "quick": Scale(32, 1, 2, 32, 8, 200_000, 16, 40, 10, 40, 32, (0.5, 2.0), (0, 1), 10, 600),
}


# ----------------------------------------------------------------------------- data

VOCAB = [chr(c) for c in range(32, 127)] + ["\t", "\n", "<other>"]
_BYTE_TO_ID = np.full(256, len(VOCAB) - 1, np.int32)
for _i, _char in enumerate(VOCAB[:-1]):
    _BYTE_TO_ID[ord(_char)] = _i


def is_validation_file(relative: str) -> bool:
    """The fixed split: 1 file in 10, by the MD5 of its relative path."""
    return int(hashlib.md5(relative.encode()).hexdigest(), 16) % 10 == 0


def load_corpus(max_bytes: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """Token ids of the stdlib's ``.py`` files (sorted, capped): train, validation, facts."""
    root = pathlib.Path(sysconfig.get_paths()["stdlib"])
    skip = {"site-packages", "dist-packages"}
    files = sorted(p for p in root.rglob("*.py") if not skip & set(p.relative_to(root).parts))
    parts: dict[bool, list[bytes]] = {False: [], True: []}
    total, used = 0, 0
    for path in files:
        if total >= max_bytes:
            break
        data = path.read_bytes()[: max_bytes - total]
        parts[is_validation_file(str(path.relative_to(root)))].append(data)
        total, used = total + len(data), used + 1
    train, val = (_BYTE_TO_ID[np.frombuffer(b"".join(parts[v]), np.uint8)] for v in (False, True))
    facts = {
        "root": str(root),
        "python": platform.python_version(),
        "files": used,
        "bytes": total,
        "train_tokens": int(train.size),
        "val_tokens": int(val.size),
        "vocab": len(VOCAB),
    }
    return train, val, facts


def load_digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's digits as (N, 8, 8, 1) in [0, 1], split 1,437 / 360 by a fixed permutation."""
    from sklearn.datasets import load_digits as sk_digits

    data = sk_digits()
    images = (data.images / 16.0).astype(np.float32)[..., None]
    order = np.random.RandomState(0).permutation(len(images))
    train, val = order[:1437], order[1437:]
    return images[train], data.target[train], images[val], data.target[val]


# ----------------------------------------------------------------------------- models


def _dense(key, n_in: int, n_out: int, std: float) -> dict:
    return {"w": std * jax.random.normal(key, (n_in, n_out)), "b": jnp.zeros(n_out)}


def _norm(d: int) -> dict:
    return {"scale": jnp.ones(d), "bias": jnp.zeros(d)}


def init_gpt(key, scale: Scale) -> dict:
    """GPT-2-like initialisation: N(0, 0.02), residual projections scaled by 1/sqrt(2 layers)."""
    d, keys = scale.d_model, iter(jax.random.split(key, 3 + 4 * scale.layers))
    small = 0.02 / math.sqrt(2 * scale.layers)
    params: dict[str, Any] = {
        "embed": 0.02 * jax.random.normal(next(keys), (len(VOCAB), d)),
        "pos": 0.02 * jax.random.normal(next(keys), (scale.context, d)),
    }
    for i in range(scale.layers):
        params[f"block{i}"] = {
            "ln1": _norm(d),
            "qkv": _dense(next(keys), d, 3 * d, 0.02),
            "proj": _dense(next(keys), d, d, small),
            "ln2": _norm(d),
            "fc": _dense(next(keys), d, 4 * d, 0.02),
            "out": _dense(next(keys), 4 * d, d, small),
        }
    params["ln_f"] = _norm(d)
    params["head"] = 0.02 * jax.random.normal(next(keys), (d, len(VOCAB)))
    return params


def _layer_norm(p: dict, x):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + 1e-5) * p["scale"] + p["bias"]


def _linear(p: dict, x):
    return x @ p["w"] + p["b"]


def _attention(p: dict, x, heads: int):
    b, t, d = x.shape
    q, k, v = jnp.split(_linear(p["qkv"], x), 3, axis=-1)
    q, k, v = (a.reshape(b, t, heads, d // heads) for a in (q, k, v))
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(d // heads)
    scores = jnp.where(jnp.tril(jnp.ones((t, t), bool)), scores, -1e9)
    mixed = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(scores, axis=-1), v)
    return _linear(p["proj"], mixed.reshape(b, t, d))


def gpt_logits(params: dict, ids, heads: int):
    """Next-character logits (B, T, vocab) of ids (B, T)."""
    x = params["embed"][ids] + params["pos"][: ids.shape[1]]
    for name in sorted(k for k in params if k.startswith("block")):
        block = params[name]
        x = x + _attention(block, _layer_norm(block["ln1"], x), heads)
        hidden = jax.nn.gelu(_linear(block["fc"], _layer_norm(block["ln2"], x)))
        x = x + _linear(block["out"], hidden)
    return _layer_norm(params["ln_f"], x) @ params["head"]


def init_cnn(key) -> dict:
    k = jax.random.split(key, 4)
    return {
        "conv1": _dense(k[0], 9 * 1, 16, math.sqrt(2 / 9)),
        "conv2": _dense(k[1], 9 * 16, 32, math.sqrt(2 / 144)),
        "fc": _dense(k[2], 4 * 4 * 32, 64, math.sqrt(2 / 512)),
        "head": _dense(k[3], 64, 10, math.sqrt(1 / 64)),
    }


def _conv3x3(p: dict, x):
    patches = jax.lax.conv_general_dilated_patches(
        x, (3, 3), (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    return jax.nn.relu(_linear(p, patches))


def cnn_logits(params: dict, images):
    """Class logits (N, 10) of images (N, 8, 8, 1)."""
    x = _conv3x3(params["conv2"], _conv3x3(params["conv1"], images))
    x = x.reshape(x.shape[0], 4, 2, 4, 2, 32).mean((2, 4)).reshape(x.shape[0], -1)  # 2x2 pool
    return _linear(params["head"], jax.nn.relu(_linear(params["fc"], x)))


def _initial_key(seed):
    """A model's initial weights come from ``seed``'s first key, its batches from the second."""
    return jax.random.split(jax.random.key(seed))[0]


class Task(NamedTuple):
    """A model, its data and how to draw a batch.

    ``logits(params, inputs)``; a batch is ``(inputs, labels)``; the loss is
    the mean cross-entropy. ``init_many`` and ``evaluate`` are jitted once per
    task (every optimizer's models start from the same weights per seed).
    """

    name: str
    init: Callable  # key -> params
    logits: Callable  # (params, inputs) -> logits
    sample: Callable  # (data, key) -> batch
    data: Any  # training arrays, on the device
    val: Any  # the fixed validation batch
    steps: int
    eval_every: int
    facts: dict

    def loss(self, params, batch):
        logits = self.logits(params, batch[0])
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch[1]).mean()

    def init_many(self, seeds):
        return _jitted(self, "init_many", lambda: jax.vmap(lambda s: self.init(_initial_key(s))))(
            jnp.asarray(seeds, jnp.uint32)
        )

    def evaluate(self, params):
        fn = _jitted(self, "evaluate", lambda: jax.vmap(self.loss, in_axes=(0, None)))
        return fn(params, self.val)


_JITTED: dict[tuple, Callable] = {}


def _jitted(task: Task, what: str, make: Callable) -> Callable:
    key = (task.name, id(task.data), what)
    if key not in _JITTED:
        _JITTED[key] = jax.jit(make())
    return _JITTED[key]


def gpt_task(scale: Scale) -> Task:
    train, val, facts = load_corpus(scale.corpus_bytes)
    t = scale.context
    starts = np.linspace(0, len(val) - t - 1, scale.val_windows).astype(int)
    windows = val[starts[:, None] + np.arange(t + 1)]

    def sample(tokens, key):
        starts = jax.random.randint(key, (scale.batch,), 0, tokens.shape[0] - t - 1)
        w = tokens[starts[:, None] + jnp.arange(t + 1)]
        return w[:, :-1], w[:, 1:]

    def logits(params, ids):
        return gpt_logits(params, ids, scale.heads)

    init = lambda key: init_gpt(key, scale)  # noqa: E731
    n = sum(x.size for x in jax.tree.leaves(jax.eval_shape(init, jax.random.key(0))))
    facts |= {"params": int(n), "d_model": scale.d_model, "layers": scale.layers}
    facts |= {"heads": scale.heads, "context": t, "batch": scale.batch}
    facts |= {"val_windows": scale.val_windows}
    val_batch = (jnp.asarray(windows[:, :-1]), jnp.asarray(windows[:, 1:]))
    return Task("gpt", init, logits, sample, jnp.asarray(train), val_batch, scale.steps,
                scale.eval_every, facts)  # fmt: skip


def cnn_task(scale: Scale) -> Task:
    x_train, y_train, x_val, y_val = load_digits()

    def sample(data, key):
        idx = jax.random.randint(key, (scale.cnn_batch,), 0, data[0].shape[0])
        return data[0][idx], data[1][idx]

    n = sum(x.size for x in jax.tree.leaves(jax.eval_shape(init_cnn, jax.random.key(0))))
    facts = {"params": int(n), "train": len(x_train), "val": len(x_val), "batch": scale.cnn_batch}
    data = (jnp.asarray(x_train), jnp.asarray(y_train))
    val = (jnp.asarray(x_val), jnp.asarray(y_val))
    every = max(1, scale.cnn_steps // 10)
    return Task("cnn", init_cnn, cnn_logits, sample, data, val, scale.cnn_steps, every, facts)


# ----------------------------------------------------------------------------- optimizers


class Opt(NamedTuple):
    """One optimizer of the benchmark.

    ``build(lr, task, context)`` makes the gradxform optimizer; ``center`` is its
    usual rate per task (the sweep's middle); ``group`` is where the swept
    ``learning_rate`` lives (muon: its ``"muon"`` group); ``optax`` builds
    optax's counterpart for the step-time table (``None``: optax has none).
    """

    center: dict[str, float]
    build: Callable[[float, str, dict], Any]
    group: str | None = None
    optax: Callable[[float], Any] | None = None
    scheduled: bool = True  # chain the warm-up + cosine schedule after it
    note: str = ""
    timed: Callable[[float], Any] | None = (
        None  # the step-time row's gradxform build (optax's options)
    )
    extra: Callable[[Task, Any], dict] | None = None  # (task, batch) -> update's extra arguments


def _gx(name: str) -> Callable:
    return getattr(gx, name)


def _muon_labels(path, leaf) -> str:
    top = str(getattr(path[0], "key", ""))
    return "adam" if leaf.ndim < 2 or top in ADAM_GROUP else "muon"


def _build_muon(lr: float, task: str, context: dict):
    adam_lr = context.get("adamw_lr", OPTIMIZERS["adamw"].center[task])
    return gx.muon(lr, labels=_muon_labels, adam_learning_rate=adam_lr)


def _build_schedule_free(lr: float, task: str, context: dict):
    return gx.schedule_free_adamw(lr, warmup_steps=context["warmup"])


SHAMPOO = {"beta2": 0.999, "momentum": 0.9, "graft_type": "diagonal", "graft_eps": 1e-8,
           "precondition_frequency": 10}  # fmt: skip
OPTIMIZERS: dict[str, Opt] = {
    "adamw": Opt(
        {"gpt": 2e-3, "cnn": 6e-3},  # cnn: 3e-3 put the best rate at the grid's edge (CPU run)
        lambda lr, task, c: gx.adamw(lr, weight_decay=0.0),
        optax=lambda lr: optax.adamw(lr, weight_decay=0.0),
    ),
    "muon": Opt(
        {"gpt": 0.02, "cnn": 0.02},
        _build_muon,
        group="muon",
        optax=lambda lr: optax.contrib.muon(lr),
        note="embeddings, head and vectors on AdamW at AdamW's tuned rate",
        timed=lambda lr: gx.muon(
            lr, bias_correction=True, eps=1e-8, eps_mode="add", adam_nesterov=True
        ),  # optax.contrib.muon's expressions (bitwise in tests/test_muon.py), its default split
    ),
    "soap": Opt(
        {"gpt": 3e-3, "cnn": 3e-3},
        lambda lr, task, c: _gx("soap")(lr, weight_decay=0.0),
        note="the paper's b1 = b2 = 0.95, eigenbasis refreshed every 10 updates",
    ),
    "shampoo": Opt(
        {"gpt": 2e-3, "cnn": 3e-3},
        lambda lr, task, c: _gx("shampoo")(lr, **SHAMPOO),
        note=", ".join(f"{k} {v}" for k, v in SHAMPOO.items()),
    ),
    "adafactor": Opt(
        {"gpt": 3e-2, "cnn": 2e-2},  # cnn: 1e-2 put the best rate at the grid's edge (CPU run)
        lambda lr, task, c: _gx("adafactor")(lr),
        optax=lambda lr: optax.adafactor(lr),
    ),
    "lion": Opt(
        {"gpt": 3e-4, "cnn": 1e-3},
        lambda lr, task, c: gx.lion(lr, weight_decay=0.0),
        optax=lambda lr: optax.lion(lr, weight_decay=0.0),
    ),
    "lamb": Opt(
        {"gpt": 5e-3, "cnn": 1e-2},
        lambda lr, task, c: _gx("lamb")(lr, weight_decay=0.0),
        optax=lambda lr: optax.lamb(lr, weight_decay=0.0),
    ),
    "schedule_free_adamw": Opt(
        {"gpt": 3e-3, "cnn": 3e-3},
        _build_schedule_free,
        optax=lambda lr: optax.contrib.schedule_free_adamw(lr, warmup_steps=10),
        scheduled=False,
        note="no external schedule; its own linear warm-up; evaluated at its x sequence",
    ),
    "sophia": Opt(
        {"gpt": 5e-4, "cnn": 1e-3},
        lambda lr, task, c: _gx("sophia")(lr, weight_decay=0.0, estimator="gnb"),
        extra=lambda task, batch: {"logits_fn": lambda p: task.logits(p, batch[0])},
        note="Sophia-G: Gauss-Newton-Bartlett estimate on the training batch every 10 updates",
    ),
    "sgd": Opt(
        {"gpt": 0.2, "cnn": 0.05},
        lambda lr, task, c: gx.sgd(lr, 0.9),
        optax=lambda lr: optax.sgd(lr, 0.9),
        note="momentum 0.9",
    ),
}
OPTIMIZERS["soap_factored"] = Opt(
    {"gpt": 3e-3, "cnn": 3e-3},
    lambda lr, task, c: _gx("soap")(lr, weight_decay=0.0, factored=True, max_precond_dim=200),
    note="Adafactor's factored second moment; sides over 200 not rotated (memory below AdamW's)",
)
EXTRA = ("nadamw", "adopt", "radam", "adabelief", "adamax", "yogi")  # with --optimizers all
for _name in EXTRA:
    OPTIMIZERS[_name] = Opt(
        {"gpt": 2e-3, "cnn": 3e-3},
        (lambda n: lambda lr, task, c: _gx(n)(lr))(_name),
        optax=(lambda n: lambda lr: getattr(optax, n, None) and getattr(optax, n)(lr))(_name),
    )


def unavailable(name: str) -> str | None:
    """Why ``name`` cannot run here (``None``: it can)."""
    alias = "soap" if name == "soap_factored" else name
    if getattr(gx, alias, None) is None:
        return f"gx.{alias} does not exist in this checkout"
    return None


def set_lr(opt: Opt, state, lr):
    """The state with the swept learning rate (a traced scalar under vmap) set."""
    if opt.group is None:
        return gx.set_hyperparams(state, learning_rate=lr)
    return gx.set_hyperparams(state, group=opt.group, learning_rate=lr)


def schedule(steps: int) -> Callable:
    """Warm-up over 5% of the steps, cosine decay to 10%: a factor on the updates."""
    warmup = max(1, steps // 20)
    return gx.schedules.warmup_cosine(1.0, warmup, steps, end_value=0.1)


def full_optimizer(name: str, lr: float, task: Task, context: dict):
    """The optimizer of a sweep: the built one, followed by the schedule where it takes one."""
    opt = OPTIMIZERS[name]
    tx = opt.build(lr, task.name, context | {"warmup": max(1, task.steps // 20)})
    if opt.scheduled:
        tx = gx.chain(tx, gx.scale_by_schedule(schedule(task.steps)))
    return tx


def eval_params(name: str, params, state):
    """The parameters a validation loss is measured at (schedule-free: its x sequence)."""
    if name.startswith("schedule_free"):
        return gx.schedule_free_eval_params(state, params)
    return params


# ----------------------------------------------------------------------------- training


def make_chunk(task: Task, name: str, tx, steps: int, state_axes: Any = 0) -> Callable:
    """The jitted, vmapped program: ``steps`` training steps of every model, then its validation loss.

    ``state_axes``: the state's leaves that all models share (``None``) and
    those they do not (0), see :func:`shared_axes`.
    """

    opt = OPTIMIZERS[name]

    def one_model(params, state, seed, t0, data, val):
        data_key = jax.random.split(jax.random.key(seed))[1]

        def body(carry, t):
            p, s = carry
            batch = task.sample(data, jax.random.fold_in(data_key, t))
            loss, grads = jax.value_and_grad(task.loss)(p, batch)
            extra = opt.extra(task, batch) if opt.extra else {}
            updates, s = tx.update(grads, s, p, **extra)
            return (gx.apply_updates(p, updates), s), loss

        (params, state), losses = jax.lax.scan(body, (params, state), t0 + jnp.arange(steps))
        val_loss = task.loss(eval_params(name, params, state), val)
        return params, state, losses.mean(), val_loss

    in_axes = (0, state_axes, 0, None, None, None)
    vmapped = jax.vmap(one_model, in_axes=in_axes, out_axes=(0, state_axes, 0, 0))
    return jax.jit(vmapped, donate_argnums=(0, 1))


def shared_axes(state) -> Any:
    """``None`` for each integer leaf equal in every model (the step counts), 0 for the others.

    A count that is not batched keeps a refresh on the count (SOAP's and
    Shampoo's eigenbases, Sophia's Hessian estimate) a real branch under
    ``vmap``; batched, the branch becomes a select that computes every branch
    at every step.
    """
    leaves, treedef = jax.tree.flatten(state)

    def axis(leaf):
        if not jnp.issubdtype(leaf.dtype, jnp.integer) or leaf.ndim != 1:
            return 0
        values = np.asarray(leaf)
        return None if np.all(values == values[0]) else 0

    return treedef.unflatten([axis(leaf) for leaf in leaves])


def _unbatch(state, axes, models: int | None = None):
    """The shared leaves' first entry (or, with ``models``, every leaf batched again)."""
    leaves, treedef = jax.tree.flatten(state)
    flat_axes = treedef.flatten_up_to(axes)
    if models is None:
        leaves = [x[0] if a is None else x for x, a in zip(leaves, flat_axes)]
    else:
        leaves = [jnp.broadcast_to(x, (models, *x.shape)) if a is None else x
                  for x, a in zip(leaves, flat_axes)]  # fmt: skip
    return treedef.unflatten(leaves)


def init_models(task: Task, name: str, tx, lrs, seeds):
    """Params and states of every (rate, seed) model, stacked on a leading axis.

    The states are made by ``vmap`` without ``jit`` (op by op: no compilation
    per optimizer); each model's rate is a traced value under ``vmap``, set in
    its state by ``gx.set_hyperparams``.
    """
    params = task.init_many(seeds)
    lr_of = jnp.asarray(lrs, jnp.float32)
    state = jax.vmap(lambda p, lr: set_lr(OPTIMIZERS[name], tx.init(p), lr))(params, lr_of)
    return params, jax.tree.map(jnp.copy, state)  # distinct buffers: both are donated


def train_models(task: Task, name: str, lrs, seeds, context: dict | None = None) -> dict:
    """Trains one model per ``(lrs[i], seeds[i])`` at once; returns curves and the final params.

    Every model's rate is set in its state (the optimizer is built once, with
    ``lrs[0]``), so the models share one compiled program.
    """
    if task.steps % task.eval_every:
        raise ValueError(f"eval_every must divide steps; got {task.eval_every}, {task.steps}")
    tx = full_optimizer(name, float(lrs[0]), task, context or {})
    start = time.perf_counter()
    params, state = init_models(task, name, tx, lrs, seeds)
    seed_of = jnp.asarray(seeds, jnp.uint32)
    at = jax.vmap(lambda p, s: eval_params(name, p, s))(params, state)
    val = [np.asarray(task.evaluate(at))]
    train: list[np.ndarray] = []
    axes = shared_axes(state)
    state = _unbatch(state, axes)
    chunk = make_chunk(task, name, tx, task.eval_every, axes)
    try:  # tracing says whether the shared leaves stay shared
        chunk.lower(params, state, seed_of, 0, task.data, task.val)
    except ValueError:
        state = _unbatch(state, axes, len(lrs))
        chunk = make_chunk(task, name, tx, task.eval_every)
    for t0 in range(0, task.steps, task.eval_every):
        params, state, train_loss, val_loss = chunk(params, state, seed_of, t0, task.data, task.val)
        train.append(np.asarray(train_loss))
        val.append(np.asarray(val_loss))
    steps = list(range(0, task.steps + 1, task.eval_every))
    return {
        "steps": steps,
        "val": np.stack(val, 1),  # (models, evaluations)
        "train": np.stack(train, 1),
        "params": params,
        "state": state,
        "sweep_s": time.perf_counter() - start,
    }


def _finite_mean(x: np.ndarray) -> float:
    return float(np.mean(x)) if np.all(np.isfinite(x)) else math.inf


def sweep(task: Task, name: str, scale: Scale, context: dict) -> dict:
    """The learning-rate sweep of one optimizer over every seed, and its best rate's curves."""
    center = OPTIMIZERS[name].center[task.name]
    grid = [center * f for f in scale.lr_factors]
    lrs = [lr for lr in grid for _ in scale.seeds]
    seeds = [s for _ in grid for s in scale.seeds]
    run = train_models(task, name, lrs, seeds, context)
    val = run["val"].reshape(len(grid), len(scale.seeds), -1)
    finals = val[:, :, -1]
    means = [_finite_mean(f) for f in finals]
    best = int(np.argmin(means))
    curves = val[best]
    return {
        "lrs": grid,
        "seeds": list(scale.seeds),
        "final_val": finals.tolist(),
        "mean_final_val": means,
        "best_lr": grid[best],
        "best_final_val": means[best],
        "edge": best in (0, len(grid) - 1),
        "steps": run["steps"],
        "val_mean": curves.mean(0).tolist(),
        "val_min": curves.min(0).tolist(),
        "val_max": curves.max(0).tolist(),
        "sweep_s": round(run["sweep_s"], 2),
        "models": len(lrs),
    }


# ----------------------------------------------------------------------------- step time and memory


def _median_ms(times: list[float]) -> float:
    return round(1e3 * statistics.median(times), 4)


def state_bytes_per_param(tx, params) -> float:
    state = jax.eval_shape(tx.init, params)
    n = sum(x.size for x in jax.tree.leaves(params))
    return round(sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state)) / n, 3)


def _stepper(tx, apply, params, grads, extra: dict):
    def step(p, s, g):
        updates, s = tx.update(g, s, p, **extra)
        return apply(p, updates), s

    jitted = jax.jit(step, donate_argnums=(0, 1))
    p = jax.tree.map(jnp.copy, params)
    s = jax.tree.map(jnp.copy, tx.init(p))  # init may hand one array to two leaves: donated once
    for _ in range(3):  # compile, then two warm calls
        p, s = jitted(p, s, grads)
    jax.block_until_ready((p, s))
    box = [p, s]

    def run() -> float:
        start = time.perf_counter()
        box[0], box[1] = jitted(box[0], box[1], grads)
        jax.block_until_ready(box)
        return time.perf_counter() - start

    return run


def step_times(task: Task, names: list[str], repeats: int, with_optax: bool = True) -> dict:
    """Update times of gradxform (and optax where it has the optimizer), interleaved.

    ``*_ms`` are medians (the comparison with optax); ``gx_mean_ms`` is the mean
    over the repeats, which includes the periodic work (SOAP's and Shampoo's
    refreshes, Sophia's Hessian estimate, every 10 updates: ``repeats`` is a
    multiple of 10) and is the update time used for seconds per step.
    """
    params = task.init(jax.random.key(0))
    leaves = jax.tree.leaves(params)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    grads = jax.tree.unflatten(
        jax.tree.structure(params),
        [1e-2 * jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)],
    )
    batch = jax.jit(task.sample)(task.data, jax.random.key(0))
    runners, table = {}, {}
    for name in names:
        opt, lr = OPTIMIZERS[name], OPTIMIZERS[name].center[task.name]
        try:
            tx = opt.timed(lr) if opt.timed else opt.build(lr, task.name, {"warmup": 10})
            extra = opt.extra(task, batch) if opt.extra else {}
            runners[(name, "gx")] = _stepper(tx, gx.apply_updates, params, grads, extra)
            table[name] = {"gx_bytes_per_param": state_bytes_per_param(tx, params)}
            ref = opt.optax(lr) if opt.optax and with_optax else None
            if ref is not None:
                runners[(name, "optax")] = _stepper(ref, optax.apply_updates, params, grads, {})
                table[name]["optax_bytes_per_param"] = state_bytes_per_param(ref, params)
        except Exception as error:  # an optimizer that fails must not lose the others' rows
            table[name] = {"error": f"{type(error).__name__}: {error}"[:200]}
            runners.pop((name, "gx"), None)
    times: dict[tuple, list[float]] = {k: [] for k in runners}
    order, rng = list(runners), np.random.default_rng(0)
    for _ in range(repeats):  # a fresh order each round: no program always follows the same one
        for i in rng.permutation(len(order)):
            times[order[i]].append(runners[order[i]]())
    for (name, impl), t in times.items():
        table[name][f"{impl}_ms"] = _median_ms(t)
        if impl == "gx":
            table[name]["gx_mean_ms"] = round(1e3 * statistics.fmean(t), 4)
    adamw_ms = table.get("adamw", {}).get("gx_ms")
    for row in table.values():
        if "gx_ms" not in row:
            continue
        if "optax_ms" in row:
            row["gx_over_optax"] = round(row["gx_ms"] / row["optax_ms"], 3)
        if adamw_ms:
            row["over_adamw"] = round(row["gx_ms"] / adamw_ms, 3)
    return table


def forward_backward_ms(task: Task, repeats: int) -> float:
    """Median time of one model's loss and gradient on a training batch."""
    params = task.init(jax.random.key(0))
    grad = jax.jit(jax.value_and_grad(task.loss))
    batch = jax.jit(task.sample)(task.data, jax.random.key(0))
    jax.block_until_ready(grad(params, batch))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(grad(params, batch))
        times.append(time.perf_counter() - start)
    return _median_ms(times)


# ----------------------------------------------------------------------------- analysis


def time_to_target(result: dict, target: float, seconds_per_step: float | None) -> dict:
    """First evaluation where the mean curve is at or below ``target``."""
    hit = next((s for s, v in zip(result["steps"], result["val_mean"]) if v <= target), None)
    out: dict[str, Any] = {"steps_to_target": hit}
    if hit is not None and seconds_per_step:
        out["seconds_to_target"] = round(hit * seconds_per_step, 3)
    return out


def analyse(results: dict) -> None:
    """Adds targets, steps/seconds to AdamW's final loss and ratios, in place."""
    for task, rows in results["tasks"].items():
        adamw = rows.get("adamw")
        if not adamw or "best_final_val" not in adamw:
            continue
        target = adamw["best_final_val"]
        fb = results["timing"].get(task, {}).get("forward_backward_ms")
        upd = results["timing"].get(task, {}).get("update", {})
        base = None
        for name, row in rows.items():
            if "val_mean" not in row:
                continue
            ms = upd.get(name, {}).get("gx_mean_ms")
            per_step = (fb + ms) / 1e3 if fb is not None and ms is not None else None
            row["seconds_per_step"] = per_step
            row |= time_to_target(row, target, per_step)
            if name == "adamw":
                base = row["steps_to_target"]
        for row in rows.values():
            if row.get("steps_to_target") is not None and base:
                row["steps_ratio_to_adamw"] = round(row["steps_to_target"] / base, 3)
        results["targets"][task] = target


# ----------------------------------------------------------------------------- reports


def _fmt(x: Any, digits: int = 4) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}g}"
    return str(x)


def markdown(results: dict, figure_name: str | None = None) -> str:
    meta = results["meta"]
    figure_name = figure_name or f"train_{meta['device']}.png"
    lines = [
        f"# Training benchmark ({meta['device']}, {meta['mode']} mode)",
        "",
        f"{meta['platform']}; jax {meta['jax']}, optax {meta['optax']}, gradxform at {meta['commit']}; "
        f"{meta['total_s']:.0f} s in all. Command: `{meta['command']}`.",
        "",
        f"GPT: {_task_line(results, 'gpt')}",
        f"CNN: {_task_line(results, 'cnn')}",
        "",
        f"Protocol: {len(meta['lr_factors'])} learning rates (factors {meta['lr_factors']} of each "
        f"optimizer's usual rate) x seeds {meta['seeds']}, all trained at once with jax.vmap; "
        "warm-up 5% + cosine to 10%; the best rate by mean final validation loss. Seconds = "
        "steps x (one model's forward+backward, median, + the optimizer's update, mean over "
        "repeats so that periodic refreshes count), measured alone.",
        "",
        f"![validation loss against steps, seconds and learning rate]({figure_name})",
        "",
    ]
    for task, rows in results["tasks"].items():
        lines += _task_table(task, rows, results["targets"].get(task))
    lines += _timing_table(results)
    if results["skipped"]:
        lines += ["## Skipped", ""]
        lines += [f"- {name}: {why}" for name, why in results["skipped"].items()] + [""]
    return "\n".join(lines)


_TASK_LINES = {
    "gpt": "{params:,} parameters (d {d_model}, {layers} layers, {heads} heads, context "
    "{context}, batch {batch}); corpus: Python {python} stdlib, {files} files, {bytes:,} bytes "
    "({train_tokens:,} train / {val_tokens:,} validation tokens)",
    "cnn": "{params:,} parameters, digits {train} train / {val} validation, batch {batch}",
}


def _task_line(results: dict, task: str) -> str:
    facts = results["meta"].get(task)
    if not facts:
        return "-"
    return _TASK_LINES[task].format(**facts) + f"; {results['meta'][task + '_steps']} steps"


def _task_table(task: str, rows: dict, target: float | None) -> list[str]:
    lines = [
        f"## {task}: tuned AdamW's final validation loss {_fmt(target)}",
        "",
        "| optimizer | best lr | final val (mean over seeds) | range | steps to AdamW's | "
        "x AdamW's steps | seconds to AdamW's | s/step | sweep (vmapped) s | lr grid: mean final val |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        if "val_mean" not in r:
            continue
        grid = ", ".join(f"{lr:.3g}: {_fmt(v, 3)}" for lr, v in zip(r["lrs"], r["mean_final_val"]))
        edge = " (edge)" if r["edge"] else ""
        lines.append(
            f"| {name} | {r['best_lr']:.3g}{edge} | {_fmt(r['best_final_val'])} | "
            f"{_fmt(r['val_min'][-1])}-{_fmt(r['val_max'][-1])} | {_fmt(r.get('steps_to_target'))} | "
            f"{_fmt(r.get('steps_ratio_to_adamw'))} | {_fmt(r.get('seconds_to_target'))} | "
            f"{_fmt(r.get('seconds_per_step'), 3)} | {r['sweep_s']} | {grid} |"
        )
    return lines + [""]


def _timing_table(results: dict) -> list[str]:
    timing = results["timing"].get("gpt", {})
    if not timing:
        return []
    lines = [
        "## Update step time on the GPT's parameter tree (single model, median, interleaved)",
        "",
        f"Forward+backward of one model: {timing['forward_backward_ms']} ms.",
        "",
        "| optimizer | gx ms | optax ms | gx / optax | gx / gx.adamw | gx mean ms | "
        "state bytes/param (gx) | (optax) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in timing["update"].items():
        lines.append(
            f"| {name} | {_fmt(r.get('gx_ms'))} | {_fmt(r.get('optax_ms'))} | "
            f"{_fmt(r.get('gx_over_optax'))} | {_fmt(r.get('over_adamw'))} | {_fmt(r.get('gx_mean_ms'))} | "
            f"{_fmt(r.get('gx_bytes_per_param'))} | {_fmt(r.get('optax_bytes_per_param'))} |"
        )
    return lines + [""]


def figure(results: dict, path: pathlib.Path) -> None:
    """Validation loss against steps and against seconds (mean and range), and the sweeps."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    tasks = [t for t, rows in results["tasks"].items() if rows]
    if not tasks:
        return
    fig, axes = plt.subplots(len(tasks), 3, figsize=(16, 4.5 * len(tasks)), squeeze=False)
    for row_axes, task in zip(axes, tasks):
        for name, r in results["tasks"][task].items():
            if "val_mean" not in r:
                continue
            steps = np.asarray(r["steps"])
            xs = [steps, steps * (r.get("seconds_per_step") or np.nan)]
            for ax, x in zip(row_axes[:2], xs):
                (line,) = ax.plot(x, r["val_mean"], label=f"{name} (lr {r['best_lr']:.3g})")
                ax.fill_between(x, r["val_min"], r["val_max"], color=line.get_color(), alpha=0.2)
            row_axes[2].plot(r["lrs"], r["mean_final_val"], "o-", label=name)
        target = results["targets"].get(task)
        for ax, xlabel in zip(row_axes, ("steps", "seconds (model)", "learning rate")):
            ax.set_xlabel(xlabel)
            ax.set_ylabel(f"{task} validation loss")
            if target is not None:
                ax.axhline(target, color="gray", lw=0.8, ls="--")
        row_axes[2].set_xscale("log")
        rows = [r for r in results["tasks"][task].values() if "val_mean" in r]
        low = min((min(r["val_min"]) for r in rows), default=math.nan)
        high = max((r["best_final_val"] for r in rows), default=math.nan)
        for ax in row_axes:
            if math.isfinite(low) and math.isfinite(high):
                ax.set_ylim(0.9 * low, 1.6 * high + 0.1)
        row_axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write(results: dict, out: pathlib.Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"train_{results['meta']['device']}"
    results["meta"]["total_s"] = round(time.perf_counter() - results["meta"]["_start"], 1)
    analyse(results)
    public = {k: v for k, v in results.items()}
    public["meta"] = {k: v for k, v in results["meta"].items() if not k.startswith("_")}
    stem.with_suffix(".json").write_text(json.dumps(public, indent=1, default=float) + "\n")
    stem.with_suffix(".md").write_text(markdown(public) + "\n")
    figure(public, stem.with_suffix(".png"))


# ----------------------------------------------------------------------------- main


def _commit() -> str:
    try:
        root = pathlib.Path(__file__).resolve().parents[1]
        args = ["git", "-C", str(root), "rev-parse", "--short", "HEAD"]
        return subprocess.run(args, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    parser.add_argument("--out", default=str(pathlib.Path(__file__).parent / "results"))
    parser.add_argument("--optimizers", default="default", help="comma list, 'default' or 'all'")
    parser.add_argument("--tasks", default="gpt,cnn")
    parser.add_argument("--budget-s", type=float, default=None)
    parser.add_argument(
        "--scale", choices=tuple(SCALES), default=None,
        help="model and run sizes (default: the device's; 'gpu' on a CPU runs the issue's scale)",
    )  # fmt: skip
    parser.add_argument("--lr-factors", default=None, help="comma list (default: the scale's)")
    parser.add_argument("--seeds", default=None, help="comma list (default: the scale's)")
    return parser.parse_args(argv)


def _numbers(spec: str, kind: Callable, what: str) -> tuple:
    try:
        values = tuple(kind(v) for v in spec.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values:
        raise SystemExit(f"{what} must be a comma list of numbers; got {spec!r}")
    return values


def selected(spec: str) -> list[str]:
    if spec in ("default", "all"):
        names = [n for n in OPTIMIZERS if spec == "all" or n not in EXTRA]
    else:
        names = [n.strip() for n in spec.split(",") if n.strip()]
        unknown = [n for n in names if n not in OPTIMIZERS]
        if unknown:
            raise SystemExit(f"unknown optimizers {unknown}; known: {list(OPTIMIZERS)}")
    return ["adamw"] + [n for n in names if n != "adamw"]  # AdamW first: the target


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    mode = "quick" if args.quick else (args.scale or args.device)
    scale = SCALES[mode]
    if args.lr_factors is not None:
        scale = scale._replace(lr_factors=_numbers(args.lr_factors, float, "--lr-factors"))
    if args.seeds is not None:
        scale = scale._replace(seeds=_numbers(args.seeds, int, "--seeds"))
    budget = args.budget_s if args.budget_s is not None else scale.budget_s
    if args.device == "gpu":
        jax.config.update("jax_default_device", jax.devices("gpu")[0])
    else:
        jax.config.update("jax_default_device", jax.devices("cpu")[0])
    start = time.perf_counter()
    names = selected(args.optimizers)
    results: dict[str, Any] = {
        "meta": {
            "_start": start,
            "device": args.device if not args.quick else "quick",
            "mode": mode,
            "platform": f"{platform.machine()} {jax.devices()[0].device_kind}",
            "python": platform.python_version(),
            "jax": jax.__version__,
            "optax": optax.__version__,
            "commit": _commit(),
            "command": "python benchmarks/train.py "
            + " ".join(argv if argv is not None else sys.argv[1:]),
            "lr_factors": list(scale.lr_factors),
            "seeds": list(scale.seeds),
            "gpt_steps": scale.steps,
            "cnn_steps": scale.cnn_steps,
            "budget_s": budget,
        },
        "tasks": {},
        "timing": {},
        "targets": {},
        "skipped": {},
    }
    runnable = []
    for name in names:
        why = unavailable(name)
        if why:
            results["skipped"][name] = why
        else:
            runnable.append(name)
    tasks = []
    for task_name in args.tasks.split(","):
        task = gpt_task(scale) if task_name == "gpt" else cnn_task(scale)
        results["meta"][task_name] = task.facts
        results["tasks"][task_name] = {}
        tasks.append(task)
    for i, task in enumerate(
        tasks
    ):  # the GPT's sweeps stop at 80% of the budget: the CNN gets the rest
        share = budget if i == len(tasks) - 1 else 0.8 * budget
        run_task(task, runnable, scale, results, share, pathlib.Path(args.out))
    write(results, pathlib.Path(args.out))
    return results


def _log(results: dict, message: str) -> None:
    print(f"[{time.perf_counter() - results['meta']['_start']:6.1f}s] {message}", flush=True)


def run_task(
    task: Task, runnable: list[str], scale: Scale, results: dict, budget: float, out
) -> None:
    """The task's step times, then one sweep per optimizer while the budget allows."""
    start = results["meta"]["_start"]
    if time.perf_counter() - start < budget:
        results["timing"][task.name] = {
            "forward_backward_ms": forward_backward_ms(task, scale.timing_repeats),
            "update": step_times(task, runnable, scale.timing_repeats, task.name == "gpt"),
        }
        _log(results, f"timed {task.name}")
        write(results, out)
    slowest, context = 0.0, {}
    for name in runnable:
        spent = time.perf_counter() - start
        if spent + 1.2 * slowest > budget:
            results["skipped"][f"{task.name}/{name}"] = f"budget ({spent:.0f} s of {budget:.0f} s)"
            continue
        t0 = time.perf_counter()
        try:
            row = sweep(task, name, scale, context)
        except Exception as error:  # an optimizer that fails must not lose the others' results
            results["skipped"][f"{task.name}/{name}"] = f"{type(error).__name__}: {error}"[:300]
            continue
        slowest = max(slowest, time.perf_counter() - t0)
        results["tasks"][task.name][name] = row | {"note": OPTIMIZERS[name].note}
        if name == "adamw":
            context["adamw_lr"] = row["best_lr"]
        _log(results, f"{task.name} {name}: best lr {row['best_lr']:.3g}, "
                      f"val {row['best_final_val']:.4f} ({row['sweep_s']} s)")  # fmt: skip
        write(results, out)


if __name__ == "__main__":
    main()
