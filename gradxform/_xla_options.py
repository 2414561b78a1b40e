"""Compiler options for gradxform's own solver programs: faster compiles on CPU.

The Hessian tools compile one program per objective, parameter shapes and
options: a Lanczos driver (restarts, Ritz checks, bisection, small QR and
tridiagonal solves) around the objective's products. On XLA's CPU backend the
driver compiles 30-40% faster with the elemental emitters than with the MLIR
fusion emitters (the default). Where the products are one vector at a time
(eigenpairs) or not in the program at all (a streamed objective's host
callbacks) it runs as fast; batched products (Hutch++, SLQ) ran up to 15% slower,
so those programs keep XLA's defaults (``gradxform.hessian.operators``).
Measured on a 2-core x86 VM: ``benchmarks/hessian_compile.py``, results in
docs/results/hessian_scale_cpu.md (tenth session). The option concerns the CPU
backend only; an XLA that does not know it gets the default emitters.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

__all__ = ["SolverJit", "solver_options"]

_SOLVER_OPTIONS = {"xla_cpu_use_fusion_emitters": False}


@functools.cache
def solver_options() -> dict[str, Any]:
    """The solver programs' compiler options, if this XLA knows them, else ``{}``.

    Checked once per process by compiling an identity with them.
    """
    try:
        jax.jit(lambda x: x, compiler_options=_SOLVER_OPTIONS).lower(np.float32(0)).compile()
    except Exception:  # an XLA without the option: the default emitters
        return {}
    return dict(_SOLVER_OPTIONS)


class SolverJit:
    """``jax.jit(fun, **kwargs)``, compiled with :func:`solver_options` when called at top level.

    JAX takes compiler options on a top-level ``jit`` only: called inside another
    trace (a ``jit``, ``vmap`` or ``grad`` around a Hessian tool), the call is a
    plain ``jax.jit(fun, **kwargs)``, part of the caller's program. The jitted
    functions are built at their first use (importing gradxform starts no backend);
    attributes (``lower``, ``_cache_size``, ...) are the top-level one's.

    Args:
        fun: the function to jit.
        **kwargs: ``jax.jit``'s other arguments (``static_argnums``, ...).
    """

    def __init__(self, fun: Callable, **kwargs: Any):
        self._fun, self._kwargs = fun, kwargs
        self._top: Any = None
        self._nested: Any = None
        functools.update_wrapper(self, fun)

    def _get(self) -> Any:
        if self._top is None:  # without the options it is the plain jit: one program cache
            options = solver_options()
            if options:
                self._top = jax.jit(self._fun, compiler_options=options, **self._kwargs)
            else:
                self._top = self._plain()
        return self._top

    def _plain(self) -> Any:
        if self._nested is None:
            self._nested = jax.jit(self._fun, **self._kwargs)
        return self._nested

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves((args, kwargs))):
            return self._plain()(*args, **kwargs)
        try:
            return self._get()(*args, **kwargs)
        except ValueError as err:  # nested in a trace through a closure only
            if "compiler_options" not in str(err):
                raise
        return self._plain()(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self._get(), name)
