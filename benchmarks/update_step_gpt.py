"""One optimizer step on the GPT's parameter tree: gradxform against optax, interleaved.

The tree is ``benchmarks/train.py``'s GPT at the issue's scale (``SCALES["gpu"]``:
1.8M float32 parameters in 53 leaves). For every optimizer that optax (or
``optax.contrib``) also has, both libraries are built with the same arguments
(the pairs the parity tests prove equal), and the step
``(params, state, grads) -> (params, state)`` is jitted with params and state
donated. All programs run in this process; each round steps every program
once, in a fresh random order, so all see the same machine load and none
always follows the same program (a fixed order biased some ratios by up to 1.3x).
``--layouts K`` repeats all of it K times with the buffers placed differently
in memory (a pad allocated before each program's buffers), since on CPU the
time of a many-leaf step moves with where its buffers land; the ratio reported
is the median over layouts of each layout's median-ratio, for the wall time and
for the process CPU time of a step (on a loaded box the CPU time is the steadier:
it does not count the time the step waited for a core).

``--hlo`` prints, for each pair, what the compiled programs contain: fusions,
parameters (and scalar parameters), conditionals, copies, ``while`` loops, the
number of donated buffers aliased to outputs, and the state's leaves.

    XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" \\
        OMP_NUM_THREADS=1 nice -n 10 python3 benchmarks/update_step_gpt.py --rounds 200
    python3 benchmarks/update_step_gpt.py --only adamw,lion --hlo

``--constant`` adds a third program per pair, gradxform's optimizer wrapped in
``gx.constant_hyperparams`` (its hyperparameters compile-time constants, as
optax's numbers are), reported as ``gxc`` and ``constant_*_ratio``.

Writes ``update_step_gpt_<device>.json`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import optax.contrib as oc  # noqa: E402

import gradxform as gx  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from train import SCALES, init_gpt  # noqa: E402

LR = 1e-3

# name -> (gradxform, optax): the argument pairs of the parity tests
PAIRS: dict[str, tuple[Callable, Callable]] = {
    "sgd": (lambda: gx.sgd(LR), lambda: optax.sgd(LR)),
    "momentum": (lambda: gx.sgd(LR, 0.9), lambda: optax.sgd(LR, 0.9)),
    "nesterov": (
        lambda: gx.sgd(LR, 0.9, nesterov=True),
        lambda: optax.sgd(LR, 0.9, nesterov=True),
    ),
    "adopt": (lambda: gx.adopt(LR), lambda: oc.adopt(LR)),
    "adadelta": (lambda: gx.adadelta(1.0), lambda: optax.adadelta(1.0)),
    "rprop": (lambda: gx.rprop(LR, lagged=True), lambda: optax.rprop(LR)),
    "adafactor": (lambda: gx.adafactor(LR), lambda: optax.adafactor(LR)),
    "muon": (
        lambda: gx.muon(0.02, bias_correction=True, eps=1e-8, eps_mode="add", adam_nesterov=True),
        lambda: oc.muon(0.02),
    ),
    "schedule_free_adamw": (
        lambda: gx.schedule_free_adamw(LR, warmup_steps=10, warmup="optax"),
        lambda: oc.schedule_free_adamw(LR, warmup_steps=10),
    ),
    "schedule_free_sgd": (
        lambda: gx.schedule_free_sgd(0.1, warmup_steps=10, warmup="optax"),
        lambda: oc.schedule_free_sgd(0.1, warmup_steps=10),
    ),
}


# the same call in both libraries
SAME_CALL = ("adam", "adamw", "nadamw", "radam", "adamax", "adabelief", "yogi", "lion", "sign_sgd",
             "lamb", "lars")  # fmt: skip
for _name in SAME_CALL:
    PAIRS[_name] = (
        (lambda n: lambda: getattr(gx, n)(LR))(_name),
        (lambda n: lambda: getattr(optax, n)(LR))(_name),
    )


def gpt_params() -> dict:
    return init_gpt(jax.random.key(0), SCALES["gpu"])


def gpt_grads(params: dict) -> dict:
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    return jax.tree.unflatten(
        treedef, [1e-2 * jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)]
    )


def step_fn(tx, apply) -> Callable:
    def step(p, s, g):
        updates, s = tx.update(g, s, p)
        return apply(p, updates), s

    return jax.jit(step, donate_argnums=(0, 1))


class Runner:
    """One jitted, donated step and its carried params and state."""

    def __init__(self, tx, apply, params, grads, pad_floats: int):
        self.pad = jnp.zeros(pad_floats, jnp.float32)  # moves the buffers made after it
        self.fn = step_fn(tx, apply)
        self.p = jax.tree.map(jnp.copy, params)
        self.s = jax.tree.map(jnp.copy, tx.init(self.p))
        self.g = grads
        for _ in range(3):  # compile, then two warm calls
            self.p, self.s = self.fn(self.p, self.s, self.g)
        jax.block_until_ready((self.p, self.s))

    def __call__(self) -> tuple[float, float]:
        """(wall seconds, process CPU seconds) of one step."""
        start, cpu = time.perf_counter(), time.process_time()
        self.p, self.s = self.fn(self.p, self.s, self.g)
        jax.block_until_ready((self.p, self.s))
        return time.perf_counter() - start, time.process_time() - cpu


def one_layout(names: list[str], rounds: int, layout: int, constant: bool = False) -> dict:
    params = gpt_params()
    grads = gpt_grads(params)
    runners = {}
    for i, name in enumerate(names):
        make_gx, make_optax = PAIRS[name]
        pad = 1024 * ((7 * layout + 3 * i) % 17)
        runners[name, "gx"] = Runner(make_gx(), gx.apply_updates, params, grads, pad)
        runners[name, "optax"] = Runner(make_optax(), optax.apply_updates, params, grads, pad + 512)
        if constant:  # the same optimizer, its hyperparameters compile-time constants
            tx = gx.constant_hyperparams(make_gx())
            runners[name, "gxc"] = Runner(tx, gx.apply_updates, params, grads, pad + 256)
    times: dict[tuple, list[tuple[float, float]]] = {k: [] for k in runners}
    # a fresh random order every round: with a rotated fixed order each program always runs
    # after the same one (optax's after gradxform's twin, whose grads it finds in cache; the
    # program after Muon's 250 ms of matrix products always cold), a bias of up to 1.3x
    order, rng = list(runners), np.random.default_rng(layout)
    for _ in range(rounds):
        for i in rng.permutation(len(order)):
            times[order[i]].append(runners[order[i]]())
    medians = {
        k: tuple(1e3 * statistics.median(x[i] for x in t) for i in (0, 1)) for k, t in times.items()
    }
    for name in names:
        gx_ms, optax_ms = medians[name, "gx"], medians[name, "optax"]
        const = medians.get((name, "gxc"))
        tail = f"  constant wall {const[0]:8.3f} cpu {const[1]:8.3f} ms" if const else ""
        print(f"layout {layout} {name:20s} wall {gx_ms[0]:8.3f} / {optax_ms[0]:8.3f} ms  "
              f"cpu {gx_ms[1]:8.3f} / {optax_ms[1]:8.3f} ms{tail}", flush=True)  # fmt: skip
    return medians


def hlo_facts(tx, params, grads) -> dict:
    state = tx.init(params)
    compiled = step_fn(tx, gx.apply_updates).lower(params, state, grads).compile()
    text = compiled.as_text()
    entry = text[text.index("ENTRY") :]
    entry = entry[: entry.index("\n}\n")]
    params_lines = [ln for ln in entry.splitlines() if " parameter(" in ln]
    aliases = re.search(r"input_output_alias=\{(.*?)\}\s*,\s*entry", text, re.S)
    return {
        "fusions": len(re.findall(r"\bfusion\(", entry)),
        "entry_ops": sum(1 for ln in entry.splitlines() if " = " in ln),
        "parameters": len(params_lines),
        "scalar_parameters": sum(1 for ln in params_lines if re.search(r"= [a-z0-9]+\[\] ", ln)),
        "conditionals": text.count(" conditional("),
        "whiles": text.count(" while("),
        "copies": len(re.findall(r"\bcopy\(", entry)),
        "custom_calls": text.count("custom-call("),
        "aliased": (aliases.group(1).count("{") if aliases else 0),
        "state_leaves": len(jax.tree.leaves(state)),
        "state_scalars": sum(1 for x in jax.tree.leaves(state) if np.ndim(x) == 0),
    }


def commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        )
        return out.stdout.strip()
    except OSError:
        return "unknown"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--only", default="", help="comma list of optimizers (default: all)")
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--layouts", type=int, default=1)
    parser.add_argument("--hlo", action="store_true", help="print compiled-program facts only")
    parser.add_argument(
        "--constant",
        action="store_true",
        help="also time gx.constant_hyperparams(gradxform's optimizer), as 'gxc'",
    )
    parser.add_argument(
        "--out", type=pathlib.Path, default=pathlib.Path(__file__).parent / "results"
    )
    args = parser.parse_args(argv)
    names = [n for n in args.only.split(",") if n] or list(PAIRS)
    if args.hlo:
        params = gpt_params()
        grads = gpt_grads(params)
        facts = {}
        for name in names:
            make_gx, make_optax = PAIRS[name]
            facts[name] = {"gx": hlo_facts(make_gx(), params, grads)}
            facts[name]["optax"] = hlo_facts(make_optax(), params, grads)
            if args.constant:
                tx = gx.constant_hyperparams(make_gx())
                facts[name]["gxc"] = hlo_facts(tx, params, grads)
            print(name, json.dumps(facts[name]), flush=True)
        return facts
    load0 = os.getloadavg()
    started = time.time()
    layouts = [one_layout(names, args.rounds, k, args.constant) for k in range(args.layouts)]
    compared = [("gx", "")] + ([("gxc", "constant_")] if args.constant else [])  # over optax
    libs = [lib for lib, _ in compared] + ["optax"]
    rows = {}
    for name in names:
        rows[name] = {}
        for i, what in enumerate(("wall", "cpu")):
            for lib in libs:
                ms = statistics.median(lay[name, lib][i] for lay in layouts)
                rows[name][f"{lib}_{what}_ms"] = round(ms, 4)
            for lib, key in compared:
                ratios = [lay[name, lib][i] / lay[name, "optax"][i] for lay in layouts]
                rows[name][f"{key}{what}_ratio"] = round(statistics.median(ratios), 3)
                rows[name][f"{key}{what}_ratios"] = [round(r, 3) for r in ratios]
        print(f"{name:22s} {json.dumps(rows[name])}", flush=True)
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "device": str(jax.devices()[0]),
        "jax": jax.__version__,
        "optax": optax.__version__,
        "commit": commit(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
        "load_before_after": [round(load0[0], 2), round(os.getloadavg()[0], 2)],
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "rounds": args.rounds,
        "layouts": args.layouts,
        "leaves": len(jax.tree.leaves(gpt_params())),
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"update_step_gpt_{jax.devices()[0].platform}.json").write_text(
        json.dumps(result, indent=1)
    )
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}))
    return result


if __name__ == "__main__":
    main()
