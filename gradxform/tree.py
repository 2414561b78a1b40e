"""Tree arithmetic: the few pytree operations update functions are written in.

Every function maps leaf-wise over pytrees of arrays, so an update function
reads like its equation: ``tree.ema(decay, complement, moment, updates)``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "add",
    "cast",
    "check_real_floating",
    "check_structure",
    "ema",
    "full_like",
    "global_norm",
    "real_dtype",
    "safe_divide",
    "scale",
    "squared_magnitude",
    "zeros_like",
]


def real_dtype(dtype) -> np.dtype:
    """The real dtype of a (possibly complex) dtype: complex64 -> float32."""
    return jnp.finfo(dtype).dtype if jnp.issubdtype(dtype, jnp.inexact) else np.dtype(dtype)


def squared_magnitude(x: jax.Array) -> jax.Array:
    """``|x|**2`` elementwise, real-valued for complex ``x``."""
    if jnp.iscomplexobj(x):
        return (x.conj() * x).real
    return x * x


def safe_divide(num: jax.Array, den: jax.Array) -> jax.Array:
    """``num / den``, and 0 where ``den == 0`` (a coordinate that never saw a gradient).

    Computed as ``num / where(den == 0, inf, den)``: one select per leaf, and
    derivatives stay finite where ``den == 0`` (the selected ``inf`` is a
    constant). A finite ``num`` over a zero ``den`` gives a zero of ``num``'s sign.
    """
    return num / jnp.where(den == 0, jnp.asarray(jnp.inf, den.dtype), den)


def zeros_like(params: Any, dtype=None, real: bool = False) -> Any:
    """Zeros shaped like ``params``; ``dtype`` overrides, ``real`` drops complex parts."""
    return full_like(params, 0, dtype=dtype, real=real)


def full_like(params: Any, value, dtype=None, real: bool = False) -> Any:
    """``value`` broadcast to every leaf of ``params`` (see :func:`zeros_like`).

    Each leaf of the result has the sharding of its parameter, so optimizer
    state built from sharded parameters is sharded the same way.
    """

    def leaf(p):
        leaf_dtype = dtype if dtype is not None else jnp.asarray(p).dtype
        if real:
            leaf_dtype = real_dtype(leaf_dtype)
        if isinstance(p, jax.Array):  # keeps the leaf's sharding (and device)
            return jnp.full_like(p, value, dtype=leaf_dtype)
        return jnp.full(jnp.shape(p), value, dtype=leaf_dtype)

    return jax.tree.map(leaf, params)


def cast(tree: Any, like: Any) -> Any:
    """Casts each leaf of ``tree`` to the dtype of the matching leaf of ``like``."""
    return jax.tree.map(lambda x, y: x.astype(y.dtype), tree, like)


def scale(factor: jax.Array, tree: Any) -> Any:
    """``factor * tree``, the scalar cast to each leaf's real dtype first."""
    return jax.tree.map(lambda x: x * factor.astype(real_dtype(x.dtype)), tree)


def add(a: Any, b: Any) -> Any:
    """``a + b`` leaf-wise."""
    return jax.tree.map(jnp.add, a, b)


def ema(decay: jax.Array, complement: jax.Array, moment: Any, sample: Any) -> Any:
    """``complement * sample + decay * moment`` in each moment's dtype.

    ``complement`` is ``1 - decay`` computed by the caller to full precision
    (see :meth:`gradxform.hyperparams.Values.complement`).
    """

    def leaf(m, x):
        dt = m.dtype
        return (complement.astype(dt) * x.astype(dt) + decay.astype(dt) * m).astype(dt)

    return jax.tree.map(leaf, moment, sample)


def global_norm(tree: Any) -> jax.Array:
    """The l2 norm of all leaves together (complex leaves by magnitude)."""
    leaves = jax.tree.leaves(tree)
    if not leaves:
        return jnp.zeros([])
    return jnp.sqrt(sum(jnp.sum(squared_magnitude(x)) for x in leaves))


def _paths(tree: Any) -> list[str]:
    leaves_with_path, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [jax.tree_util.keystr(path) for path, _ in leaves_with_path]


def check_structure(
    reference: Any, other: Any, reference_name: str, other_name: str, *, leaves: bool = True
) -> None:
    """Raises ``ValueError`` naming the first path where two pytrees differ.

    With ``leaves`` (the default) the leaves of ``other`` must also be arrays
    with the shapes of ``reference``'s (``TypeError`` / ``ValueError`` naming
    the path); ``leaves=False`` compares the structures only (e.g. a mask of
    Python booleans).

    Runs in Python at trace time, so the error appears when a jitted step is
    first traced, with the offending path in the message.
    """
    ref_def = jax.tree.structure(reference)
    other_def = jax.tree.structure(other)
    if ref_def == other_def:
        if leaves:
            _check_leaves_match(reference, other, reference_name, other_name)
        return
    ref_paths, other_paths = _paths(reference), _paths(other)
    for i, (a, b) in enumerate(zip(ref_paths, other_paths)):
        if a != b:
            raise ValueError(
                f"{other_name} and {reference_name} have different tree structures: "
                f"leaf {i} is at {b or '<root>'} in {other_name} but at {a or '<root>'} "
                f"in {reference_name}"
            )
    if len(ref_paths) != len(other_paths):
        longer, name = (
            (ref_paths, reference_name)
            if len(ref_paths) > len(other_paths)
            else (other_paths, other_name)
        )
        first_extra = longer[min(len(ref_paths), len(other_paths))]
        raise ValueError(
            f"{other_name} and {reference_name} have different tree structures: "
            f"{other_name} has {len(other_paths)} leaves and {reference_name} has "
            f"{len(ref_paths)}; the first path only in {name} is {first_extra or '<root>'}"
        )
    raise ValueError(
        f"{other_name} and {reference_name} have the same leaf paths but different "
        f"container types: {other_name} is {other_def}, {reference_name} is {ref_def}"
    )


def _check_leaves_match(reference: Any, other: Any, reference_name: str, other_name: str) -> None:
    paths_and_refs = jax.tree_util.tree_flatten_with_path(reference)[0]
    for (path, ref), leaf in zip(paths_and_refs, jax.tree.leaves(other)):
        where = jax.tree_util.keystr(path) or "<root>"
        if not hasattr(leaf, "shape"):
            raise TypeError(
                f"{other_name} must hold arrays; the leaf at {where} is a "
                f"{type(leaf).__name__} (wrap it, e.g. jnp.asarray(leaf))"
            )
        if hasattr(ref, "shape") and ref.shape != leaf.shape:
            raise ValueError(
                f"{other_name} and {reference_name} differ in shape at {where}: "
                f"{tuple(leaf.shape)} in {other_name}, {tuple(ref.shape)} in {reference_name}"
            )


def check_params(tree: Any, name: str = "params") -> None:
    """Raises ``TypeError`` naming the path of the first leaf that cannot be optimized.

    Leaves must be arrays (``jax.Array`` or ``numpy.ndarray``) of a floating or
    complex dtype: integer and boolean arrays have no gradient step, and a
    Python scalar would come back from ``update`` as a new array, so it is
    refused with the fix in the message.
    """
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        where = jax.tree_util.keystr(path) or "<root>"
        if not isinstance(leaf, (jax.Array, np.ndarray)):
            raise TypeError(
                f"{name} must hold arrays; the leaf at {where} is a {type(leaf).__name__} "
                f"(wrap it, e.g. jnp.asarray({leaf!r}, jnp.float32))"
            )
        if not jnp.issubdtype(leaf.dtype, jnp.inexact):
            raise TypeError(
                f"{name} must hold floating-point or complex arrays; the leaf at {where} "
                f"has dtype {leaf.dtype} (convert it, e.g. jnp.asarray(leaf, jnp.float32))"
            )


def check_real_floating(tree: Any, name: str) -> None:
    """Raises unless ``tree`` holds at least one array and every leaf is real floating point.

    The error names the argument and the path of the first offending leaf.
    """
    leaves = jax.tree.leaves(tree)
    if not leaves:
        raise ValueError(f"{name} must hold at least one array; got an empty pytree")

    def dtype_of(leaf):
        return leaf.dtype if hasattr(leaf, "dtype") else jnp.result_type(leaf)

    if all(jnp.issubdtype(dtype_of(leaf), jnp.floating) for leaf in leaves):
        return  # the key paths, which cost more than the check, only name an offending leaf
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        dtype = dtype_of(leaf)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(
                f"{name} must hold real floating-point arrays; the leaf at "
                f"{jax.tree_util.keystr(path) or '<root>'} has dtype {dtype} "
                "(convert it, e.g. jnp.asarray(leaf, jnp.float32))"
            )
