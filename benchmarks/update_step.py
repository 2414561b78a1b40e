"""One optimizer step on four parameter trees: gradxform vs optax vs torch.optim.

The step is ``(params, grads, state) -> (params, state)``, jitted with the
params and state buffers donated (torch: ``opt.step()`` in place). For every
tree and optimizer it reports the median step time, the effective bandwidth at
the minimal memory traffic (bytes read and written per parameter: SGD 12,
momentum / Nesterov / AdaGrad / RMSProp 20, Adam / AdamW 28), the first call
(trace + compile + one step) and the ratio of every peer to gradxform, all
measured in this one process. Writes JSON and a Markdown table under
``benchmarks/results/``.

    python benchmarks/update_step.py                      # CPU trees, ~16M params
    python benchmarks/update_step.py --device gpu         # GPU trees, ~100M params
    python benchmarks/update_step.py --trees 1000x1000 --optimizers adam

Trees (CPU / GPU): one leaf; the 148 leaves of GPT-2 small (GPU: the real
shapes, 124M; CPU: width 256 and a 16,384 vocabulary, 14M); 1,000 equal leaves;
10,000 equal leaves; and 1,000 leaves of 1,000 floats (the issue's CPU bar).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import statistics
import time

import jax
import numpy as np
import optax

import gradxform as gx

LR = 1e-3
# name -> (gradxform, optax, torch class and kwargs, bytes moved per parameter)
OPTIMIZERS = {
    "sgd": (lambda: gx.sgd(LR), lambda: optax.sgd(LR), ("SGD", {"lr": LR}), 12),
    "momentum": (
        lambda: gx.sgd(LR, 0.9),
        lambda: optax.sgd(LR, 0.9),
        ("SGD", {"lr": LR, "momentum": 0.9}),
        20,
    ),
    "nesterov": (
        lambda: gx.sgd(LR, 0.9, nesterov=True),
        lambda: optax.sgd(LR, 0.9, nesterov=True),
        ("SGD", {"lr": LR, "momentum": 0.9, "nesterov": True}),
        20,
    ),
    "adagrad": (lambda: gx.adagrad(LR), lambda: optax.adagrad(LR), ("Adagrad", {"lr": LR}), 20),
    "rmsprop": (lambda: gx.rmsprop(LR), lambda: optax.rmsprop(LR), ("RMSprop", {"lr": LR}), 20),
    "adam": (lambda: gx.adam(LR), lambda: optax.adam(LR), ("Adam", {"lr": LR}), 28),
    "adamw": (
        lambda: gx.adamw(LR),
        lambda: optax.adamw(LR),
        ("AdamW", {"lr": LR, "weight_decay": 1e-4}),
        28,
    ),
}
# torch optimizers with a fused implementation for the device in question
TORCH_FUSED = {"SGD", "Adam", "AdamW", "Adagrad"}


def gpt2_shapes(width: int, vocab: int, layers: int = 12, context: int = 1024):
    shapes = [(vocab, width), (context, width)]
    for _ in range(layers):
        shapes += [
            (width,),
            (width,),  # ln_1
            (width, 3 * width),
            (3 * width,),  # attention qkv
            (width, width),
            (width,),  # attention projection
            (width,),
            (width,),  # ln_2
            (width, 4 * width),
            (4 * width,),  # mlp in
            (4 * width, width),
            (width,),  # mlp out
        ]
    return shapes + [(width,), (width,)]  # ln_f


def trees(device: str) -> dict[str, list[tuple[int, ...]]]:
    if device == "gpu":
        return {
            "1 leaf": [(100_000_000,)],
            "gpt2-small (148 leaves)": gpt2_shapes(768, 50257),
            "1,000 leaves": [(100_000,)] * 1000,
            "10,000 leaves": [(10_000,)] * 10_000,
            "1000x1000": [(1000,)] * 1000,
        }
    return {
        "1 leaf": [(16_000_000,)],
        "gpt2-small (148 leaves)": gpt2_shapes(256, 16384),
        "1,000 leaves": [(16_000,)] * 1000,
        "10,000 leaves": [(1_600,)] * 10_000,
        "1000x1000": [(1000,)] * 1000,
    }


TREE_KEYS = {
    "1leaf": "1 leaf",
    "gpt2": "gpt2-small (148 leaves)",
    "1000": "1,000 leaves",
    "10000": "10,000 leaves",
    "1000x1000": "1000x1000",
}


def make_tree(shapes, seed, device):
    rng = np.random.default_rng(seed)
    return [jax.device_put(rng.standard_normal(s, dtype=np.float32), device) for s in shapes]


def prepared_step(tx, apply_updates, shapes, device):
    """A jitted, donated step and its carry, after the first call (which it times)."""
    params, grads = make_tree(shapes, 0, device), make_tree(shapes, 1, device)

    def step(params, grads, state):
        updates, state = tx.update(grads, state, params)
        return apply_updates(params, updates), state

    jitted = jax.jit(step, donate_argnums=(0, 2))
    state = jax.device_put(tx.init(params), device)
    start = time.perf_counter()
    carry = jax.block_until_ready(jitted(params, grads, state))
    return jitted, grads, carry, time.perf_counter() - start


def time_jax_pair(ours, theirs, shapes, repeats, device):
    """Median step times of two jax steps, run alternately so both see the same machine."""
    steps = [prepared_step(*pair, shapes, device) for pair in (ours, theirs)]
    carries = [s[2] for s in steps]
    times = [[], []]
    for _ in range(repeats):
        for i, (jitted, grads, _, _) in enumerate(steps):
            start = time.perf_counter()
            carries[i] = jax.block_until_ready(jitted(carries[i][0], grads, carries[i][1]))
            times[i].append(time.perf_counter() - start)
    return [(statistics.median(t), s[3]) for t, s in zip(times, steps)]


def time_torch(torch_class, kwargs, shapes, repeats, device, mode):
    try:
        import torch
    except ImportError:
        return None
    if mode == "fused" and torch_class not in TORCH_FUSED:
        return None
    dev = "cuda" if device == "gpu" else "cpu"
    gen = torch.Generator().manual_seed(0)
    params = [torch.randn(s, generator=gen).to(dev).requires_grad_() for s in shapes]
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen).to(dev)
    opt = getattr(torch.optim, torch_class)(params, **kwargs, **{mode: True})
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    opt.step()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        opt.step()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--trees", nargs="*", choices=sorted(TREE_KEYS), default=sorted(TREE_KEYS))
    parser.add_argument(
        "--optimizers", nargs="*", choices=list(OPTIMIZERS), default=list(OPTIMIZERS)
    )
    parser.add_argument("--no-torch", action="store_true", help="skip torch.optim")
    parser.add_argument("--tag", default="", help="suffix for the output file names")
    parser.add_argument(
        "--out", type=pathlib.Path, default=pathlib.Path(__file__).parent / "results"
    )
    args = parser.parse_args()
    device = jax.devices(args.device)[0]
    all_trees = trees(args.device)
    rows = []
    for key in args.trees:
        tree_name = TREE_KEYS[key]
        shapes = all_trees[tree_name]
        n = sum(int(np.prod(s)) for s in shapes)
        tree_rows = []
        for name in args.optimizers:  # all jax steps first: torch's idle threads may spin
            make_gx, make_optax, _, traffic = OPTIMIZERS[name]
            (gx_s, gx_first), (ox_s, ox_first) = time_jax_pair(
                (make_gx(), gx.apply_updates),
                (make_optax(), optax.apply_updates),
                shapes,
                args.repeats,
                device,
            )
            tree_rows.append(
                {
                    "tree": tree_name,
                    "leaves": len(shapes),
                    "params": n,
                    "optimizer": name,
                    "gradxform_ms": 1e3 * gx_s,
                    "optax_ms": 1e3 * ox_s,
                    "gradxform_GBps": traffic * n / gx_s / 1e9,
                    "gradxform_first_call_s": gx_first,
                    "optax_first_call_s": ox_first,
                }
            )
        for row in tree_rows:
            torch_class, torch_kwargs = OPTIMIZERS[row["optimizer"]][2]
            for mode in ("foreach", "fused"):
                t = (
                    None
                    if args.no_torch
                    else time_torch(
                        torch_class, torch_kwargs, shapes, args.repeats, args.device, mode
                    )
                )
                row[f"torch_{mode}_ms"] = None if t is None else 1e3 * t
            print(format_row(row), flush=True)
        rows += tree_rows
    machine = f"{platform.machine()}, {device.platform} ({device.device_kind})"
    write(args, machine, rows)


def _ms(x):
    return "n/a" if x is None else f"{x:.2f}"


def _ratio(peer, ours):
    return "n/a" if peer is None else f"{peer / ours:.2f}"


def format_row(r):
    return (
        f"| {r['tree']} | {r['optimizer']} | {r['gradxform_ms']:.2f} | {r['gradxform_GBps']:.1f} | "
        f"{r['optax_ms']:.2f} | {_ms(r['torch_foreach_ms'])} | {_ms(r['torch_fused_ms'])} | "
        f"{_ratio(r['optax_ms'], r['gradxform_ms'])} | "
        f"{_ratio(r['torch_fused_ms'], r['gradxform_ms'])} | "
        f"{r['gradxform_first_call_s']:.2f} | {r['optax_first_call_s']:.2f} |"
    )


def write(args, machine, rows):
    header = (
        f"# One optimizer step, float32, donated buffers ({args.device})\n\n"
        f"Machine: {machine}; jax {jax.__version__}, optax {optax.__version__}; "
        f"median of {args.repeats} steps. Ratios are peer time / gradxform time "
        "(> 1: gradxform faster). First call: trace + compile + one step.\n\n"
        "| tree | optimizer | gradxform ms | gradxform GB/s | optax ms | torch foreach ms "
        "| torch fused ms | optax / gx | torch fused / gx | gx first call s "
        "| optax first call s |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    table = header + "\n".join(format_row(r) for r in rows) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"update_step_{args.device}{'_' + args.tag if args.tag else ''}"
    (args.out / f"{stem}.json").write_text(
        json.dumps({"machine": machine, "jax": jax.__version__, "rows": rows}, indent=1)
    )
    (args.out / f"{stem}.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
