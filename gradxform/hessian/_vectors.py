"""The vectors of the spectral tools: pytrees shaped like the params, never flattened.

A vector is a pytree shaped like the params (a flat ``(n,)`` array is a pytree of
one leaf); a basis or a batch of ``k`` vectors is the same pytree with a leading
axis, ``(k, *leaf.shape)`` on every leaf. Inner products are sums of per-leaf
products in the working dtype, so on sharded params each is a local reduction and
an all-reduce of a few scalars; a basis leaf is sharded as its parameter is (its
leading axis unsharded) and no vector is gathered onto one device.

The random probes are drawn as one flat array in ``ravel_pytree`` order and cut
into the leaves, so that a pytree and its flattened form get the same probes (the
answers do not depend on the layout).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from gradxform.second_order._tree import all_finite, inner

__all__ = ["TreeOperator"]

_HIGHEST = jax.lax.Precision.HIGHEST


class TreeOperator(NamedTuple):
    """A symmetric operator on pytrees: what every spectral tool runs on.

    Attributes:
        matvec: ``v -> H v`` on pytrees shaped like ``like``.
        like: the vector space, a pytree of ``jax.ShapeDtypeStruct`` (with the
            leaves' shardings, or None).
        size: ``n``, the entries of a vector.
        dtype: the dtype of the probes and of the estimates: the leaves' common
            dtype (``ravel_pytree``'s).
        output: maps one vector to its public form (the params' pytree).
    """

    matvec: Callable[[Any], Any]
    like: Any
    size: int
    dtype: Any
    output: Callable[[Any], Any]


def space(params: Any, shardings: Any = None) -> Any:
    """The vector space of ``params``: a ``ShapeDtypeStruct`` per leaf, with its sharding."""
    leaves, treedef = jax.tree.flatten(params)
    shardings = [None] * len(leaves) if shardings is None else list(shardings)
    structs = [
        jax.ShapeDtypeStruct(np.shape(leaf), jnp.result_type(leaf), sharding=s)
        for leaf, s in zip(leaves, shardings)
    ]
    return jax.tree.unflatten(treedef, structs)


def retyped(like: Any, dtype: Any) -> Any:
    """The space ``like`` with every leaf in ``dtype`` (shapes and shardings kept)."""
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, dtype, sharding=s.sharding), like)


def operator(matvec: Callable, like: Any, output: Callable | None = None) -> TreeOperator:
    """A :class:`TreeOperator` on the space ``like`` (``output`` default: identity)."""
    return TreeOperator(matvec, like, size_of(like), dtype_of(like), output or (lambda v: v))


def size_of(like: Any) -> int:
    """The entries of a vector of the space ``like``."""
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(like))


def dtype_of(like: Any) -> Any:
    """The leaves' common dtype (``ravel_pytree``'s)."""
    return jnp.result_type(*(leaf.dtype for leaf in jax.tree.leaves(like)))


def _total(parts: Any) -> jax.Array:
    """The sum of a pytree's leaves."""
    return functools.reduce(jnp.add, jax.tree.leaves(parts))


def shardings_of(params: Any) -> tuple | None:
    """The leaves' ``NamedSharding`` (None for other leaves), or None when there is none:
    a static, hashable description for the compiled tools."""
    found = tuple(
        leaf.sharding if isinstance(getattr(leaf, "sharding", None), NamedSharding) else None
        for leaf in jax.tree.leaves(params)
    )
    return found if any(s is not None for s in found) else None


def constrain(tree: Any, like: Any, lead: int = 0) -> Any:
    """``tree`` (each leaf with ``lead`` extra leading axes) sharded as ``like``'s leaves,
    the leading axes unsharded; leaves without a ``NamedSharding`` are left alone."""

    def leaf(x, struct):
        s = struct.sharding
        if not isinstance(s, NamedSharding):
            return x
        spec = PartitionSpec(*([None] * lead), *s.spec)
        return jax.lax.with_sharding_constraint(x, NamedSharding(s.mesh, spec))

    return jax.tree.map(leaf, tree, like)


def stacked_zeros(like: Any, k: int, dtype: Any) -> Any:
    """``k`` zero vectors (a leading axis of ``k``), in ``dtype``, sharded as ``like``."""
    zeros = jax.tree.map(lambda s: jnp.zeros((k, *s.shape), dtype), like)
    return constrain(zeros, like, 1)


def draw(sample: Callable, key: jax.Array, op: TreeOperator, shape: tuple, axis: int) -> Any:
    """``sample(key, shape, op.dtype)`` with ``shape[axis] = n``, cut into the leaves.

    Each leaf gets its entries' slice of the flat axis, moved to the end and the
    rest in front: ``(n,)`` gives one vector, ``(n, m)`` and ``(m, n)`` give ``m``.
    """
    flat = jnp.moveaxis(sample(key, shape, op.dtype), axis, -1)
    leaves, treedef = jax.tree.flatten(op.like)
    starts = np.cumsum([0] + [int(np.prod(s.shape)) for s in leaves])
    cut = [
        flat[..., a:b].reshape(*flat.shape[:-1], *s.shape)
        for a, b, s in zip(starts[:-1], starts[1:], leaves)
    ]
    return constrain(jax.tree.unflatten(treedef, cut), op.like, flat.ndim - 1)


def cast(tree: Any, dtype: Any) -> Any:
    """Every leaf in ``dtype``."""
    return jax.tree.map(lambda x: x.astype(dtype), tree)


def cast_like(tree: Any, like: Any) -> Any:
    """Every leaf in the dtype of ``like``'s matching leaf."""
    return jax.tree.map(lambda x, s: x.astype(s.dtype), tree, like)


def dot(u: Any, v: Any, dtype: Any) -> jax.Array:
    """``<u, v>``: the per-leaf sums added, in ``dtype``."""
    return inner(u, v, dtype)


def norm(u: Any, dtype: Any) -> jax.Array:
    """``|u|`` in ``dtype``."""
    return jnp.sqrt(dot(u, u, dtype))


def coefficients(Q: Any, w: Any) -> jax.Array:
    """``Q w``: the ``(k,)`` inner products of ``w`` with the ``k`` rows of ``Q``."""
    parts = jax.tree.map(lambda q, x: jnp.tensordot(q, x, axes=x.ndim, precision=_HIGHEST), Q, w)
    return _total(parts)


def gram(A: Any, B: Any) -> jax.Array:
    """``A B^T``: the ``(a, b)`` inner products of the rows of ``A`` and of ``B``."""

    def leaf(x, y):
        axes = tuple(range(1, x.ndim))
        return jnp.tensordot(x, y, axes=(axes, axes), precision=_HIGHEST)

    return _total(jax.tree.map(leaf, A, B))


def combine(c: jax.Array, Q: Any) -> Any:
    """``c^T Q``: the combination ``sum_i c_i q_i`` for ``c`` of shape ``(k,)``, or the
    ``m`` combinations (a leading axis) for ``c`` of shape ``(k, m)``."""
    return jax.tree.map(lambda q: jnp.tensordot(c, q, axes=(0, 0), precision=_HIGHEST), Q)


def row_dots(A: Any, B: Any, dtype: Any) -> jax.Array:
    """The ``(k,)`` inner products of matching rows of ``A`` and ``B``, in ``dtype``."""

    def leaf(x, y):
        return jnp.sum((x.astype(dtype) * y.astype(dtype)).reshape(x.shape[0], -1), axis=1)

    return _total(jax.tree.map(leaf, A, B))


def project_out(Q: Any, w: Any) -> Any:
    """``w - Q^T (Q w)``: ``w`` off the span of ``Q``'s orthonormal (or zero) rows."""
    return sub(w, combine(coefficients(Q, w), Q))


def sub(a: Any, b: Any) -> Any:
    """``a - b`` leaf by leaf."""
    return jax.tree.map(jnp.subtract, a, b)


def scale(t: jax.Array, v: Any) -> Any:
    """``t v`` leaf by leaf."""
    return jax.tree.map(lambda x: t * x, v)


def row(Q: Any, j: Any) -> Any:
    """Row ``j`` of a stack."""
    return jax.tree.map(lambda q: q[j], Q)


def set_row(Q: Any, j: Any, v: Any) -> Any:
    """The stack with row ``j`` replaced by ``v``."""
    return jax.tree.map(lambda q, x: q.at[j].set(x), Q, v)


def take(Q: Any, index: Any) -> Any:
    """The rows ``index`` (an integer array) of a stack."""
    return jax.tree.map(lambda q: q[index], Q)


def head(Q: Any, s: int) -> Any:
    """The leading ``s`` rows of a stack."""
    return jax.tree.map(lambda q: q[:s], Q)


def where_rows(keep: jax.Array, Q: Any, other: Any = 0) -> Any:
    """The rows of ``Q`` where ``keep`` (one flag per row), else ``other``."""
    return jax.tree.map(lambda q: jnp.where(keep.reshape(-1, *[1] * (q.ndim - 1)), q, other), Q)


def where(flag: jax.Array, a: Any, b: Any) -> Any:
    """``a`` where the scalar ``flag`` holds, else ``b``."""
    return jax.tree.map(lambda x, y: jnp.where(flag, x, y), a, b)


def concatenate(a: Any, b: Any) -> Any:
    """Two stacks one after the other."""
    return jax.tree.map(lambda x, y: jnp.concatenate([x, y]), a, b)


def finite(tree: Any) -> jax.Array:
    """Whether every entry is finite."""
    return all_finite(tree)


def leading(Q: Any) -> int:
    """The stack's number of rows."""
    return int(jax.tree.leaves(Q)[0].shape[0])


def stacked_output(op: TreeOperator, V: Any) -> Any:
    """A stack of vectors in their public form, one per row."""
    return jax.vmap(op.output)(V)
