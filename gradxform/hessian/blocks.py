"""Per-block spectra: top eigenpairs, trace and density of every block of the params.

:func:`block_spectra` labels the parameter leaves by glob patterns on their
paths (the patterns of :func:`gradxform.partition`: ``"conv*"``,
``"layer1/*"``, ``"*"``), and analyses each block's diagonal block ``H_bb`` of
the curvature (the Hessian, or any kind a
:class:`~gradxform.hessian.DatasetObjective` names) in one compiled call. All
blocks run in lockstep, their products batched into one product per step (one
data pass per step for a streamed objective, whatever the number of blocks),
on the masked operators ``M_b = P_b H P_b`` (``P_b`` the block's 0/1 mask),
whose spectra are ``H_bb``'s plus zeros that the masked start vectors and
probes never see. The top eigenpairs are :func:`~gradxform.hessian.eigenpairs`
``vmap``-ped over the masks: a block whose search has ended keeps its result
while the others go on, so the passes are those of the slowest block, not the
sum over blocks. The price is memory: each block's Lanczos basis has the
params' full shape (zeros off the block), ``blocks x max_matvecs x n``
entries in all.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradxform import checks
from gradxform.hessian import _vectors as V
from gradxform.hessian.estimators import (
    SpectralDensity,
    TraceEstimate,
    _spectral_density,
    _trace,
)
from gradxform.hessian.extreme import Eigenpairs, _eigenpairs, _spec
from gradxform.hessian.operators import on_hessian
from gradxform.transforms.partition import _glob_match, _path_string

__all__ = ["BlockSpectrum", "block_spectra"]


class BlockSpectrum(NamedTuple):
    """The spectrum of one block ``H_bb`` of the curvature.

    Attributes:
        paths: the leaf paths in the block (``/``-joined keys, as in :func:`gradxform.partition`).
        size: the block's number of entries ``n_b``.
        top: its top eigenpairs (:class:`~gradxform.hessian.Eigenpairs`); the
            vectors are dicts path -> array shaped like the leaf, with a leading axis.
        trace: its trace (:class:`~gradxform.hessian.TraceEstimate`, Hutch++).
        density: its spectral density (:class:`~gradxform.hessian.SpectralDensity`).
    """

    paths: tuple[str, ...]
    size: int
    top: Eigenpairs
    trace: TraceEstimate
    density: SpectralDensity


def _block_leaves(blocks: Any, params: Any) -> dict[str, list[int]]:
    """Label -> leaf indices (``jax.tree.leaves`` order); a leaf goes to its first pattern."""
    if not isinstance(blocks, Mapping) or not blocks or not all(isinstance(k, str) for k in blocks):
        checks.fail("blocks", "a non-empty dict of glob patterns -> block labels", blocks)
    paths = [_path_string(path) for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    claimed: dict[int, str] = {}
    out: dict[str, list[int]] = {}
    for pattern, label in blocks.items():
        mine = [i for i, p in enumerate(paths) if i not in claimed and _glob_match(pattern, p)]
        if not mine:
            what = "a pattern matching a parameter leaf not matched by an earlier pattern"
            checks.fail(f"blocks pattern {pattern!r}", f"{what} (leaves: {paths})", "no match")
        claimed.update({i: pattern for i in mine})
        out.setdefault(str(label), []).extend(mine)
    return out


def _leaf_groups(groups: dict[str, list[int]]) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """Label -> its leaf indices, sorted: a static (hashable) description of the blocks."""
    return tuple((label, tuple(sorted(leaves))) for label, leaves in groups.items())


def _block_sizes(leaves: list, groups: tuple[tuple[str, tuple[int, ...]], ...]) -> list[int]:
    """Each block's number of entries ``n_b``, from the leaves (arrays or shape structs)."""
    return [sum(int(np.prod(np.shape(leaves[i]))) for i in chosen) for _, chosen in groups]


def _masked(op: V.TreeOperator, mask: Any) -> V.TreeOperator:
    """``P H P`` for ``mask``, one 0/1 scalar per leaf (a pytree like the vectors)."""

    def matvec(v):
        return jax.tree.map(jnp.multiply, mask, op.matvec(jax.tree.map(jnp.multiply, mask, v)))

    return op._replace(matvec=matvec)


def _blocks(op: V.TreeOperator, key, *, groups, k, max_matvecs, trace_matvecs, probes, steps):
    """Every block's top pairs, trace and density, all blocks in lockstep (``vmap`` over
    their masks, so each step's products are one batched product)."""
    treedef = jax.tree.structure(op.like)
    rows = np.zeros((len(groups), len(jax.tree.leaves(op.like))), op.dtype)
    for row, (_, chosen) in zip(rows, groups):
        row[list(chosen)] = 1
    sizes = np.array(_block_sizes(jax.tree.leaves(op.like), groups), np.int32)
    spec, work = _spec(op, k, "top", None, max_matvecs, False)

    def mask_of(row):
        return jax.tree.unflatten(treedef, list(row))

    def top(m, n):
        return _eigenpairs(_masked(op, mask_of(m)), key, spec._replace(n=n), work, mask_of(m))

    tops = jax.vmap(top)(jnp.asarray(rows), jnp.asarray(sizes))
    traces = jax.vmap(
        lambda m: _trace(_masked(op, mask_of(m)), key, num_matvecs=trace_matvecs, method="hutch++")
    )(jnp.asarray(rows))
    options = dict(num_probes=probes, steps=steps, grid_size=200, kernel_width=None)
    densities = jax.vmap(
        lambda m: _spectral_density(_masked(op, mask_of(m)), key, mask=mask_of(m), **options)
    )(jnp.asarray(rows))
    return tops, traces, densities


def block_spectra(
    f: Any,
    params: Any,
    blocks: Mapping[str, str],
    *,
    k: int = 1,
    max_matvecs: int = 60,
    trace_matvecs: int = 30,
    density_probes: int = 2,
    density_steps: int = 20,
    key: jax.Array | None = None,
) -> dict[str, BlockSpectrum]:
    """Top-k eigenpairs, trace and spectral density of every block ``H_bb``, in one call.

    Each leaf goes to the block of the first pattern its path matches (leaves
    no pattern matches are left out); several patterns may name one block.
    The estimates are those of :func:`~gradxform.hessian.eigenpairs`,
    :func:`~gradxform.hessian.trace` (Hutch++) and
    :func:`~gradxform.hessian.spectral_density` on ``H_bb``; the traces and
    densities of all blocks share their products (see the module docstring).

    Args:
        f: the objective ``f(params) -> scalar`` or a
            :class:`~gradxform.hessian.DatasetObjective`.
        params: the point, a pytree of float arrays.
        blocks: glob pattern -> block label, e.g. ``{"conv*": "conv", "*": "rest"}``.
        k: top pairs per block (at most the block's size).
        max_matvecs: the product budget of each block's top pairs.
        trace_matvecs: Hutch++ products per block (at least 3).
        density_probes, density_steps: SLQ probes and Lanczos steps per block.
        key: PRNG key (default ``PRNGKey(0)``).

    Returns:
        A dict label -> :class:`BlockSpectrum`, in the order of ``blocks``.

    Raises:
        ValueError: if ``blocks`` is empty or a pattern matches no leaf left by
            the earlier patterns.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> f = lambda p: jnp.sum(p["a"] ** 2) + 3 * jnp.sum(p["b"] ** 2)  # H = diag(2, 2, 6)
        >>> out = gx.hessian.block_spectra(f, {"a": jnp.ones(2), "b": jnp.ones(1)},
        ...                                {"a": "a", "b": "b"}, trace_matvecs=6)
        >>> top = [round(float(out[b].top.values[0]), 4) for b in out]
        >>> top, round(float(out["a"].trace.estimate), 4)
        ([2.0, 6.0], 4.0)
    """
    k = checks.integer("k", k, minimum=1)
    max_matvecs = checks.integer("max_matvecs", max_matvecs, minimum=1)
    trace_matvecs = checks.integer("trace_matvecs", trace_matvecs, minimum=3)
    probes = checks.integer("density_probes", density_probes, minimum=1)
    steps = checks.integer("density_steps", density_steps, minimum=1)
    groups = _block_leaves(blocks, params)
    leaf_groups = _leaf_groups(groups)
    options = dict(k=k, max_matvecs=max_matvecs, trace_matvecs=trace_matvecs)
    top, traces, densities = on_hessian(
        _blocks, f, params, key, groups=leaf_groups, probes=probes, steps=steps, **options
    )
    return _assemble(f, params, leaf_groups, top, traces, densities)


_PER_PAIR = ("values", "vectors", "residuals", "converged", "tol")


def _head(batched: Any, count: int) -> Any:
    return jax.tree.map(lambda x: x[:count], batched)


def _row(batched: Any, b: int) -> Any:
    return jax.tree.map(lambda x: x[b], batched)


def _assemble(f, params, groups, top, traces, densities) -> dict[str, BlockSpectrum]:
    """The per-block records, vectors as dicts path -> leaf-shaped arrays."""
    with_paths = jax.tree_util.tree_flatten_with_path(params)[0]
    paths = [_path_string(path) for path, _ in with_paths]
    sizes = _block_sizes([leaf for _, leaf in with_paths], groups)
    bad = getattr(getattr(f, "report", None), "nonfinite_batch", None)
    out = {}
    for b, ((label, chosen), size) in enumerate(zip(groups, sizes)):
        kept = min(int(top.values.shape[1]), size)  # a block smaller than k has fewer pairs
        pairs = _row(top._replace(nonfinite_batch=None), b)
        pairs = pairs._replace(**{f: _head(getattr(pairs, f), kept) for f in _PER_PAIR})
        leaves = jax.tree.leaves(pairs.vectors)
        record = BlockSpectrum(
            paths=tuple(paths[i] for i in chosen),
            size=size,
            top=pairs._replace(vectors={paths[i]: leaves[i] for i in chosen}),
            trace=_row(traces, b),
            density=_row(densities, b),
        )
        if bad is not None:
            false = jnp.asarray(False)
            record = record._replace(
                top=record.top._replace(finite=false, nonfinite_batch=bad),
                trace=record.trace._replace(finite=false, nonfinite_batch=bad),
                density=record.density._replace(finite=false, nonfinite_batch=bad),
            )
        out[label] = record
    return out
