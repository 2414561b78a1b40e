"""Convolution gradients inside XLA CPU loops, and what it costs the Hessian tools.

On XLA's CPU backend a convolution's weight gradient inside a ``while`` loop
(``fori_loop``, ``scan``, every Lanczos driver) compiles to a generic loop
(``dim_labels=f01b_i01o->01bf``); the same computation unrolled or in its own
program is canonicalised to the library convolution (``b01f_01io->b01f`` with
transposes). This script measures:

1. twelve weight- and input-gradient convolutions (512 images of 8x8x8), as
   twelve programs, unrolled in one program, and in a ``fori_loop``;
2. the Hessian tools on the 5,768-parameter CNN of ``hessian_compile.py``, with
   the objective as a closure, its products in the driver's loop (the tool
   called inside ``jax.jit``, where the params are tracers) or as their own
   programs called back from the loop (the tool called directly: gradxform
   does this for a convolutional closure on CPU), and as
   ``gx.hessian.dataset_mean`` over a one-element list of batches.

Run: ``python benchmarks/hessian_products_in_loops.py`` (a few minutes on 2 cores).
"""

from __future__ import annotations

import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import gradxform as gx

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from hessian_compile import problem  # noqa: E402


def seconds(fn, *args) -> float:
    """Wall seconds of the second call (the first compiles)."""
    jax.block_until_ready(fn(*args))
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - start


def convolutions() -> None:
    x = jax.random.normal(jax.random.PRNGKey(0), (512, 8, 8, 8))
    w = 0.1 * jax.random.normal(jax.random.PRNGKey(1), (3, 3, 8, 8))
    dims = ("NHWC", "HWIO", "NHWC")

    def conv(x, w):
        return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", None, None, dims)

    cases = {
        "forward": conv,
        "weight gradient": lambda x, w: jax.grad(lambda w: jnp.sum(jnp.tanh(conv(x, w))))(w),
        "input gradient": lambda x, w: jax.grad(lambda x: jnp.sum(jnp.tanh(conv(x, w))))(x),
    }
    print("| 12 convolutions | separate programs | unrolled | fori_loop |")
    print("|---|---:|---:|---:|")
    for name, op in cases.items():
        one = jax.jit(op)

        def body(i, v, op=op):
            return v + 1e-3 * jnp.sum(op(v, w))

        separate = seconds(lambda a, one=one: [one(a, w) for _ in range(12)], x)
        unrolled = seconds(
            jax.jit(lambda a, b=body: jax.lax.fori_loop(0, 12, b, a, unroll=True)), x
        )
        looped = seconds(jax.jit(lambda a, b=body: jax.lax.fori_loop(0, 12, b, a)), x)
        print(f"| {name} | {separate:.4f} | {unrolled:.4f} | {looped:.4f} |", flush=True)


def tools() -> None:
    f, params, blocks = problem("cnn")
    streamed = gx.hessian.dataset_mean(lambda p, _: f(p), [np.zeros((1, 1))])
    calls = {
        "eigenpairs (k=5)": lambda f, p: gx.hessian.hessian_eigenpairs(f, p, k=5, max_matvecs=80),
        "spectral_density": lambda f, p: gx.hessian.spectral_density(f, p),
        "block_spectra": lambda f, p: gx.hessian.block_spectra(f, p, blocks),
    }
    ways = {  # a jitted call sees tracers: its products stay in the driver's loop
        "in the loop": lambda call: jax.jit(lambda p: top_value(call(f, p))),
        "as programs": lambda call: lambda p: top_value(call(f, p)),
        "one-batch list": lambda call: lambda p: top_value(call(streamed, p)),
    }
    print()
    print("| CNN tool | " + " | ".join(f"{w}: first | again" for w in ways) + " | top value |")
    print("|---|" + "---:|---:|" * len(ways) + "---|")
    for name, call in calls.items():
        row, values = [], []
        for way in ways.values():
            run = way(call)
            start = time.perf_counter()
            jax.block_until_ready(run(params))
            first = time.perf_counter() - start
            start = time.perf_counter()
            top, _ = jax.block_until_ready(run(params))
            row += [first, time.perf_counter() - start]
            values.append(round(float(top), 5))
        cells = " | ".join(f"{t:.2f}" for t in row)
        print(f"| {name} | {cells} | {' / '.join(map(str, values))} |", flush=True)


def top_value(out) -> tuple:
    """The top eigenvalue found (of the conv block for block_spectra; the largest Ritz
    value of the density's probes), and every array of the result (so that a jitted
    call computes all of it)."""
    if isinstance(out, gx.hessian.Eigenpairs):
        top = out.values[0]
    elif isinstance(out, dict):
        top = out["conv"].top.values[0]
    else:
        top = jnp.max(out.nodes)
    return top, [x for x in jax.tree.leaves(out) if isinstance(x, jax.Array)]


if __name__ == "__main__":
    convolutions()
    tools()
