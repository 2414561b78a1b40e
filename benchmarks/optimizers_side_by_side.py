"""gradxform vs optax vs torch.optim: one jitted optimizer step, side by side.

For each optimizer, on the parameter tree of a small MLP (~1.1M float32
parameters in 8 leaves), measures the median time of one jitted
``(params, grads, state) -> (params, state)`` step with donated buffers, and
the time of the first call (trace + compile). torch.optim (foreach) runs the
same update in place when torch is importable. Writes JSON and a Markdown
table under ``benchmarks/results/``.

    python benchmarks/optimizers_side_by_side.py [--repeats 50]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import gradxform as gx

SIZES = [(784, 512), (512,), (512, 512), (512,), (512, 512), (512,), (512, 10), (10,)]

PAIRS = {
    "sgd+momentum": (
        lambda: gx.sgd(1e-2, 0.9),
        lambda: optax.sgd(1e-2, 0.9),
        ("SGD", {"lr": 1e-2, "momentum": 0.9}),
    ),
    "nesterov": (
        lambda: gx.sgd(1e-2, 0.9, nesterov=True),
        lambda: optax.sgd(1e-2, 0.9, nesterov=True),
        ("SGD", {"lr": 1e-2, "momentum": 0.9, "nesterov": True}),
    ),
    "adagrad": (lambda: gx.adagrad(1e-2), lambda: optax.adagrad(1e-2), ("Adagrad", {"lr": 1e-2})),
    "rmsprop": (lambda: gx.rmsprop(1e-3), lambda: optax.rmsprop(1e-3), ("RMSprop", {"lr": 1e-3})),
    "adam": (lambda: gx.adam(1e-3), lambda: optax.adam(1e-3), ("Adam", {"lr": 1e-3})),
    "adamw": (
        lambda: gx.adamw(1e-3),
        lambda: optax.adamw(1e-3),
        ("AdamW", {"lr": 1e-3, "weight_decay": 1e-4}),
    ),
}


def tree(seed: int):
    keys = jax.random.split(jax.random.PRNGKey(seed), len(SIZES))
    return {
        f"p{i:02d}": jax.random.normal(k, s, jnp.float32)
        for i, (k, s) in enumerate(zip(keys, SIZES))
    }


def time_jax(tx, apply_updates, repeats: int):
    params, grads = tree(0), tree(1)

    def step(params, grads, state):
        updates, state = tx.update(grads, state, params)
        return apply_updates(params, updates), state

    jitted = jax.jit(step, donate_argnums=(0, 2))
    state = tx.init(params)
    start = time.perf_counter()
    params, state = jax.block_until_ready(jitted(params, grads, state))
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        params, state = jax.block_until_ready(jitted(params, grads, state))
        times.append(time.perf_counter() - start)
    return statistics.median(times), first


def time_torch(torch_class: str, kwargs: dict, repeats: int):
    try:
        import torch
    except ImportError:
        return None
    params = [torch.tensor(np.asarray(v)) for v in tree(0).values()]
    grads = [torch.tensor(np.asarray(v)) for v in tree(1).values()]
    for p, g in zip(params, grads):
        p.grad = g
    opt = getattr(torch.optim, torch_class)(params, foreach=True, **kwargs)
    opt.step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        opt.step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument(
        "--out", type=pathlib.Path, default=pathlib.Path(__file__).parent / "results"
    )
    args = parser.parse_args()
    n_params = sum(int(np.prod(s)) for s in SIZES)
    rows = []
    for name, (make_gx, make_optax, (torch_class, torch_kwargs)) in PAIRS.items():
        gx_step, gx_first = time_jax(make_gx(), gx.apply_updates, args.repeats)
        ox_step, ox_first = time_jax(make_optax(), optax.apply_updates, args.repeats)
        torch_step = time_torch(torch_class, torch_kwargs, args.repeats)
        rows.append(
            {
                "optimizer": name,
                "gradxform_ms": 1e3 * gx_step,
                "optax_ms": 1e3 * ox_step,
                "torch_foreach_ms": None if torch_step is None else 1e3 * torch_step,
                "gradxform_first_call_s": gx_first,
                "optax_first_call_s": ox_first,
            }
        )
    device = jax.devices()[0]
    machine = f"{platform.machine()}, {device.platform} ({device.device_kind}), {platform.node()}"
    header = (
        f"# One optimizer step, {n_params:,} float32 params in {len(SIZES)} leaves\n\n"
        f"Machine: {machine}; jax {jax.__version__}, optax {optax.__version__}; "
        f"median of {args.repeats} steps.\n\n"
        "| optimizer | gradxform ms | optax ms | torch foreach ms | gx/optax "
        "| gx first call s | optax first call s |\n"
        "|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in rows:
        torch_ms = "n/a" if r["torch_foreach_ms"] is None else f"{r['torch_foreach_ms']:.3f}"
        lines.append(
            f"| {r['optimizer']} | {r['gradxform_ms']:.3f} | {r['optax_ms']:.3f} | {torch_ms} | "
            f"{r['gradxform_ms'] / r['optax_ms']:.2f} | {r['gradxform_first_call_s']:.2f} | "
            f"{r['optax_first_call_s']:.2f} |"
        )
    table = header + "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "optimizers_side_by_side.json").write_text(
        json.dumps({"machine": machine, "rows": rows}, indent=1)
    )
    (args.out / "optimizers_side_by_side.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
