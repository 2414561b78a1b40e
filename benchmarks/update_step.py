"""One optimizer step: gradxform, its grouped engine, optax and torch.optim.

The step is ``(params, grads, state) -> (params, state)``, jitted with the
params and state buffers donated (torch: ``opt.step()`` in place), float32.
For every tree and optimizer it reports:

- the median step time of each implementation, measured in interleaved rounds
  (one step of each implementation in turn, ``--repeats`` rounds), so that all
  of them see the same machine load;
- with ``--layouts K`` (default 1), all of that K times, each time with every
  implementation's buffers placed differently in memory (a pad of a few KiB
  allocated before them, different per implementation and layout), and the
  median over the K layouts reported with its spread. On CPU a tree of many
  small leaves runs up to ~2x faster or slower depending only on where its
  buffers land (measured at 1,000 x 1,000: one implementation 33-64 ms across
  four pads in one process), so a ratio of two implementations measured in one
  layout says more about the allocator than about the code;
- the first call: ``tx.init`` + trace + compile + one step (torch: the
  optimizer's constructor and its first ``step()``, which creates the state);
- the peak host memory of that first call: the process's peak resident memory
  during it (``VmHWM``, reset through ``/proc/self/clear_refs`` after the imports
  and the creation of params and grads) less its resident memory at that reset;
  where Linux does not allow the reset, the growth of ``ru_maxrss``.

On CPU every implementation runs in its own worker process, forked from a
server process that imported the libraries and did nothing else: a fresh process
after its imports, so that its first call pays for everything a user's first
call pays for and its peak memory is its own. The main process starts the
workers one at a time, then asks each for a step in turn. With
``--in-process`` (implied by ``--device gpu``) everything runs in this process:
cheaper, but first calls after the first share warm caches, and no peak memory
is reported.

    python benchmarks/update_step.py                    # CPU: 4 trees, every optimizer
    python benchmarks/update_step.py --trees 10000      # CPU: 10,000 leaves, Adam, first call
    python benchmarks/update_step.py --device gpu       # GPU: 4 trees, Adam, < 5 minutes
    python benchmarks/update_step.py --quick --in-process   # smoke run, tiny trees

Trees (CPU / GPU): ``1leaf`` one leaf (2M / 100M floats); ``gpt2`` the 148
leaves of GPT-2 small (CPU: width 256 and a 16,384 vocabulary, 14M; GPU: the
real shapes, 124M); ``1000x1000`` 1,000 leaves of 1,000 floats (CPU);
``1000x16k`` 1,000 leaves of 16,000 floats (CPU); ``1000`` 1,000 leaves of
100,000 floats (GPU); ``10000`` 10,000 leaves (CPU: of 1,600 floats, opt-in,
first call and peak memory only; GPU: of 10,000 floats). Writes JSON and a
Markdown table under ``benchmarks/results/`` after every optimizer, so a run
cut short keeps what finished.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import multiprocessing
import os
import pathlib
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any, NamedTuple

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # GPU: room for torch
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # torch's idle threads sleep
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # this checkout's gradxform

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import gradxform as gx  # noqa: E402

LR = 1e-3


class Spec(NamedTuple):
    """One optimizer in each library, with the same hyperparameters."""

    gradxform: Callable[[], Any]
    optax: Callable[[], Any] | None  # None: optax lacks it (shampoo, soap)
    torch: tuple[str, dict] | None  # torch.optim class and kwargs; None: torch lacks it
    traffic: int  # bytes read and written per float32 parameter, at the minimum
    elementwise: bool = True  # the grouped engine applies


# One line per optimizer. torch's AMSGrad takes the maximum before the bias
# correction (same cost); torch's NAdam is a different method, so no torch column
# for nadam; nadamw's torch column is NAdam(decoupled_weight_decay=True), the same
# memory traffic plus torch's momentum-decay schedule (scalar work). torch's Adamax
# decay is coupled (L2), so adamaxw has none. AdaBelief's minimum is 28 bytes;
# gradxform's belief block keeps its own first moment, so it moves 36.
OPTIMIZERS: dict[str, Spec] = {
    "sgd": Spec(lambda: gx.sgd(LR), lambda: optax.sgd(LR), ("SGD", {"lr": LR}), 12),
    "momentum": Spec(
        lambda: gx.sgd(LR, 0.9),
        lambda: optax.sgd(LR, 0.9),
        ("SGD", {"lr": LR, "momentum": 0.9}),
        20,
    ),
    "nesterov": Spec(
        lambda: gx.sgd(LR, 0.9, nesterov=True),
        lambda: optax.sgd(LR, 0.9, nesterov=True),
        ("SGD", {"lr": LR, "momentum": 0.9, "nesterov": True}),
        20,
    ),
    "adagrad": Spec(
        lambda: gx.adagrad(LR),
        lambda: optax.adagrad(LR),
        ("Adagrad", {"lr": LR, "initial_accumulator_value": 0.1, "eps": 1e-7}),
        20,
    ),
    "rmsprop": Spec(
        lambda: gx.rmsprop(LR), lambda: optax.rmsprop(LR), ("RMSprop", {"lr": LR, "alpha": 0.9}), 20
    ),
    "adam": Spec(lambda: gx.adam(LR), lambda: optax.adam(LR), ("Adam", {"lr": LR}), 28),
    "adamw": Spec(
        lambda: gx.adamw(LR),
        lambda: optax.adamw(LR),
        ("AdamW", {"lr": LR, "weight_decay": 1e-4}),
        28,
    ),
    "nadam": Spec(lambda: gx.nadam(LR), lambda: optax.nadam(LR), None, 28),
    "amsgrad": Spec(
        lambda: gx.amsgrad(LR), lambda: optax.amsgrad(LR), ("Adam", {"lr": LR, "amsgrad": True}), 36
    ),
    "lion": Spec(lambda: gx.lion(LR), lambda: optax.lion(LR), None, 20),
    "sign_sgd": Spec(lambda: gx.sign_sgd(LR), lambda: optax.sign_sgd(LR), None, 12),
    "adamax": Spec(lambda: gx.adamax(LR), lambda: optax.adamax(LR), ("Adamax", {"lr": LR}), 28),
    "adamaxw": Spec(lambda: gx.adamaxw(LR), lambda: optax.adamaxw(LR), None, 28),
    "nadamw": Spec(
        lambda: gx.nadamw(LR),
        lambda: optax.nadamw(LR),
        ("NAdam", {"lr": LR, "weight_decay": 1e-4, "decoupled_weight_decay": True}),
        28,
    ),
    "adabelief": Spec(lambda: gx.adabelief(LR), lambda: optax.adabelief(LR), None, 28),
    "yogi": Spec(lambda: gx.yogi(LR), lambda: optax.yogi(LR), None, 28),
    "radam": Spec(lambda: gx.radam(LR), lambda: optax.radam(LR), ("RAdam", {"lr": LR}), 28),
    "adopt": Spec(lambda: gx.adopt(LR), lambda: optax.contrib.adopt(LR), None, 28),
    # LAMB and LARS: a norm per whole leaf (so not elementwise: no grouped column); torch.optim
    # has neither. Traffic: Adam's 28 bytes (LAMB), momentum's 20 (LARS), x read once more for
    # its norm at the minimum.
    "lamb": Spec(lambda: gx.lamb(LR), lambda: optax.lamb(LR), None, 28, elementwise=False),
    "lars": Spec(lambda: gx.lars(LR), lambda: optax.lars(LR), None, 20, elementwise=False),
    "adadelta": Spec(
        lambda: gx.adadelta(LR), lambda: optax.adadelta(LR), ("Adadelta", {"lr": LR}), 28
    ),
    # gradxform's Rprop is torch's; optax 0.2.8's returns the previous step (lagged=True
    # in gradxform), the same work. Traffic: g read, x, step sizes and signs read and written.
    "rprop": Spec(lambda: gx.rprop(LR), lambda: optax.rprop(LR), ("Rprop", {"lr": LR}), 28),
    # torch's NAdam with its momentum-decay schedule; optax has no such NAdam
    "nadam_momentum_decay": Spec(
        lambda: gx.nadam_momentum_decay(LR), None, ("NAdam", {"lr": LR}), 28
    ),
    # Adafactor: gradxform's is optax's recipe (the same bits); torch's Adafactor (a
    # relative step, eps as a floor, the last two axes) keeps the same factored state.
    # Traffic: g read, x read and written, the factors small: 12 bytes at the minimum.
    "adafactor": Spec(
        lambda: gx.adafactor(LR),
        lambda: optax.adafactor(LR),
        ("Adafactor", {"lr": LR}),
        12,
        elementwise=False,
    ),
    # Kronecker-factored: no optax (0.2.8) column; pytorch-optimizer's are not torch.optim.
    # Traffic: Adam's 28 bytes plus the factors (soap) / the 12 of SGD plus them (shampoo).
    "shampoo": Spec(
        lambda: gx.shampoo(LR, precondition_frequency=10), None, None, 12, elementwise=False
    ),
    "soap": Spec(lambda: gx.soap(LR), None, None, 28, elementwise=False),
    # schedule-free AdamW: no torch.optim column (the schedulefree package is not torch.optim).
    # Traffic: g read, y read and written, z and v read and written: 28 bytes at the minimum.
    "schedule_free_adamw": Spec(
        lambda: gx.schedule_free_adamw(LR),
        lambda: optax.contrib.schedule_free_adamw(LR),
        None,
        28,
    ),
    # no sophia row: its update needs an extra argument (value_fn=, logits_fn= or
    # hessian_diag=), which this harness's tx.update(grads, state, params) does not pass
}
TORCH_FUSED = {"SGD", "Adam", "AdamW", "Adagrad"}  # torch.optim classes with fused=True
IMPLS = ["gradxform", "grouped", "optax", "torch_foreach", "torch_fused"]


def gpt2_shapes(width: int, vocab: int, layers: int = 12, context: int = 1024) -> list:
    """The 148 parameter shapes of GPT-2 (12 layers): embeddings, blocks, final norm."""
    block = [(width,), (width,), (width, 3 * width), (3 * width,), (width, width), (width,)]
    block += [(width,), (width,), (width, 4 * width), (4 * width,), (4 * width, width), (width,)]
    return [(vocab, width), (context, width)] + block * layers + [(width,), (width,)]


class Tree(NamedTuple):
    shapes: list
    first_call_only: bool = False  # too slow to compile three times over: no step times


def trees(device: str, quick: bool) -> dict[str, Tree]:
    """The parameter trees by key (--trees), for the device and mode."""
    if quick:
        return {
            "1leaf": Tree([(4096,)]),
            "gpt2": Tree(gpt2_shapes(8, 64, layers=1, context=16)),
            "1000x1000": Tree([(100,)] * 10),
            "1000x16k": Tree([(1600,)] * 10),
            "10000": Tree([(16,)] * 100, first_call_only=True),
        }
    if device == "gpu":
        return {
            "1leaf": Tree([(100_000_000,)]),
            "gpt2": Tree(gpt2_shapes(768, 50257)),
            "1000": Tree([(100_000,)] * 1000),
            "10000": Tree([(10_000,)] * 10_000),
        }
    return {
        "1leaf": Tree([(2_000_000,)]),
        "gpt2": Tree(gpt2_shapes(256, 16384)),
        "1000x1000": Tree([(1000,)] * 1000),
        "1000x16k": Tree([(16_000,)] * 1000),
        "10000": Tree([(1_600,)] * 10_000, first_call_only=True),
    }


DEFAULT_TREES = {
    "cpu": ["1leaf", "gpt2", "1000x1000", "1000x16k"],
    "gpu": ["1leaf", "gpt2", "1000", "10000"],
}


def make_tree(shapes: list, seed: int, device: Any) -> list:
    rng = np.random.default_rng(seed)
    return [jax.device_put(rng.standard_normal(s, dtype=np.float32), device) for s in shapes]


def _status_mb(field: str) -> float:
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB
    raise OSError(f"no {field} in /proc/self/status")


def memory_baseline() -> float:
    """Resident MB now, with the peak reset to it (Linux); else the peak so far (ru_maxrss)."""
    try:
        pathlib.Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to VmRSS
        return _status_mb("VmRSS")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def peak_mb() -> float:
    """The process's peak resident MB (since the last reset, where there was one)."""
    try:
        return _status_mb("VmHWM")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class JaxRunner:
    """A jitted, donated step after its first call, which it times (with ``tx.init``)."""

    def __init__(self, tx: Any, apply_updates: Callable, shapes: list, device: Any):
        params, self.grads = make_tree(shapes, 0, device), make_tree(shapes, 1, device)
        baseline = memory_baseline()

        def step(params, grads, state):
            updates, state = tx.update(grads, state, params)
            return apply_updates(params, updates), state

        start = time.perf_counter()
        state = jax.block_until_ready(tx.init(params))
        self.init_s = time.perf_counter() - start
        self.jitted = jax.jit(step, donate_argnums=(0, 2))
        self.carry = jax.block_until_ready(self.jitted(params, self.grads, state))
        self.first_call_s = time.perf_counter() - start
        self.peak_mb = peak_mb() - baseline

    def step(self) -> float:
        start = time.perf_counter()
        self.carry = jax.block_until_ready(self.jitted(self.carry[0], self.grads, self.carry[1]))
        return time.perf_counter() - start


class TorchRunner:
    """torch.optim in place (foreach or fused) after its first ``step``, which it times."""

    def __init__(self, torch_class: str, kwargs: dict, mode: str, shapes: list, device: str):
        import torch

        dev = "cuda" if device == "gpu" else "cpu"
        gen = torch.Generator(dev).manual_seed(0)
        params = [torch.randn(s, generator=gen, device=dev).requires_grad_() for s in shapes]
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen, device=dev)
        self.sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
        baseline = memory_baseline()
        start = time.perf_counter()
        self.opt = getattr(torch.optim, torch_class)(params, **kwargs, **{mode: True})
        self.init_s = 0.0  # torch creates the state in the first step
        self.step()
        self.first_call_s = time.perf_counter() - start
        self.peak_mb = peak_mb() - baseline

    def step(self) -> float:
        start = time.perf_counter()
        self.opt.step()
        self.sync()
        return time.perf_counter() - start


def layout_pad(layout: int, impl: str) -> Any:
    """The buffer allocated before an implementation's params in a layout (kept alive).

    Layout 0 pads nothing (the plain measurement); the others pad by a
    multiple of 64 bytes below 64 KiB, a function of the layout and the
    implementation, which moves every later buffer relative to the 4 KiB pages
    and cache sets they share with each other.
    """
    if layout == 0:
        return None
    key = f"{layout}/{impl}".encode()
    size = 64 * (1 + int.from_bytes(key, "little") * 2654435761 % 1023)
    return jax.device_put(np.zeros(size, np.uint8))


def make_runner(
    impl: str, optimizer: str, shapes: list, device: str, layout: int = 0
) -> JaxRunner | TorchRunner:
    spec = OPTIMIZERS[optimizer]
    pad = layout_pad(layout, impl)
    runner: JaxRunner | TorchRunner
    if impl.startswith("torch_"):
        assert spec.torch is not None
        runner = TorchRunner(*spec.torch, impl.removeprefix("torch_"), shapes, device)
    elif impl == "optax":
        runner = JaxRunner(spec.optax(), optax.apply_updates, shapes, jax.devices(device)[0])
    else:
        tx = spec.gradxform()
        if impl == "grouped":
            tx = gx.grouped(tx)  # type: ignore[attr-defined]
        runner = JaxRunner(tx, gx.apply_updates, shapes, jax.devices(device)[0])
    runner.pad = pad  # held as long as the runner: its buffers stay where they were placed
    return runner


def worker(conn: Any, request: dict) -> None:
    """A worker process: one runner, its first call, then a step per request."""
    shapes = trees(request["device"], request["quick"])[request["tree"]].shapes
    runner = make_runner(
        request["impl"], request["optimizer"], shapes, request["device"], request["layout"]
    )
    conn.send({k: getattr(runner, k) for k in ("init_s", "first_call_s", "peak_mb")})
    while conn.recv() == "step":
        conn.send(runner.step())


def worker_context(torch: bool) -> Any:
    """Workers forked from a server that imported the libraries and did nothing else.

    Such a child is a fresh process after its imports (no backend, no traces, no
    compiled programs, its own peak memory), without paying for the imports
    (torch.optim's constructors import ``torch._dynamo``: 4 s).
    """
    context = multiprocessing.get_context("forkserver")
    libraries = ["numpy", "jax", "optax", "gradxform"]
    context.set_forkserver_preload(libraries + ["torch", "torch._dynamo"] * torch)
    return context


class Worker:
    """The main process's handle on a worker: its first call, then steps on request."""

    def __init__(self, context: Any, request: dict, timeout_s: float):
        self.conn, child = context.Pipe()
        self.proc = context.Process(target=worker, args=(child, request), daemon=True)
        self.proc.start()
        child.close()
        if not self.conn.poll(timeout_s):
            self.close()
            raise TimeoutError(f"first call over {timeout_s:.0f} s")
        try:
            self.__dict__.update(self.conn.recv())
        except EOFError:
            self.close()
            raise RuntimeError(f"worker exited with {self.proc.exitcode}") from None

    def step(self) -> float:
        self.conn.send("step")
        return self.conn.recv()

    def close(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()  # this worker only, by its handle
        self.proc.join()


def implementations(optimizer: str, args: argparse.Namespace) -> list[str]:
    """The implementations to run for an optimizer, given the flags and what is installed."""
    spec, impls = OPTIMIZERS[optimizer], ["gradxform"]
    if spec.elementwise and hasattr(gx, "grouped") and not args.no_grouped:
        impls.append("grouped")
    if spec.optax is not None:
        impls.append("optax")
    if spec.torch and not args.no_torch and importlib.util.find_spec("torch"):
        impls.append("torch_foreach")
        if spec.torch[0] in TORCH_FUSED:
            impls.append("torch_fused")
    return impls


def start_runners(optimizer: str, key: str, tree: Tree, args: argparse.Namespace, layout: int):
    """Each implementation's runner (its first call done), or the error that stopped it."""
    runners, errors = {}, {}
    for impl in implementations(optimizer, args):
        request = {"impl": impl, "optimizer": optimizer, "tree": key, "layout": layout}
        request |= {"device": args.device, "quick": args.quick}
        try:
            if args.in_process:
                runners[impl] = make_runner(impl, optimizer, tree.shapes, args.device, layout)
            else:
                runners[impl] = Worker(args.context, request, args.first_call_timeout)
        except (TimeoutError, RuntimeError) as error:  # recorded; the others still run
            errors[impl] = str(error)
            continue
        if tree.first_call_only and not args.in_process:
            runners[impl].close()  # frees its memory before the next compiles
    return runners, errors


def interleaved_steps(runners: dict, repeats: int) -> dict[str, list[float]]:
    """Step times, one step of each runner in turn; every other round in reverse."""
    times: dict[str, list[float]] = {impl: [] for impl in runners}
    for r in range(repeats + 1):  # round 0 is a warm-up
        for impl, runner in list(runners.items())[:: 1 if r % 2 else -1]:
            t = runner.step()
            if r:
                times[impl].append(t)
    return times


def measure(optimizer: str, key: str, tree: Tree, args: argparse.Namespace) -> dict:
    """One row: per layout, first calls one implementation at a time, then interleaved steps.

    Each field is the median over the layouts; ``<impl>_ms_layouts`` lists each
    layout's median step time.
    """
    row: dict[str, Any] = {"optimizer": optimizer, "tree": key, "leaves": len(tree.shapes)}
    row["params"] = int(sum(np.prod(s) for s in tree.shapes))
    seen: dict[str, dict[str, list]] = {}
    for layout in range(args.layouts):
        runners, errors = start_runners(optimizer, key, tree, args, layout)
        row.update({f"{impl}_error": error for impl, error in errors.items()})
        times = {} if tree.first_call_only else interleaved_steps(runners, args.repeats)
        for impl, runner in runners.items():
            fields = seen.setdefault(impl, {})
            for field in ("first_call_s", "init_s", "peak_mb"):
                value = None if args.in_process and field == "peak_mb" else getattr(runner, field)
                fields.setdefault(field, []).append(value)
            if times.get(impl):
                fields.setdefault("ms", []).append(1e3 * statistics.median(times[impl]))
                fields.setdefault("min_ms", []).append(1e3 * min(times[impl]))
            if isinstance(runner, Worker):
                runner.close()
    for impl, fields in seen.items():
        for field, values in fields.items():
            known = [v for v in values if v is not None]
            row[f"{impl}_{field}"] = statistics.median(known) if known else None
        if args.layouts > 1 and fields.get("ms"):
            row[f"{impl}_ms_layouts"] = fields["ms"]
    if row.get("gradxform_ms"):
        row["gradxform_GBps"] = (
            OPTIMIZERS[optimizer].traffic * row["params"] / row["gradxform_ms"] / 1e6
        )
    return row


def _num(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _ratio(row: dict, peer: str, ours: str, field: str) -> float | None:
    a, b = row.get(f"{peer}_{field}"), row.get(f"{ours}_{field}")
    return a / b if a is not None and b else None


def tables(rows: list[dict]) -> str:
    """Step times, first calls and peak memory as Markdown tables."""
    step = [
        "| tree | optimizer | gradxform ms | grouped ms | optax ms | torch foreach ms "
        "| torch fused ms | optax / gx | optax / grouped | torch fused / gx |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    first = [
        "| tree | optimizer | gx first s | grouped first s | optax first s | torch fused first s "
        "| optax / gx | optax / grouped | gx peak MB | grouped peak MB | optax peak MB "
        "| torch fused peak MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        name = f"| {r['tree']} | {r['optimizer']} |"
        ms = [_num(r.get(f"{i}_ms")) for i in IMPLS]
        ratios = [_ratio(r, "optax", "gradxform", "ms"), _ratio(r, "optax", "grouped", "ms")]
        ratios.append(_ratio(r, "torch_fused", "gradxform", "ms"))
        cells = [_num(x) for x in ratios]
        per_layout = [
            a / b for a, b in zip(r.get("optax_ms_layouts", []), r.get("gradxform_ms_layouts", []))
        ]
        if per_layout:  # the spread of the ratio over the memory layouts
            cells[0] += f" ({min(per_layout):.2f}-{max(per_layout):.2f})"
        if not r.get("first_call_only"):
            step.append(f"{name} {' | '.join(ms + cells)} |")
        impls = ["gradxform", "grouped", "optax", "torch_fused"]
        calls = [_num(r.get(f"{i}_first_call_s")) for i in impls]
        calls += [_num(_ratio(r, "optax", i, "first_call_s")) for i in ("gradxform", "grouped")]
        calls += [_num(r.get(f"{i}_peak_mb"), 0) for i in impls]
        first.append(f"{name} {' | '.join(calls)} |")
    return (
        "Step time (median of interleaved rounds, and over memory layouts where there are "
        "several, with the range of optax / gx over them; ratios > 1: the peer is slower):\n\n"
        + "\n".join(step)
        + "\n\nFirst call (init + trace + compile + one step) and its peak host memory:\n\n"
        + "\n".join(first)
        + "\n"
    )


def bars(rows: list[dict], device: str) -> list[str]:
    """The issue's bars, checked on these rows: one line per bar, with the misses."""
    results: dict[str, list[tuple[str, float | None, bool]]] = {}

    def check(bar: str, row: dict, value: float | None, least: float = -1e300, most: float = 1e300):
        ok = value is not None and least <= value <= most
        results.setdefault(bar, []).append((f"{row['optimizer']} {row['tree']}", value, ok))

    for r in rows:
        tree, opt = r["tree"], r["optimizer"]
        if device == "cpu" and tree != "10000" and OPTIMIZERS[opt].optax is not None:
            check("step optax / gx >= 1.0", r, _ratio(r, "optax", "gradxform", "ms"), 1)
            check(
                "first call optax / gx >= 1.0",
                r,
                _ratio(r, "optax", "gradxform", "first_call_s"),
                1,
            )
        if device == "cpu" and tree == "10000":
            first = _ratio(r, "optax", "gradxform", "first_call_s")
            check("10,000 leaves: first call optax / gx >= 1.0", r, first, 1)
            check(
                "10,000 leaves: peak MB optax / gx >= 1.0",
                r,
                _ratio(r, "optax", "gradxform", "peak_mb"),
                1,
            )
        grouped = any(k.startswith("grouped_") for k in r)
        if device == "cpu" and (tree, opt) == ("1000x1000", "adam") and grouped:
            check("grouped: step optax / grouped >= 2.0", r, _ratio(r, "optax", "grouped", "ms"), 2)
            first = _ratio(r, "optax", "grouped", "first_call_s")
            check("grouped: first call optax / grouped >= 1.0", r, first, 1)
        if device == "gpu" and opt == "adam":
            limit = {"1leaf": 1.0, "gpt2": 1.4}.get(tree, 2.0)
            check(f"gx step <= {limit} ms", r, r.get("gradxform_ms"), most=limit)
            check("torch fused / gx >= 1.0", r, _ratio(r, "torch_fused", "gradxform", "ms"), 1)
            if tree == "10000":
                check(
                    "10,000 leaves: gx first call < 3 s", r, r.get("gradxform_first_call_s"), most=3
                )
    lines = []
    for bar, found in results.items():
        misses = [f"{name} {_num(value)}" for name, value, ok in found if not ok]
        missed = f"; missed: {', '.join(misses)}" if misses else ""
        lines.append(f"- {bar}: {len(found) - len(misses)} of {len(found)} met{missed}")
    return lines


def machine() -> str:
    """CPU model, core count and memory (Linux), or the platform's name."""
    try:
        info = pathlib.Path("/proc/cpuinfo").read_text()
        model = next(
            line.split(":", 1)[1].strip()
            for line in info.splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        model = platform.machine()
    return f"{model}, {os.cpu_count()} cores, {available_gb('MemTotal'):.0f} GB"


def available_gb(field: str = "MemAvailable") -> float:
    try:
        for line in pathlib.Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("nan")


def versions() -> dict[str, str]:
    """Python and library versions; gradxform's commit, marked where gradxform/ has changes."""
    found = {
        "python": platform.python_version(),
        "jax": jax.__version__,
        "optax": optax.__version__,
    }
    root = pathlib.Path(__file__).resolve().parents[1]

    def git(*command: str) -> str:
        try:
            done = subprocess.run(["git", *command], cwd=root, capture_output=True, text=True)
            return done.stdout.strip()
        except OSError:
            return ""

    found["gradxform"] = git("rev-parse", "--short", "HEAD") or "unknown"
    if git("status", "--porcelain", "gradxform"):
        found["gradxform"] += " with uncommitted changes"
    if importlib.util.find_spec("torch"):
        import torch

        found["torch"] = torch.__version__
    return found


def write(args: argparse.Namespace, header: dict, rows: list[dict]) -> pathlib.Path:
    """JSON and Markdown under --out; returns the Markdown file."""
    rows = sorted(rows, key=lambda r: args.trees.index(r["tree"]))  # by tree, stable
    lines = bars(rows, args.device)
    mode = "in one process" if args.in_process else "each implementation in a fresh worker process"
    text = (
        f"# One optimizer step, float32, donated buffers ({args.device})\n\n"
        f"Machine: {header['machine']}. Versions: "
        + ", ".join(f"{k} {v}" for k, v in header["versions"].items())
        + f". Date: {header['date']}. Command: `{header['command']}`. Load average (1 min): "
        f"{header['load']}.\n\n"
        f"Median of {args.repeats} interleaved rounds, {mode}. Peak memory: peak resident "
        "memory of the first call (VmHWM, reset after the imports and the creation of params "
        "and grads) less the resident memory at that reset.\n\n"
        + tables(rows)
        + ("\nBars:\n\n" + "\n".join(lines) + "\n" if lines else "")
        + (
            "\nNot run:\n\n" + "".join(f"- {s}\n" for s in header["skipped"])
            if header["skipped"]
            else ""
        )
    )
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"update_step_{args.device}{'_' + args.tag if args.tag else ''}"
    (args.out / f"{stem}.json").write_text(
        json.dumps(header | {"rows": rows, "bars": lines}, indent=1)
    )
    (args.out / f"{stem}.md").write_text(text)
    return args.out / f"{stem}.md"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--trees", nargs="*", help="keys of trees(); default: the device's four")
    parser.add_argument(
        "--optimizers",
        nargs="*",
        choices=list(OPTIMIZERS),
        help="default: all, adam first (GPU, 10000 alone: adam)",
    )
    parser.add_argument(
        "--repeats", type=int, default=None, help="rounds (default: 20 CPU, 10 GPU, 2 quick)"
    )
    parser.add_argument("--quick", action="store_true", help="tiny trees: a smoke run")
    parser.add_argument(
        "--in-process", action="store_true", help="no worker processes (GPU: always)"
    )
    parser.add_argument(
        "--layouts", type=int, default=1, help="memory layouts per row; fields are their median"
    )
    parser.add_argument("--no-torch", action="store_true", help="skip torch.optim")
    parser.add_argument("--no-grouped", action="store_true", help="skip gx.grouped")
    parser.add_argument(
        "--first-call-timeout", type=float, default=1200.0, help="seconds, per worker"
    )
    parser.add_argument("--min-free-gb", type=float, default=16.0, help="10000 on CPU: needed free")
    parser.add_argument(
        "--budget-s", type=float, help="start no row after this many seconds (GPU: 240)"
    )
    parser.add_argument("--tag", default="", help="suffix for the output file names")
    parser.add_argument(
        "--out", type=pathlib.Path, default=pathlib.Path(__file__).parent / "results"
    )
    args = parser.parse_args(argv)
    args.in_process |= args.device == "gpu"
    if args.device == "gpu" and args.budget_s is None:
        args.budget_s = 240.0  # the whole command under 5 minutes
    args.trees = args.trees or DEFAULT_TREES[args.device]
    unknown = set(args.trees) - set(trees(args.device, args.quick))
    if unknown:
        parser.error(f"unknown trees for {args.device}: {sorted(unknown)}")
    only_adam = args.device == "gpu" or args.trees == ["10000"]
    adam_first = sorted(OPTIMIZERS, key=lambda name: name != "adam")
    args.optimizers = args.optimizers or (["adam"] if only_adam else adam_first)
    args.repeats = args.repeats or (2 if args.quick else 10 if args.device == "gpu" else 20)
    return args


def warm_up(args: argparse.Namespace, torch: bool) -> None:
    """In one process: start the backends before the first implementation's first call."""
    jax.block_until_ready(jax.jit(lambda x: x + 1)(np.zeros(3, np.float32)))
    if torch and args.device == "gpu":
        import torch as torch_module

        torch_module.ones(3, device="cuda").sum().item()


def skip_reason(key: str, tree: Tree, args: argparse.Namespace, elapsed: float) -> str | None:
    if args.budget_s is not None and elapsed > args.budget_s:
        return f"{elapsed:.0f} s spent, over --budget-s {args.budget_s:.0f}"
    free = available_gb()
    if tree.first_call_only and not args.quick and free < args.min_free_gb:
        return f"{free:.1f} GB free, under --min-free-gb {args.min_free_gb:.0f}"
    return None


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    command = "python benchmarks/update_step.py " + " ".join(sys.argv[1:] if argv is None else argv)
    header = {"machine": machine(), "versions": versions(), "command": command.strip()}
    header["date"] = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    header["load"] = f"{os.getloadavg()[0]:.1f} at the start"
    header["skipped"] = []
    torch = not args.no_torch and importlib.util.find_spec("torch") is not None
    args.context = None if args.in_process else worker_context(torch)
    if args.in_process:
        warm_up(args, torch)
    all_trees, rows, start = trees(args.device, args.quick), [], time.perf_counter()
    for optimizer in args.optimizers:  # a run cut short has the first ones on every tree
        for key in args.trees:
            tree = all_trees[key]
            reason = skip_reason(key, tree, args, time.perf_counter() - start)
            if reason:
                header["skipped"].append(f"{optimizer} {key}: {reason}")
                print(f"skipping {header['skipped'][-1]}", flush=True)
                continue
            row = measure(optimizer, key, tree, args) | {"first_call_only": tree.first_call_only}
            rows.append(row)
            print(f"[{time.perf_counter() - start:6.0f} s] {json.dumps(row)}", flush=True)
            header["load"] = header["load"].split(",")[0] + f", {os.getloadavg()[0]:.1f} at the end"
            write(args, header, rows)
    print(write(args, header, rows).read_text())


if __name__ == "__main__":
    main()
