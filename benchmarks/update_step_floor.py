"""The floor under one optimizer step on a many-leaf tree: what a jitted step pays
before it does any arithmetic.

For each tree (the GPU trees of ``benchmarks/update_step.py`` by default) it times,
interleaved in one process, with every buffer donated that can be:

- ``dispatch``: a jitted step that takes params, grads and two moment trees and
  returns params and moments unchanged (no kernel runs: the cost of calling an
  executable with that many buffers);
- ``sgd``: ``params - 1e-3 * grads`` (one elementwise kernel per leaf, the least
  arithmetic an update can do);
- ``gx.adam``: gradxform's Adam, as ``update_step.py`` runs it;
- ``adam, one buffer``: the same Adam on one leaf holding all the tree's floats
  (the layout a fused multi-tensor kernel works on).

    python benchmarks/update_step_floor.py --device gpu      # 1leaf, gpt2, 1000 (GPU shapes)
    python benchmarks/update_step_floor.py --quick           # smoke run, tiny trees, CPU

Writes ``update_step_floor_<device>.json`` and ``.md`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from update_step import make_tree, trees  # noqa: E402

import gradxform as gx  # noqa: E402


def timed_steps(shapes: list, device) -> dict:
    """name -> (step function, carry) for the four programs on this tree."""
    fresh = lambda: make_tree(shapes, 0, device)  # noqa: E731  (donated: one copy each)
    grads = make_tree(shapes, 1, device)
    zeros = lambda: [jnp.zeros_like(g) for g in grads]  # noqa: E731
    total = sum(int(np.prod(s)) for s in shapes)

    def dispatch(p, g, m, v):
        return p, m, v

    def sgd(p, g, m, v):
        return [a - 1e-3 * b for a, b in zip(p, g)], m, v

    tx = gx.adam(1e-3)
    params = fresh()

    def adam(p, g, state, _):
        updates, state = tx.update(g, state, p)
        return gx.apply_updates(p, updates), state, None

    flat_p = jax.device_put(np.random.default_rng(0).standard_normal(total, np.float32), device)
    flat_g = jax.device_put(np.random.default_rng(1).standard_normal(total, np.float32), device)
    return {
        "dispatch": (
            jax.jit(dispatch, donate_argnums=(0, 2, 3)),
            [fresh(), grads, zeros(), zeros()],
        ),
        "sgd": (jax.jit(sgd, donate_argnums=(0, 2, 3)), [fresh(), grads, zeros(), zeros()]),
        "gx.adam": (jax.jit(adam, donate_argnums=(0, 2)), [params, grads, tx.init(params), None]),
        "adam, one buffer": (
            jax.jit(adam, donate_argnums=(0, 2)),
            [flat_p, flat_g, tx.init(flat_p), None],
        ),
    }


def measure(shapes: list, device, repeats: int) -> dict:
    programs = timed_steps(shapes, device)
    carries = {}
    first = {}
    for name, (fn, args) in programs.items():
        start = time.perf_counter()
        out = jax.block_until_ready(fn(*args))
        first[name] = time.perf_counter() - start
        carries[name] = [out[0], args[1], out[1], out[2]]
    times: dict[str, list] = {name: [] for name in programs}
    for _ in range(repeats):
        for name, (fn, _) in programs.items():
            c = carries[name]
            start = time.perf_counter()
            out = jax.block_until_ready(fn(*c))
            times[name].append(time.perf_counter() - start)
            carries[name] = [out[0], c[1], out[1], out[2]]
    return {
        name: {"ms": 1e3 * statistics.median(t), "min_ms": 1e3 * min(t), "first_s": first[name]}
        for name, t in times.items()
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "gpu"], default="gpu")
    parser.add_argument("--trees", nargs="*", default=["1leaf", "gpt2", "1000"])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--out", type=pathlib.Path, default=pathlib.Path(__file__).parent / "results"
    )
    args = parser.parse_args(argv)
    device = jax.devices(args.device)[0]
    shapes_by_tree = trees("gpu", args.quick)
    rows = []
    for key in args.trees:
        shapes = shapes_by_tree["1000x1000" if args.quick and key == "1000" else key].shapes
        result = measure(shapes, device, args.repeats)
        rows.append({"tree": key, "leaves": len(shapes)} | result)
        print(json.dumps(rows[-1]), flush=True)
    names = ["dispatch", "sgd", "gx.adam", "adam, one buffer"]
    lines = [
        f"# The floor under one step ({args.device})\n",
        f"Machine: {platform.processor() or platform.machine()}, {jax.devices(args.device)[0]}; "
        f"jax {jax.__version__}; command: `python benchmarks/update_step_floor.py "
        f"{' '.join(argv if argv is not None else sys.argv[1:])}`. Median of {args.repeats} "
        "interleaved rounds, ms per step (first call in s).\n",
        "| tree | leaves | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for row in rows:
        cells = [f"{row[n]['ms']:.2f} ({row[n]['first_s']:.1f} s)" for n in names]
        lines.append(f"| {row['tree']} | {row['leaves']} | " + " | ".join(cells) + " |")
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"update_step_floor_{args.device}"
    (args.out / f"{stem}.json").write_text(json.dumps(rows, indent=1))
    (args.out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
