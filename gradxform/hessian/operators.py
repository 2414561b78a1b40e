"""Hessian-vector products and dense Hessians of ``f(params) -> scalar``, on pytrees.

Every function takes the objective as a closure ``f(params)`` and works on any
pytree of float arrays. The spectral tools in :mod:`gradxform.hessian` flatten
the pytree once and work with :class:`FlatOperator`, a matrix-free ``matvec``
on flat vectors.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from gradxform import tree
from gradxform.second_order.directions import dense_hessian

__all__ = [
    "FlatOperator",
    "batch_mean",
    "eigh",
    "flat_operator",
    "hessian_matrix",
    "hvp",
    "linearized_hvp",
    "restrict",
]


def _check_objective(f, params):
    if not callable(f):
        raise TypeError(f"f must be a callable f(params) -> scalar; got {f!r}")
    tree.check_real_floating(params, "params")
    out = jax.eval_shape(f, params)
    if getattr(out, "shape", None) != ():
        raise ValueError(f"f must return a scalar; got shape {getattr(out, 'shape', type(out))}")


def hvp(f: Callable[[Any], jax.Array], params: Any, v: Any) -> Any:
    """``H v``, the Hessian of ``f`` at ``params`` times ``v`` (forward-over-reverse).

    ``v`` is shaped like ``params``; the result too. Costs about two gradient
    evaluations.
    """
    return jax.jvp(jax.grad(f), (params,), (v,))[1]


def linearized_hvp(f: Callable[[Any], jax.Array], params: Any) -> Callable[[Any], Any]:
    """``v -> H v`` at a fixed point, linearising ``grad f`` once and reusing it.

    Use it for many products at one point (Lanczos, trace estimation): the
    forward pass and the residuals of ``grad f`` are computed once.
    """
    _, matvec = jax.linearize(jax.grad(f), params)
    return matvec


def hessian_matrix(f: Callable[[Any], jax.Array], params: Any) -> jax.Array:
    """The dense ``(n, n)`` Hessian over the flattened params (``ravel_pytree`` order)."""
    if not _hashable(f):  # no compile cache for an unhashable callable
        return _dense_hessian.__wrapped__(f, params)
    return _dense_hessian(f, params)


@functools.partial(jax.jit, static_argnums=0)
def _dense_hessian(f, params):
    flat, unravel = ravel_pytree(params)
    return dense_hessian(lambda x: f(unravel(x)), flat)


def _hashable(f) -> bool:
    try:
        hash(f)
    except TypeError:
        return False
    return True


def on_hessian(impl, f, params, key, **options):
    """``impl(operator, key, **options)`` for a :class:`FlatOperator` or the Hessian of ``f``.

    ``impl`` is a module-level function of the spectral tools. For a hashable
    ``f`` the whole computation is one jitted function, compiled once per
    (f, parameter shapes, options) and reused at every new point: a notebook or
    a training loop that asks again at new params does not recompile.
    """
    if isinstance(f, FlatOperator):
        return impl(f, key, **options)
    if not _hashable(f):  # no compile cache for an unhashable callable
        return impl(flat_operator(f, params), key, **options)
    return _on_hessian_compiled(impl, f, params, key, tuple(sorted(options.items())))


@functools.partial(jax.jit, static_argnums=(0, 1, 4))
def _on_hessian_compiled(impl, f, params, key, options):
    return impl(flat_operator(f, params), key, **dict(options))


def eigh(f: Callable[[Any], jax.Array], params: Any) -> tuple[jax.Array, jax.Array]:
    """Eigenvalues (ascending) and eigenvectors (columns) of the dense Hessian."""
    return jnp.linalg.eigh(hessian_matrix(f, params))


class FlatOperator(NamedTuple):
    """A symmetric linear operator on flat vectors.

    Attributes:
        matvec: ``v -> H v`` on ``(n,)`` arrays of ``dtype``.
        size: ``n``.
        dtype: the dtype of the vectors.
        unravel: maps a flat vector back to the params' pytree.
    """

    matvec: Callable[[jax.Array], jax.Array]
    size: int
    dtype: Any
    unravel: Callable[[jax.Array], Any]


def flat_operator(f: Callable[[Any], jax.Array], params: Any) -> FlatOperator:
    """The Hessian of ``f`` at ``params`` as a :class:`FlatOperator` (linearised once)."""
    _check_objective(f, params)
    flat, unravel = ravel_pytree(params)
    grad_flat = jax.grad(lambda x: f(unravel(x)))
    _, matvec = jax.linearize(grad_flat, flat)
    return FlatOperator(matvec, int(flat.size), flat.dtype, unravel)


def restrict(f: Callable[[Any], jax.Array], params: Any, select: Callable[[str], bool]):
    """The objective as a function of a block of the params only (e.g. one layer).

    ``select(path)`` gets each leaf's path as a string (``"['layer1']['w']"``)
    and says whether it belongs to the block. Returns ``(f_block, block)``:
    ``block`` is a dict path -> leaf, and ``f_block(block)`` evaluates ``f``
    with those leaves replaced, so every tool here applies to the block's
    Hessian ``H_bb``.
    """
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    keys = [jax.tree_util.keystr(path) for path, _ in leaves]
    chosen = [i for i, k in enumerate(keys) if select(k)]
    if not chosen:
        raise ValueError(f"select chose no leaf; the paths are {keys}")
    block = {keys[i]: leaves[i][1] for i in chosen}

    def f_block(sub):
        values = [leaf for _, leaf in leaves]
        for i in chosen:
            values[i] = sub[keys[i]]
        return f(jax.tree.unflatten(treedef, values))

    return f_block, block


def batch_mean(loss: Callable[[Any, Any], jax.Array], batches: Any) -> Callable[[Any], jax.Array]:
    """``params -> mean_b loss(params, batches[b])`` over the leading axis of ``batches``.

    Its Hessian-vector product is the mini-batch average of the per-batch
    products, computed one batch at a time (``lax.map``), so memory does not
    grow with the number of batches.
    """

    def f(params):
        return jnp.mean(jax.lax.map(lambda batch: loss(params, batch), batches))

    return f
