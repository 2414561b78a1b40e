"""Dense decompositions that a ``vmap`` batches into a loop on CPU, never a hang.

On CPU, jaxlib's LAPACK kernels (``eigh``, Cholesky, QR, SVD, LU) spread a
batch of matrices over XLA's CPU thread pool and wait for it. When two such
batched calls run at the same time, each from a pool thread (conditionals and
loops of one program, e.g. the branches of several leaves or the iterations of a
``vmap``-ed solver), every thread can end up waiting for work queued behind the
other: the program hangs. Measured on 2 cores (both pool threads found in
``ParallelBatchMap`` of ``syevd``/``potrf``): ``gx.minimize(method="newton")``
``vmap``-ed over 15 starts, and SOAP ``vmap``-ed over 15 models, never returned
(tests/test_linalg.py, tests/test_kronecker.py).

The functions here are the decompositions of one matrix. Called on one matrix
they are the ``jnp.linalg`` call itself; under ``vmap`` on CPU they become a loop
of one-matrix calls (``jax.custom_batching.sequential_vmap``), which gives the
same matrices and does not hang; on GPU and TPU a ``vmap`` stays one batched
call (``jax.lax.platform_dependent``). Derivatives, forward and reverse, are the
``jnp`` call's own (a ``custom_jvp`` whose tangents come from the plain call: in
a differentiated ``vmap`` on CPU that part is still one batched call).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["batched", "cholesky", "eigh", "one_matrix_at_a_time_on_cpu", "qr_basis", "solve", "svd"]


def one_matrix_at_a_time_on_cpu(decompose: Callable[..., Any]) -> Callable[..., Any]:
    """``decompose`` (of unbatched arrays), batched by ``vmap`` into a loop on CPU.

    Args:
        decompose: a function of one matrix (and other unbatched arrays).

    Returns:
        The same function, differentiable in both modes by ``decompose``'s own
        rules; a ``vmap`` of it is a loop of calls on CPU and one batched call
        elsewhere.
    """
    sequential = jax.custom_batching.sequential_vmap(decompose)

    @jax.custom_jvp
    def call(*args: Any) -> Any:
        return jax.lax.platform_dependent(*args, cpu=sequential, default=decompose)

    @call.defjvp
    def call_jvp(primals: tuple, tangents: tuple) -> tuple[Any, Any]:
        # the tangents by ``decompose``'s own rule: a loop of custom_vmap calls has no
        # transpose, so reverse mode (``jax.grad`` of an eigenvalue) needs this
        return call(*primals), jax.jvp(decompose, primals, tangents)[1]

    return call


def batched(decompose: Callable[[jax.Array], Any], m: jax.Array) -> Any:
    """``decompose`` of every ``(d, d)`` matrix of ``m`` (shape ``(..., d, d)``).

    Args:
        decompose: one of this module's functions (of one matrix).
        m: the matrices.

    Returns:
        The results, with ``m``'s leading axes.
    """
    flat = m.reshape(-1, *m.shape[-2:])
    out = jax.vmap(decompose)(flat)
    return jax.tree.map(lambda o: o.reshape(*m.shape[:-2], *o.shape[1:]), out)


eigh = one_matrix_at_a_time_on_cpu(lambda m: jnp.linalg.eigh(m, symmetrize_input=True))
eigh.__doc__ = "``jnp.linalg.eigh(m, symmetrize_input=True)`` of one matrix (see the module)."
cholesky = one_matrix_at_a_time_on_cpu(lambda m: jax.lax.linalg.cholesky(m, symmetrize_input=False))
cholesky.__doc__ = "The lower Cholesky factor of one symmetric matrix, NaN if not PD."
qr_basis = one_matrix_at_a_time_on_cpu(lambda m: jnp.linalg.qr(m)[0])
qr_basis.__doc__ = "``Q`` of the reduced QR of one matrix (see the module)."
svd = one_matrix_at_a_time_on_cpu(lambda m: jnp.linalg.svd(m, full_matrices=False))
svd.__doc__ = "The reduced SVD ``(u, s, vt)`` of one matrix (see the module)."
solve = one_matrix_at_a_time_on_cpu(jnp.linalg.solve)
solve.__doc__ = "``jnp.linalg.solve(a, b)`` for one matrix ``a`` (see the module)."
