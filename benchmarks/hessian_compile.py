"""First-call and repeat time of the Hessian tools, with and without the solver options.

The tools compile one program per objective, shapes and options (issue #19: on a
network the first call is mostly XLA compiling the Lanczos driver). gradxform
compiles some of them with XLA's elemental emitters on CPU
(``gradxform/_xla_options.py``); this script times every tool in a fresh process
with that option and with XLA's default (MLIR fusion) emitters, on

* ``quadratic``: a 40-D quadratic (the driver alone: its products are trivial);
* ``cnn``: two 3x3 convolutions and a dense layer on 512 scikit-learn digits
  (5,768 parameters), softmax cross-entropy.

Run: ``python benchmarks/hessian_compile.py`` (about three minutes on 2 cores). Each
(problem, emitters) pair runs in its own subprocess so that no compile is cached;
the table gives seconds for the first call (compile and run) and the best of three
repeats (run only), and the values, which agree to rounding.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

TOOLS = ("eigenpairs", "trace", "block_spectra")


def problem(name: str):
    import jax
    import jax.numpy as jnp

    if name == "quadratic":
        scales = jnp.arange(1.0, 41.0)

        def quadratic(p):
            return 0.5 * jnp.sum(scales * p["w"] ** 2) + 0.5 * jnp.sum(p["b"] ** 2)

        return quadratic, {"w": jnp.zeros(40), "b": jnp.zeros(4)}, {"w": "w", "b": "b"}
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = jnp.asarray(x[:512].reshape(-1, 8, 8, 1) / 16, jnp.float32)
    y = jnp.asarray(y[:512])
    k = jax.random.split(jax.random.PRNGKey(0), 3)
    params = {
        "c1": 0.3 * jax.random.normal(k[0], (3, 3, 1, 8)),
        "c2": 0.1 * jax.random.normal(k[1], (3, 3, 8, 8)),
        "w": 0.05 * jax.random.normal(k[2], (8 * 8 * 8, 10)),
    }
    dims = ("NHWC", "HWIO", "NHWC")

    def cnn(p):
        h = jax.nn.relu(jax.lax.conv_general_dilated(x, p["c1"], (1, 1), "SAME", None, None, dims))
        h = jnp.tanh(jax.lax.conv_general_dilated(h, p["c2"], (1, 1), "SAME", None, None, dims))
        logits = h.reshape(h.shape[0], -1) @ p["w"]
        picked = jnp.take_along_axis(logits, y[:, None], 1)[:, 0]
        return jnp.mean(jax.nn.logsumexp(logits, -1) - picked)

    return cnn, params, {"c*": "conv", "w": "dense"}


def worker(name: str, emitters: str) -> dict:
    """Times the tools in this process; ``emitters``: ``solver`` (gradxform's) or ``default``."""
    import jax
    import numpy as np

    import gradxform as gx
    from gradxform._xla_options import SolverJit
    from gradxform.hessian import operators

    # every tool's program compiled one way (gradxform itself picks per tool)
    if emitters == "default":
        compiled = jax.jit(operators._on_hessian, static_argnums=(0, 1, 4, 5))
    else:
        compiled = SolverJit(operators._on_hessian, static_argnums=(0, 1, 4, 5))
    operators._on_hessian_compiled = operators._on_hessian_solver_compiled = compiled
    f, params, blocks = problem(name)
    calls = {
        "eigenpairs": lambda: gx.hessian.hessian_eigenpairs(f, params, k=5, max_matvecs=80).values,
        "trace": lambda: gx.hessian.trace(f, params, num_matvecs=30).estimate,
        "block_spectra": lambda: [
            b.top.values for b in gx.hessian.block_spectra(f, params, blocks).values()
        ],
    }
    out = {}
    for tool in TOOLS:
        start = time.perf_counter()
        value = jax.block_until_ready(calls[tool]())
        first = time.perf_counter() - start
        repeats = []
        for _ in range(3):
            start = time.perf_counter()
            jax.block_until_ready(calls[tool]())
            repeats.append(time.perf_counter() - start)
        leading = np.ravel(np.concatenate([np.ravel(v) for v in jax.tree.leaves(value)]))[:2]
        out[tool] = (first, min(repeats), [float(v) for v in leading])
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--problems", default="quadratic,cnn")
    parser.add_argument(
        "--worker", nargs=2, metavar=("PROBLEM", "EMITTERS"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(*args.worker)))
        return
    print(
        "| problem | tool | first call, default emitters | first call, elemental emitters | again, default | again, elemental | values (default / elemental) |"
    )
    print("|---|---|---:|---:|---:|---:|---|")
    for name in args.problems.split(","):
        runs = {}
        for emitters in ("default", "solver"):
            cmd = [sys.executable, __file__, "--worker", name, emitters]
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            runs[emitters] = json.loads(done.stdout.strip().splitlines()[-1])
        for tool in TOOLS:
            (f0, r0, v0), (f1, r1, v1) = runs["default"][tool], runs["solver"][tool]
            values = f"{[round(v, 6) for v in v0]} / {[round(v, 6) for v in v1]}"
            print(
                f"| {name} | {tool} | {f0:.2f} | {f1:.2f} | {r0:.3f} | {r1:.3f} | {values} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
