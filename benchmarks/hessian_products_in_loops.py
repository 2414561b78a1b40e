"""Convolution gradients inside XLA CPU loops, and what the rewrite saves the loops.

On XLA's CPU backend a convolution's kernel gradient inside a ``while`` loop
(``fori_loop``, ``scan``, every Lanczos driver, every solver) compiles to a
generic loop (``dim_labels=f01b_i01o->01bf``): XLA's pass that puts
convolutions in its library layout visits only the program's top level.
``gx.canonical_convolutions`` does that rewrite in JAX, in loops too, and the
Hessian tools and ``gx.minimize`` apply it. This script measures:

1. twelve kernel- and input-gradient convolutions (512 images of 8x8x8), as
   twelve programs, unrolled in one program, in a ``fori_loop``, and in the
   ``fori_loop`` rewritten;
2. the Hessian tools and ``gx.minimize`` on the 5,768-parameter CNN of
   ``hessian_compile.py`` (a closure), as XLA compiles them without the
   rewrite (switched off here), with it (gradxform's default), and for the
   tools with the objective as ``gx.hessian.dataset_mean`` over a one-element
   list of batches (its products are their own programs, called back from the
   loop).

Run: ``python benchmarks/hessian_products_in_loops.py`` (a few minutes on 2 cores).
"""

from __future__ import annotations

import contextlib
import math
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import gradxform as gx
from gradxform.hessian import operators
from gradxform.second_order import minimize as minimize_module

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
        "kernel gradient": lambda x, w: jax.grad(lambda w: jnp.sum(jnp.tanh(conv(x, w))))(w),
        "input gradient": lambda x, w: jax.grad(lambda x: jnp.sum(jnp.tanh(conv(x, w))))(x),
    }
    print("| 12 convolutions | separate programs | unrolled | fori_loop | fori_loop, rewritten |")
    print("|---|---:|---:|---:|---:|")
    for name, op in cases.items():
        one = jax.jit(op)

        def body(i, v, op=op):
            return v + 1e-3 * jnp.sum(op(v, w))

        def looped(a, b=body):
            return jax.lax.fori_loop(0, 12, b, a)

        separate = seconds(lambda a, one=one: [one(a, w) for _ in range(12)], x)
        unrolled = seconds(
            jax.jit(lambda a, b=body: jax.lax.fori_loop(0, 12, b, a, unroll=True)), x
        )
        plain = seconds(jax.jit(looped), x)
        rewritten = seconds(jax.jit(gx.canonical_convolutions(looped)), x)
        print(
            f"| {name} | {separate:.4f} | {unrolled:.4f} | {plain:.4f} | {rewritten:.4f} |",
            flush=True,
        )


def tools() -> None:
    f, params, blocks = problem("cnn")
    streamed = gx.hessian.dataset_mean(lambda p, _: f(p), [np.zeros((1, 1))])
    calls = {
        "eigenpairs (k=5)": lambda f, p: gx.hessian.hessian_eigenpairs(f, p, k=5, max_matvecs=80),
        "spectral_density": lambda f, p: gx.hessian.spectral_density(f, p),
        "block_spectra": lambda f, p: gx.hessian.block_spectra(f, p, blocks),
        "minimize newton-cg (10 it.)": lambda f, p: solve(f, p, "newton-cg"),
        "minimize lbfgs (30 it.)": lambda f, p: solve(f, p, "lbfgs"),
    }
    ways = ("not rewritten", "rewritten", "one-batch list")
    print()
    print("| CNN | " + " | ".join(f"{w}: first | again" for w in ways) + " | value |")
    print("|---|" + "---:|---:|" * len(ways) + "---|")
    for name, call in calls.items():
        row, values = [], []
        for way in ways:
            if way == "one-batch list" and name.startswith("minimize"):
                row += [math.nan, math.nan]  # minimize takes a function, not a data set
                continue
            objective = streamed if way == "one-batch list" else f
            with rewrite(way != "not rewritten"):
                times = []
                for _ in range(2):
                    start = time.perf_counter()
                    top, _ = jax.block_until_ready(top_value(call(objective, params)))
                    times.append(time.perf_counter() - start)
            row += times
            values.append(f"{float(top):.6g}")
        cells = " | ".join(f"{t:.2f}" for t in row)
        print(f"| {name} | {cells} | {' / '.join(values)} |", flush=True)


def solve(f, p, method: str) -> gx.Solution:
    maxiter = 10 if method == "newton-cg" else 30
    return gx.minimize(f, p, method=method, maxiter=maxiter, tol=1e-12)


@contextlib.contextmanager
def rewrite(on: bool):
    """The tools' and the solver's rewrite on (their default) or switched off; the
    programs compiled while it is off are dropped when it is back on."""
    if on:
        yield
        return
    saved = operators.canonical_convolutions, minimize_module.canonical_convolutions
    operators.canonical_convolutions = minimize_module.canonical_convolutions = _unchanged
    jax.clear_caches()
    try:
        yield
    finally:
        operators.canonical_convolutions, minimize_module.canonical_convolutions = saved
        jax.clear_caches()


def _unchanged(fn):
    return fn


def top_value(out) -> tuple:
    """The top eigenvalue found (of the conv block for block_spectra; the largest Ritz
    value of the density's probes; a solution's final loss), and every array of the result (so that a jitted
    call computes all of it)."""
    if isinstance(out, gx.hessian.Eigenpairs):
        top = out.values[0]
    elif isinstance(out, gx.Solution):
        top = out.value
    elif isinstance(out, dict):
        top = out["conv"].top.values[0]
    else:
        top = jnp.max(out.nodes)
    return top, [x for x in jax.tree.leaves(out) if isinstance(x, jax.Array)]


if __name__ == "__main__":
    convolutions()
    tools()
