"""Hessian analysis at scale: a ResNet-20 on CIFAR-shaped data, streamed, against PyHessian
and hessian-eigenthings on the same model, weights and batches, in the same process.

The model is the PyHessian paper's ResNet-20 (3 stages of 3 basic blocks, 16/32/64
channels, option-A shortcuts: stride-2 subsampling and zero-padded channels, global
average pooling, a 10-way linear head; 269,034 parameters) in its norm-free form: no
batch norm (whose batch statistics make the Hessian depend on how the data is batched),
conv biases instead, and each block's output ``relu(x + F(x)) / sqrt(2)`` so the
activations keep their scale without normalisation. It is written twice, in plain JAX
(NHWC) and in PyTorch (NCHW), with the same weights (``to_torch`` copies them); the
script checks that the two give the same loss and the same Hessian-vector product.

Data: synthetic CIFAR-shaped images (32x32x3, smooth Gaussian fields: white noise
averaged over 4x4 cells and upsampled, plus a little pixel noise) labelled by a fixed
random teacher (the argmax of a random two-layer tanh network on the 8x8x3 cell means).
Batch ``b`` is generated from the seed ``(seed, b)`` when it is asked for, so a pass
holds one batch whatever the data set's size. Every tool sees the same batches: JAX
through ``gx.hessian.dataset_mean`` (a callable returning a fresh generator), torch
through a list of the same arrays.

Per point (initialisation, and after ``--train-steps`` Adam steps), float32, one thread:

* top-5 eigenvalues: gx Lanczos (``eigenpairs``, certified by residuals), PyHessian's
  power iteration (``eigenvalues(top_n=5)``, 1e-3 relative stop), hessian-eigenthings'
  Lanczos (``lanczos(k=5, which="LA")``, its residual ``tol``);
* trace: gx Hutch++, PyHessian's Hutchinson (``trace()``, its own stop),
  hessian-eigenthings' Hutch++;
* density: gx SLQ, PyHessian's SLQ (``density()``), hessian-eigenthings' SLQ, each
  compared with the reference density by the Wasserstein-1 distance of the quadrature
  measures (relative to the spectral width);
* per-stage top eigenvalue (``gx.hessian.block_spectra``);
* the reference: a long float64 gx run (top-5 to 1e-8 relative residual; Hutch++ with
  ``--ref-trace`` products; SLQ with more probes and steps).

Plus: the streaming memory at 1x and 10x the data (peak RSS of a child process making
one product pass over the data set), and the per-batch cost of one HVP against one
gradient of the same batch (both jitted).

    python benchmarks/hessian_scale.py                 # the full run (~1 h on one thread)
    python benchmarks/hessian_scale.py --smoke         # seconds: tiny data, tiny budgets
    python benchmarks/hessian_scale.py --model transformer --images 256 --batch 32

``--model transformer`` runs every row on the small transformer of
``benchmarks/hessian_transformer.py`` (next-token prediction on synthetic Markov-chain
sequences; its per-layer row splits embeddings, each block, and the final norm with the
head) in place of the ResNet.

Both sides run on the same ``--cpus`` CPUs (default 2; the process is pinned to them and
``torch.set_num_threads`` matches). XLA sizes its CPU thread pool by them, or by the
environment variable ``NPROC``, which this script sets to the CPUs plus one unless it is
set: a streamed gx tool holds one pool thread while its products' per-batch programs run
on the others, and the extra thread gives those programs every CPU (with one CPU and no
extra thread they would deadlock; the tools raise). The compared runs are
interleaved. Writes ``benchmarks/results/hessian_scale.{json,md}``.
PyHessian and hessian-eigenthings are optional: their rows are skipped when absent. They
are not in the project's extras (torch's CPU wheel comes from its own index)::

    python3 -m pip install torch --index-url https://download.pytorch.org/whl/cpu
    python3 -m pip install pyhessian hessian-eigenthings
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

import gradxform as gx

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import hessian_transformer as TR

H = gx.hessian
WIDTHS = (16, 32, 64)
CLASSES = 10
_HALF_ROOT = 0.5**0.5  # a Python float: weak-typed, keeps float32 float32


# ----------------------------------------------------------------------------- data
def teacher(seed: int = 1234) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(8 * 8 * 3, 64)) / np.sqrt(192), rng.normal(size=(64, CLASSES))


def make_batch(seed: int, index: int, size: int, image: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Batch ``index``: smooth random images (NHWC, float32) and their teacher labels."""
    rng = np.random.default_rng((seed, index))
    cells = rng.normal(size=(size, image // 4, image // 4, 3))
    x = np.repeat(np.repeat(cells, 4, axis=1), 4, axis=2) + 0.3 * rng.normal(
        size=(size, image, image, 3)
    )
    w1, w2 = teacher()
    pooled = x.reshape(size, 8, image // 8, 8, image // 8, 3).mean(axis=(2, 4)).reshape(size, -1)
    labels = np.argmax(np.tanh(pooled @ w1 * 3.0) @ w2, axis=1)
    return x.astype(np.float32), labels.astype(np.int32)


class Source:
    """A re-iterable data set of ``batches`` batches generated on demand (one held at a time)."""

    def __init__(self, seed: int, batches: int, size: int, image: int) -> None:
        self.seed, self.batches, self.size, self.image = seed, batches, size, image

    def __call__(self):
        for b in range(self.batches):
            yield make_batch(self.seed, b, self.size, self.image)

    def materialise(self) -> list[tuple[np.ndarray, np.ndarray]]:
        return list(self())


# ---------------------------------------------------------------------------- model
def _conv_init(key, c_in, c_out, dtype):
    w = jax.random.normal(key, (3, 3, c_in, c_out), dtype) * float(np.sqrt(2.0 / (9 * c_in)))
    return {"w": w, "b": jnp.zeros(c_out, dtype)}


def init_resnet(key, widths=WIDTHS, blocks: int = 3, dtype=jnp.float32) -> dict:
    """ResNet-20 parameters (norm-free): ``stem``, ``stage{1,2,3}/block{0,1,2}/conv{1,2}``, ``fc``."""
    keys = iter(jax.random.split(key, 2 + 2 * blocks * len(widths)))
    params: dict[str, Any] = {"stem": _conv_init(next(keys), 3, widths[0], dtype)}
    c_in = widths[0]
    for s, width in enumerate(widths, start=1):
        stage = {}
        for b in range(blocks):
            stage[f"block{b}"] = {
                "conv1": _conv_init(next(keys), c_in, width, dtype),
                "conv2": _conv_init(next(keys), width, width, dtype),
            }
            c_in = width
        params[f"stage{s}"] = stage
    w = jax.random.normal(next(keys), (widths[-1], CLASSES), dtype) * float(widths[-1] ** -0.5)
    params["fc"] = {"w": w, "b": jnp.zeros(CLASSES, dtype)}
    return params


def _conv(x, p, stride=1):
    out = jax.lax.conv_general_dilated(
        x, p["w"], (stride, stride), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    return out + p["b"]


def _shortcut(x, c_out, stride):
    if stride == 1 and x.shape[-1] == c_out:
        return x
    x = x[:, ::stride, ::stride, :]
    extra = c_out - x.shape[-1]
    return jnp.pad(x, ((0, 0), (0, 0), (0, 0), (extra // 2, extra - extra // 2)))


def resnet(params: dict, x: jax.Array) -> jax.Array:
    """Logits of the norm-free ResNet-20 for NHWC images."""
    x = x.astype(params["fc"]["w"].dtype)
    h = jax.nn.relu(_conv(x, params["stem"]))
    for s in range(1, _stages(params) + 1):
        stage = params[f"stage{s}"]
        for b in range(len(stage)):
            block = stage[f"block{b}"]
            stride = 2 if (s > 1 and b == 0) else 1
            c_out = block["conv1"]["w"].shape[-1]
            branch = _conv(jax.nn.relu(_conv(h, block["conv1"], stride)), block["conv2"])
            h = jax.nn.relu(_shortcut(h, c_out, stride) + branch) * _HALF_ROOT
    return jnp.mean(h, axis=(1, 2)) @ params["fc"]["w"] + params["fc"]["b"]


def _stages(params: dict) -> int:
    return sum(name.startswith("stage") for name in params)


def count(params) -> int:
    return int(sum(np.size(leaf) for leaf in jax.tree.leaves(params)))


# ---------------------------------------------------------------------------- torch
def torch_model(params: dict, torch):
    """The same network as a ``torch.nn.Module`` holding a copy of ``params``."""
    nn = torch.nn
    F = torch.nn.functional

    def conv(p, stride=1):
        w = np.asarray(p["w"], np.float32)
        layer = nn.Conv2d(w.shape[2], w.shape[3], 3, stride=stride, padding=1)
        with torch.no_grad():
            layer.weight.copy_(torch.from_numpy(np.transpose(w, (3, 2, 0, 1)).copy()))
            layer.bias.copy_(torch.from_numpy(np.asarray(p["b"], np.float32)))
        return layer

    class Block(nn.Module):
        def __init__(self, p, stride):
            super().__init__()
            self.conv1, self.conv2 = conv(p["conv1"], stride), conv(p["conv2"])
            self.stride, self.c_out = stride, p["conv1"]["w"].shape[-1]

        def forward(self, x):
            branch = self.conv2(F.relu(self.conv1(x)))
            short = x
            if self.stride != 1 or x.shape[1] != self.c_out:
                short = x[:, :, :: self.stride, :: self.stride]
                extra = self.c_out - short.shape[1]
                short = F.pad(short, (0, 0, 0, 0, extra // 2, extra - extra // 2))
            return F.relu(short + branch) * _HALF_ROOT

    class ResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = conv(params["stem"])
            blocks = []
            for s in range(1, _stages(params) + 1):
                stage = params[f"stage{s}"]
                for b in range(len(stage)):
                    blocks.append(Block(stage[f"block{b}"], 2 if (s > 1 and b == 0) else 1))
            self.blocks = nn.Sequential(*blocks)
            self.fc = nn.Linear(params["fc"]["w"].shape[0], CLASSES)
            with torch.no_grad():
                self.fc.weight.copy_(
                    torch.from_numpy(np.asarray(params["fc"]["w"], np.float32).T.copy())
                )
                self.fc.bias.copy_(torch.from_numpy(np.asarray(params["fc"]["b"], np.float32)))

        def forward(self, x):  # x: NCHW
            h = self.blocks(F.relu(self.stem(x)))
            return self.fc(h.mean(dim=(2, 3)))

    return ResNet()


def torch_flat_index(params: dict) -> np.ndarray:
    """Where each torch parameter entry sits in gx's ``ravel_pytree`` order (torch order -> flat)."""
    with_paths = jax.tree_util.tree_flatten_with_path(params)[0]
    names = ["/".join(str(getattr(k, "key", k)) for k in path) for path, _ in with_paths]
    starts = dict(zip(names, np.cumsum([0] + [int(np.size(v)) for _, v in with_paths])[:-1]))
    shapes = {n: np.shape(v) for n, (_, v) in zip(names, with_paths)}
    order = (
        ["stem"]
        + [f"stage{s}/block{b}/conv{c}" for s in (1, 2, 3) for b in range(3) for c in (1, 2)]
        + ["fc"]
    )
    out = []
    for layer in order:
        w = shapes[f"{layer}/w"]
        idx = starts[f"{layer}/w"] + np.arange(int(np.prod(w))).reshape(w)
        out.append((np.transpose(idx, (3, 2, 0, 1)) if len(w) == 4 else idx.T).ravel())
        out.append(starts[f"{layer}/b"] + np.arange(shapes[f"{layer}/b"][0]))
    return np.concatenate(out)


# ------------------------------------------------------------------------ measures
def wasserstein1(nodes_a, weights_a, nodes_b, weights_b) -> float:
    """W1 between two discrete measures on the line (weights normalised to 1)."""
    a_n, a_w = np.ravel(nodes_a), np.ravel(weights_a)
    b_n, b_w = np.ravel(nodes_b), np.ravel(weights_b)
    keep_a, keep_b = np.isfinite(a_n) & (a_w > 0), np.isfinite(b_n) & (b_w > 0)
    a_n, a_w, b_n, b_w = a_n[keep_a], a_w[keep_a], b_n[keep_b], b_w[keep_b]
    grid = np.sort(np.concatenate([a_n, b_n]))
    cdf_a = np.array([a_w[a_n <= g].sum() for g in grid]) / a_w.sum()
    cdf_b = np.array([b_w[b_n <= g].sum() for g in grid]) / b_w.sum()
    return float(np.sum(np.abs(cdf_a - cdf_b)[:-1] * np.diff(grid)))


def rel(got, want) -> float:
    got, want = np.asarray(got, float), np.asarray(want, float)
    return float(np.max(np.abs(got - want) / np.abs(want)))


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def timed_cold_warm(fn):
    """``fn``'s result, its first call's seconds (compiles included) and a second call's."""
    out, cold = timed(fn)
    _, warm = timed(fn)
    return out, cold, warm


# ------------------------------------------------------------------------ the models
class Model(NamedTuple):
    """A model both sides run: its parameters, data, JAX function and torch twin."""

    name: str
    description: str
    params: dict
    source: Any  # re-iterable: a call gives a fresh generator of (x, y) batches
    apply: Callable
    torch_module: Callable  # (params, torch) -> torch.nn.Module
    torch_index: Callable  # params -> where each torch entry sits in ravel_pytree's order
    torch_input: Callable  # a JAX-side input batch -> the torch module's (a NumPy array)
    blocks: dict  # the per-layer partition for block_spectra
    positions: int = 1  # labels per example: torch's mean cross-entropy is scaled by it


def build_model(args) -> Model:
    batches = args.images // args.batch
    if args.model == "transformer":
        params = TR.init_transformer(jax.random.PRNGKey(args.seed), args.d_model, args.layers)
        return Model(
            "transformer",
            f"a pre-norm transformer ({args.layers} layers, width {args.d_model}, 4 heads, "
            f"context {TR.CONTEXT}, vocabulary {TR.VOCAB}); {args.images} synthetic Markov-chain "
            f"sequences (next-token labels at every position) in batches of {args.batch}",
            params,
            TR.TokenSource(args.seed, batches, args.batch),
            TR.transformer,
            TR.torch_transformer,
            lambda p: np.arange(count(p)),
            lambda x: x.astype(np.int64),
            TR.BLOCKS,
            TR.CONTEXT,
        )
    widths = tuple(map(int, args.widths.split(",")))
    return Model(
        "resnet",
        f"norm-free ResNet-20; {args.images} synthetic {args.image}x{args.image}x3 images "
        f"(teacher labels) in batches of {args.batch}",
        init_resnet(jax.random.PRNGKey(args.seed), widths),
        Source(args.seed, batches, args.batch, args.image),
        resnet,
        torch_model,
        torch_flat_index,
        lambda x: np.transpose(x, (0, 3, 1, 2)).copy(),
        BLOCKS,
    )


# ------------------------------------------------------------------------ the runs
class Torch:
    """The torch side: the model, the same batches as tensors, product counting."""

    def __init__(self, spec: Model, params, batches):
        import torch

        torch.set_num_threads(len(os.sched_getaffinity(0)))
        self.torch = torch
        self.model = spec.torch_module(params, torch).eval()
        self.loader = [
            (torch.from_numpy(spec.torch_input(x)), torch.from_numpy(y.astype(np.int64).ravel()))
            for x, y in batches
        ]
        mean = torch.nn.CrossEntropyLoss()
        self.criterion = mean if spec.positions == 1 else lambda o, y: mean(o, y) * spec.positions
        self.index = spec.torch_index(params)

    def loss(self, model, batch):
        return self.criterion(model(batch[0]), batch[1])


class Counted:
    """Counts the calls of ``owner.method`` (one product over the data set each); calling
    ``self(name, fn)`` times ``fn`` and records its seconds and products under ``name``."""

    def __init__(self, owner: Any, method: str) -> None:
        self.calls = 0
        self.rows: dict[str, Any] = {}
        inner = getattr(owner, method)

        def counted(*args):
            self.calls += 1
            return inner(*args)

        setattr(owner, method, counted)

    def __call__(self, name: str, fn):
        self.calls = 0
        result, seconds = timed(fn)
        self.rows[name] = {"seconds": seconds, "products": self.calls}
        return result


def _restore_torch_eig(torch) -> None:
    """PyHessian 0.1's density calls ``torch.eig(T, eigenvectors=True)``, removed in torch 1.9+.
    Its ``T`` is the symmetric Lanczos tridiagonal, so ``torch.linalg.eigh`` gives the same
    eigenpairs; this supplies them in the old layout (real parts in column 0)."""

    def eig(matrix, eigenvectors=False):
        values, vectors = torch.linalg.eigh(matrix)
        pairs = torch.stack([values, torch.zeros_like(values)], dim=1)
        return pairs, (vectors if eigenvectors else None)

    torch.eig = eig


def pyhessian_rows(side: Torch, args) -> dict | None:
    try:
        from pyhessian import hessian as pyhessian_hessian
    except ImportError:
        return None
    _restore_torch_eig(side.torch)
    h = pyhessian_hessian(side.model, side.criterion, dataloader=side.loader, cuda=False)
    run = Counted(h, "dataloader_hv_product")
    side.torch.manual_seed(0)
    out = run.rows

    values, _ = run("top", lambda: h.eigenvalues(maxIter=100, tol=1e-3, top_n=args.k))
    out["top"]["values"] = sorted(values, reverse=True)
    samples = run("trace", lambda: h.trace(maxIter=args.pyhessian_trace, tol=1e-3))
    out["trace"]["estimate"] = float(np.mean(samples))
    nodes, weights = run("density", lambda: h.density(iter=args.density_steps, n_v=1))
    out["density"]["nodes"], out["density"]["weights"] = nodes[0], weights[0]
    return out


def eigenthings_rows(side: Torch, args, top_matvecs: int) -> dict | None:
    try:
        import hessian_eigenthings as he
    except ImportError:
        return None
    op = he.HessianOperator(side.model, side.loader, side.loss)
    run = Counted(op, "matvec")
    out = run.rows

    pairs = run(
        "top",
        lambda: he.lanczos(op, k=args.k, max_iter=top_matvecs, tol=args.tol, which="LA", seed=0),
    )
    out["top"].update(
        values=pairs.eigenvalues.tolist(),
        residuals=pairs.residuals.tolist(),
        converged=bool(pairs.converged.all()),
    )
    est = run("trace", lambda: he.hutch_plus_plus(op, num_matvecs=args.trace_matvecs, seed=0))
    out["trace"]["estimate"], out["trace"]["stderr"] = est.estimate, est.stderr
    dens = run(
        "density",
        lambda: he.spectral_density(op, num_runs=1, lanczos_steps=args.density_steps, seed=0),
    )
    out["density"]["nodes"] = dens.raw_eigenvalues[0].tolist()
    out["density"]["weights"] = dens.raw_weights[0].tolist()
    return out


def gx_top(objective, params, args, *, tol, budget):
    return H.hessian_eigenpairs(
        objective, params, k=args.k, which="top", tol=tol, max_matvecs=budget
    )


def gx_rows(objective, params, args, key) -> dict:
    out: dict[str, Any] = {}
    pairs, seconds, warm = timed_cold_warm(
        lambda: gx_top(objective, params, args, tol=args.tol, budget=args.budget)
    )
    out["top"] = {
        "seconds": seconds,
        "warm_seconds": warm,
        "products": int(pairs.num_matvecs),
        "values": np.asarray(pairs.values).tolist(),
        "residuals": np.asarray(pairs.residuals).tolist(),
        "converged": bool(np.all(pairs.converged)),
        "operator_error": float(pairs.operator_error),
    }
    est, seconds, warm = timed_cold_warm(
        lambda: H.trace(objective, params, num_matvecs=args.trace_matvecs, key=key)
    )
    out["trace"] = {
        "seconds": seconds,
        "warm_seconds": warm,
        "products": args.trace_matvecs,
        "estimate": float(est.estimate),
        "stderr": float(est.stderr),
    }
    dens, seconds, warm = timed_cold_warm(
        lambda: H.spectral_density(
            objective, params, num_probes=1, steps=args.density_steps, key=key
        )
    )
    out["density"] = {
        "seconds": seconds,
        "warm_seconds": warm,
        "products": args.density_steps,
        "nodes": np.asarray(dens.nodes).ravel().tolist(),
        "weights": np.asarray(dens.weights).ravel().tolist(),
    }
    return out


def reference(objective, params, args) -> dict:
    """The long certified run: top-k to a tight residual, long Hutch++, wider SLQ."""
    key = jax.random.PRNGKey(7)
    pairs, seconds = timed(
        lambda: gx_top(objective, params, args, tol=args.ref_tol, budget=4 * args.budget)
    )
    est = H.trace(objective, params, num_matvecs=args.ref_trace, key=key)
    dens = H.spectral_density(
        objective, params, num_probes=args.ref_probes, steps=args.ref_steps, key=key
    )
    return {
        "seconds_top": seconds,
        "products_top": int(pairs.num_matvecs),
        "values": np.asarray(pairs.values).tolist(),
        "residuals": np.asarray(pairs.residuals).tolist(),
        "converged": bool(np.all(pairs.converged)),
        "operator_error": float(pairs.operator_error),
        "trace": float(est.estimate),
        "trace_stderr": float(est.stderr),
        "trace_products": args.ref_trace,
        "density_nodes": np.asarray(dens.nodes).ravel().tolist(),
        "density_weights": np.asarray(dens.weights).ravel().tolist(),
    }


BLOCKS = {
    "stem": "stem+stage1",
    "stage1": "stem+stage1",
    "stage2": "stage2",
    "stage3": "stage3+fc",
    "fc": "stage3+fc",
}


def block_rows(objective, params, args, blocks: dict) -> dict:
    """Every block's top eigenvalue (traces and densities at minimal settings), twice:
    the first call compiles; the second's data passes are counted."""

    def spectra():
        return H.block_spectra(
            objective,
            params,
            blocks,
            k=1,
            max_matvecs=args.block_matvecs,
            trace_matvecs=3,
            density_probes=1,
            density_steps=2,
        )

    out, seconds = timed(spectra)
    before = objective.report.passes
    _, warm = timed(spectra)
    rows = {
        label: {
            "size": s.size,
            "top": float(s.top.values[0]),
            "residual": float(s.top.residuals[0]),
            "converged": bool(s.top.converged[0]),
            "products": int(s.top.num_matvecs),
        }
        for label, s in out.items()
    }
    passes = objective.report.passes - before
    return {"seconds": seconds, "warm_seconds": warm, "passes": passes, "blocks": rows}


def cost_rows(objective, params, side: Torch | None) -> dict:
    """One data pass of gradients against one of HVPs (both jitted per batch), and torch's."""
    flat = ravel_pytree(params)[0]
    v = jax.random.normal(jax.random.PRNGKey(3), flat.shape, flat.dtype)
    op = objective.operator(params)
    objective.grad(params), objective.run(lambda: op.matvec(v))  # compile both
    _, grad_s = timed(lambda: jax.block_until_ready(objective.grad(params)))
    _, hvp_s = timed(lambda: objective.run(lambda: op.matvec(v)))
    out = {"gx_grad_pass_s": grad_s, "gx_hvp_pass_s": hvp_s, "gx_ratio": hvp_s / grad_s}
    if side is not None:
        torch, model = side.torch, side.model
        ps = list(model.parameters())
        vt = torch.from_numpy(np.asarray(v)[side.index])
        pieces = [a.reshape(q.shape) for a, q in zip(torch.split(vt, [q.numel() for q in ps]), ps)]

        def grad_pass():
            for batch in side.loader:
                torch.autograd.grad(side.loss(model, batch), ps)

        def hvp_pass():
            for batch in side.loader:
                g = torch.autograd.grad(side.loss(model, batch), ps, create_graph=True)
                torch.autograd.grad(g, ps, grad_outputs=pieces)

        grad_pass(), hvp_pass()
        _, tg = timed(grad_pass)
        _, th = timed(hvp_pass)
        out.update(torch_grad_pass_s=tg, torch_hvp_pass_s=th, torch_ratio=th / tg)
    return out


def parity(objective, params, side: Torch) -> float:
    """Relative difference of one HVP over the data set, gx against torch (float32 both)."""
    torch, model = side.torch, side.model
    flat = ravel_pytree(params)[0]
    v = np.asarray(jax.random.normal(jax.random.PRNGKey(4), flat.shape, flat.dtype))
    ours = np.asarray(objective.run(lambda: objective.operator(params).matvec(jnp.asarray(v))))
    ps = list(model.parameters())
    vt = torch.from_numpy(v[side.index])
    pieces = [a.reshape(q.shape) for a, q in zip(torch.split(vt, [q.numel() for q in ps]), ps)]
    total = 0
    for batch in side.loader:
        g = torch.autograd.grad(side.loss(model, batch), ps, create_graph=True)
        hv = torch.autograd.grad(g, ps, grad_outputs=pieces)
        total = total + torch.cat([h.reshape(-1) for h in hv]).detach().numpy()
    theirs = total / len(side.loader)
    return float(np.linalg.norm(theirs - ours[side.index]) / np.linalg.norm(ours))


def memory_child(batches: int, size: int, image: int, widths: tuple) -> None:
    """Child process: one HVP pass over ``batches`` generated batches; prints the peak RSS."""
    params = init_resnet(jax.random.PRNGKey(0), widths)
    objective = H.dataset_mean(
        "softmax_cross_entropy", Source(0, batches, size, image), model=resnet
    )
    flat = ravel_pytree(params)[0]
    op = objective.operator(params)
    objective.run(lambda: op.matvec(jnp.ones_like(flat)))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB on Linux
    print(
        json.dumps(
            {"batches": batches, "examples": objective.report.examples, "peak_rss_mib": peak}
        )
    )


def memory_rows(args) -> list[dict]:
    rows = []
    for batches in (args.images // args.batch, 10 * (args.images // args.batch)):
        cmd = [sys.executable, __file__, "--memory-child", str(batches), "--batch", str(args.batch)]
        cmd += ["--image", str(args.image), "--widths", args.widths]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return rows


# --------------------------------------------------------------------------- report
def summarise(point: dict) -> list[dict]:
    """Per task and tool: seconds, products, error against the reference."""
    ref = point["reference"]
    width = max(ref["density_nodes"]) - min(ref["density_nodes"])
    rows = []
    for tool in ("gx", "pyhessian", "eigenthings"):
        out = point.get(tool)
        if not out:
            continue
        top = out["top"]
        values = sorted(top["values"], reverse=True)[: len(ref["values"])]
        rows.append(
            {
                "task": "top-5",
                "tool": tool,
                "seconds": top["seconds"],
                "warm": top.get("warm_seconds"),
                "products": top["products"],
                "error": rel(values, ref["values"]),
                "note": _top_note(top),
            }
        )
        tr = out["trace"]
        rows.append(
            {
                "task": "trace",
                "tool": tool,
                "seconds": tr["seconds"],
                "warm": tr.get("warm_seconds"),
                "products": tr["products"],
                "error": abs(tr["estimate"] - ref["trace"]) / abs(ref["trace"]),
                "note": f"estimate {tr['estimate']:.4g}"
                + (f" +- {tr['stderr']:.2g}" if "stderr" in tr else ""),
            }
        )
        de = out["density"]
        w1 = wasserstein1(de["nodes"], de["weights"], ref["density_nodes"], ref["density_weights"])
        rows.append(
            {
                "task": "density",
                "tool": tool,
                "seconds": de["seconds"],
                "warm": de.get("warm_seconds"),
                "products": de["products"],
                "error": w1 / width,
                "note": "W1 / spectral width",
            }
        )
    return rows


def _top_note(top: dict) -> str:
    if "residuals" not in top:
        return "no certificate (power iteration, 1e-3 relative stop)"
    return f"max residual {max(top['residuals']):.2g}, converged {top['converged']}"


def markdown(results: dict) -> str:
    cfg = results["config"]
    lines = [
        f"# Hessian analysis at scale: {results['model']}, streamed (CPU)",
        "",
        f"Machine: {results['machine']}; JAX and torch on the same pinned CPUs, interleaved.",
        f"Model: {results['description']}; {results['params']:,} parameters, float32, the data "
        "streamed through `gx.hessian.dataset_mean`.",
        "",
        f"Command: `{results['command']}`",
        "",
    ]
    for name, point in results["points"].items():
        ref = point["reference"]
        lines += [
            f"## {name}",
            "",
            f"Reference (gx, tol {cfg['ref_tol']}, {ref['products_top']} products): top-5 "
            f"{np.round(ref['values'], 5).tolist()}, max residual {max(ref['residuals']):.2g} "
            f"(operator error {ref['operator_error']:.2g}), converged {ref['converged']}; trace "
            f"{ref['trace']:.5g} +- {ref['trace_stderr']:.2g} (Hutch++, {ref['trace_products']} products).",
            "",
            "| task | tool | seconds (first call) | seconds (again) | products | error vs reference | note |",
            "|---|---|---:|---:|---:|---:|---|",
        ]
        for r in summarise(point):
            lines.append(
                f"| {r['task']} | {r['tool']} | {r['seconds']:.1f} | "
                + ("-" if r["warm"] is None else f"{r['warm']:.1f}")
                + f" | {r['products']} | "
                f"{r['error']:.2e} | {r['note']} |"
            )
        if "blocks" in point:
            lines += [
                "",
                "Per-stage top eigenvalue (`block_spectra`, all blocks in lockstep: "
                f"{point['blocks']['seconds']:.1f} s with compiling, "
                f"{point['blocks']['warm_seconds']:.1f} s warm, "
                f"{point['blocks']['passes']} data passes in all):",
                "",
            ]
            lines += [
                "| block | size | top eigenvalue | residual | converged | products |",
                "|---|---:|---:|---:|---|---:|",
            ]
            for label, b in point["blocks"]["blocks"].items():
                lines.append(
                    f"| {label} | {b['size']:,} | {b['top']:.5g} | {b['residual']:.2g} "
                    f"| {b['converged']} | {b['products']} |"
                )
        if "parity" in point:
            lines += [
                "",
                f"gx vs torch HVP over the data set: relative difference {point['parity']:.2e} (float32).",
            ]
        lines.append("")
    if "cost" in results:
        c = results["cost"]
        lines += [
            "## Per-batch cost of one HVP",
            "",
            f"One data pass of HVPs against one of gradients: gx {c['gx_hvp_pass_s']:.2f} s / "
            f"{c['gx_grad_pass_s']:.2f} s = {c['gx_ratio']:.2f} gradients"
            + (
                f"; torch {c['torch_hvp_pass_s']:.2f} s / {c['torch_grad_pass_s']:.2f} s = {c['torch_ratio']:.2f}."
                if "torch_ratio" in c
                else "."
            ),
            "",
        ]
    if "memory" in results:
        lines += [
            "## Streaming memory",
            "",
            "| batches | examples | peak RSS (MiB) |",
            "|---:|---:|---:|",
        ]
        for m in results["memory"]:
            lines.append(f"| {m['batches']} | {m['examples']} | {m['peak_rss_mib']:.0f} |")
        lines.append("")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main
def train(apply, params, batches, steps: int):
    """``steps`` Adam steps (learning rate 1e-3) cycling over the batches."""
    tx = gx.adam(1e-3)
    state = tx.init(params)

    @jax.jit
    def step(p, s, x, y):
        g = jax.grad(lambda q: H.softmax_cross_entropy(apply(q, x), y))(p)
        u, s = tx.update(g, s, p)
        return gx.apply_updates(p, u), s

    for t in range(steps):
        x, y = batches[t % len(batches)]
        params, state = step(params, state, x, y)
    return params


def analyse(spec: Model, params, batches, args, with_torch: bool) -> dict:
    """Every tool at ``params``, the data streamed from ``spec.source``; torch reads
    ``batches``, the same data materialised."""
    objective = H.dataset_mean(
        "softmax_cross_entropy", spec.source, model=spec.apply, progress=args.progress
    )
    side = Torch(spec, params, batches) if with_torch else None
    point: dict[str, Any] = {}
    if side is not None:
        point["parity"] = log("parity", parity(objective, params, side))
    key = jax.random.PRNGKey(0)
    # the three tools back to back (the reference, the longest, last)
    point["gx"] = log("gx", gx_rows(objective, params, args, key))
    if side is not None:
        point["pyhessian"] = log("pyhessian", pyhessian_rows(side, args))
        top_products = point["gx"]["top"]["products"]
        point["eigenthings"] = log("eigenthings", eigenthings_rows(side, args, top_products))
    if args.block_matvecs:
        point["blocks"] = log("blocks", block_rows(objective, params, args, spec.blocks))
    point["reference"] = log("reference", reference(objective, params, args))
    return {k: v for k, v in point.items() if v is not None}


def log(name: str, value: Any) -> Any:
    """Prints a finished row at once (a long run's partial results survive in its log)."""
    short = json.dumps(value, default=float)
    print(f"[{time.strftime('%H:%M:%S')}] {name}: {short[:2000]}", flush=True)
    return value


def pin(cpus: int) -> None:
    """Runs this process on its first ``cpus`` CPUs with XLA's CPU pool one thread larger
    (``NPROC``, unless set): before JAX's first computation, when XLA makes its CPU client
    and sizes the pool."""
    allowed = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, allowed[:cpus])
    os.environ.setdefault("NPROC", str(cpus + 1))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("resnet", "transformer"), default="resnet")
    parser.add_argument("--d-model", type=int, default=64, help="the transformer's width")
    parser.add_argument("--layers", type=int, default=2, help="the transformer's blocks")
    parser.add_argument("--images", type=int, default=512, help="examples (images or sequences)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--widths", default="16,32,64", help="channels of the three stages")
    parser.add_argument("--image", type=int, default=32, help="image side (a multiple of 8)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--tol", type=float, default=1e-3)
    parser.add_argument("--budget", type=int, default=80)
    parser.add_argument("--trace-matvecs", type=int, default=30)
    parser.add_argument("--pyhessian-trace", type=int, default=100)
    parser.add_argument("--density-steps", type=int, default=30)
    parser.add_argument("--ref-tol", type=float, default=1e-5)
    parser.add_argument("--ref-trace", type=int, default=90)
    parser.add_argument("--ref-probes", type=int, default=2)
    parser.add_argument("--ref-steps", type=int, default=60)
    parser.add_argument("--block-matvecs", type=int, default=10)
    parser.add_argument("--train-steps", type=int, default=0)
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--memory", action="store_true", help="peak RSS at 1x and 10x the data")
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs for both sides")
    parser.add_argument("--smoke", action="store_true", help="seconds: tiny data and budgets")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--memory-child", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.cpus < 1:
        parser.error("--cpus must be at least 1")
    pin(args.cpus)
    # float64 for the reference sums, switched on here rather than at import: a test that
    # imports this module must not change the precision of every test after it
    jax.config.update("jax_enable_x64", True)
    if args.memory_child:
        memory_child(
            args.memory_child, args.batch, args.image, tuple(map(int, args.widths.split(",")))
        )
        return {}
    if args.smoke:
        args.images, args.batch, args.image, args.k, args.budget = 4, 2, 8, 2, 8
        args.widths, args.d_model = "2,2,2", 8
        args.trace_matvecs, args.pyhessian_trace, args.density_steps = 3, 2, 3
        args.ref_trace, args.ref_probes, args.ref_steps, args.block_matvecs = 6, 1, 4, 2
    with_torch = not args.no_torch and _torch_available()
    if args.model == "transformer" and args.memory:
        parser.error("--memory measures the ResNet only")
    spec = build_model(args)
    params, batches = spec.params, spec.source.materialise()
    results: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores "
        f"({len(os.sched_getaffinity(0))} used by each side; XLA's pool NPROC="
        f"{os.environ.get('NPROC')})",
        "params": count(params),
        "model": {"resnet": "ResNet-20", "transformer": "a small transformer"}[spec.name],
        "description": spec.description,
        "config": {k: v for k, v in vars(args).items() if k not in ("out",)},
        "command": "python benchmarks/hessian_scale.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "points": {},
    }
    objective = H.dataset_mean("softmax_cross_entropy", batches, model=spec.apply)
    side = Torch(spec, params, batches) if with_torch else None
    results["cost"] = log("cost", cost_rows(objective, params, side))
    results["points"]["initialisation"] = analyse(spec, params, batches, args, with_torch)
    if args.train_steps:
        trained = train(spec.apply, params, batches, args.train_steps)
        results["points"][f"after {args.train_steps} Adam steps"] = analyse(
            spec, trained, batches, args, with_torch
        )

    if args.memory:
        results["memory"] = memory_rows(args)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "hessian_scale.json").write_text(json.dumps(results, indent=1, default=float))
    (out / "hessian_scale.md").write_text(markdown(results))
    print(markdown(results))
    return results


def _torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main()
