"""Hessians of ``f(params) -> scalar`` as dense matrices and as operators.

Every function takes the objective as a closure ``f(params)`` and works on any
pytree of float arrays; the products themselves come from
:mod:`gradxform.curvature`. The spectral tools in :mod:`gradxform.hessian` keep
their vectors as pytrees shaped like the params (never flattened, so sharded
params stay sharded); a :class:`FlatOperator`, a matrix-free ``matvec`` on flat
vectors, is accepted in place of ``f`` and is then the pytree of one leaf.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from gradxform import _linalg, checks
from gradxform._xla_options import SolverJit
from gradxform.convolutions import canonical_convolutions
from gradxform.curvature import check_objective, dense_hessian, linearized_hvp
from gradxform.hessian import _vectors as V

__all__ = [
    "FlatOperator",
    "batch_mean",
    "eigh",
    "flat_operator",
    "hessian_matrix",
    "restrict",
]


def hessian_matrix(f: Callable[[Any], jax.Array], params: Any) -> jax.Array:
    """The dense Hessian of ``f`` at ``params`` over the flattened params.

    Built from ``n`` Hessian-vector products (:func:`gradxform.curvature.dense_hessian`);
    for a hashable ``f`` it is compiled once per ``f`` and parameter shapes.

    Args:
        f: the objective, ``f(params) -> scalar``.
        params: the point, a pytree of float arrays with ``n`` entries in all.

    Returns:
        The ``(n, n)`` Hessian, rows and columns in ``ravel_pytree`` order.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> f = lambda p: p["a"] ** 2 * p["b"]
        >>> gx.hessian.hessian_matrix(f, {"a": 1.0, "b": 3.0})
        Array([[6., 2.],
               [2., 0.]], dtype=float32)
    """
    check_objective(f, params)
    if not _hashable(f):  # no compile cache for an unhashable callable
        return _dense_hessian(f, params)
    return _dense_hessian_compiled(f, params)


def _dense_hessian(f, params):
    flat, unravel = ravel_pytree(params)
    return dense_hessian(lambda x: f(unravel(x)), flat)


_dense_hessian_compiled = jax.jit(_dense_hessian, static_argnums=0)


def _hashable(f) -> bool:
    try:
        hash(f)
    except TypeError:
        return False
    return True


def on_hessian(impl: Callable, f: Any, params: Any, key: jax.Array | None, **options: Any) -> Any:
    """``impl(operator, key, **options)`` for a :class:`FlatOperator` or the Hessian of ``f``.

    The entry point the spectral tools share; ``operator`` is a
    :class:`~gradxform.hessian._vectors.TreeOperator` on pytrees shaped like
    ``params`` (see :func:`operator_at`). For a hashable ``f`` the whole
    computation is one jitted function, compiled once per (f, parameter
    shapes and shardings, options) and reused at every new point: a notebook or
    a training loop that asks again at new params does not recompile. A
    :class:`FlatOperator` is compiled once per operator (its fields hash by
    identity: the same ``matvec`` object reuses the program). On CPU every
    convolution of the program is put in XLA's library layout, inside the tools'
    loops too (:func:`~gradxform.convolutions.canonical_convolutions`).

    Args:
        impl: a module-level function ``impl(operator, key, **options)``.
        f: the objective ``f(params) -> scalar``, a :class:`FlatOperator`, or a
            :class:`~gradxform.hessian.DatasetObjective`.
        params: the point (ignored for a :class:`FlatOperator`); leaves with a
            ``NamedSharding`` keep it, and the tools' vectors are sharded alike.
        key: the PRNG key passed on to ``impl`` (``None``: ``PRNGKey(0)``).
        **options: hashable keyword options passed on to ``impl``.

    Returns:
        What ``impl`` returns.
    """
    key = jax.random.PRNGKey(0) if key is None else key
    options_ = tuple(sorted(options.items()))
    if isinstance(f, FlatOperator):  # compiled once per operator object (its matvec's identity)
        params, shardings = None, None
    else:
        shardings = V.shardings_of(params)
    if hasattr(f, "_tree_operator_at"):  # a DatasetObjective: its passes' errors raised here
        f._check_tool(params)
        compiled = _entry(impl, streamed=not f.stacked)
        return f.run(lambda: compiled(impl, f.cache_key, params, key, options_, shardings))
    if not _hashable(f):  # no compile cache for an unhashable callable or operator
        return _on_hessian(impl, f, params, key, options_, shardings)
    return _entry(impl, streamed=False)(impl, f, params, key, options_, shardings)


def _on_hessian(impl, f, params, key, options, shardings):
    def run(params, key):
        return impl(operator_at(f, params, shardings), key, **dict(options))

    return canonical_convolutions(run)(params, key)


# The tools' programs: with XLA's default options, and with the solver options (XLA's
# elemental emitters on CPU: the driver compiles 30-40% faster, see _xla_options), which
# are taken where they cost no run time: when the program is the driver alone (a
# streamed objective's products are host callbacks) or applies the operator to one
# vector at a time. Batched products (Hutch++, SLQ's probes, block_spectra's blocks) run
# up to 15% slower with the elemental emitters (benchmarks/hessian_compile.py).
_on_hessian_compiled = jax.jit(_on_hessian, static_argnums=(0, 1, 4, 5))
_on_hessian_solver_compiled = SolverJit(_on_hessian, static_argnums=(0, 1, 4, 5))
_ONE_PRODUCT_AT_A_TIME: set[Callable] = set()


def products_one_at_a_time(impl: Callable) -> Callable:
    """Marks a tool ``impl`` that applies the operator to one vector at a time (so its
    program is compiled with the solver options); returns ``impl``."""
    _ONE_PRODUCT_AT_A_TIME.add(impl)
    return impl


def _entry(impl: Callable, streamed: bool) -> Any:
    """The compiled entry point for ``impl`` (see above)."""
    if streamed or impl in _ONE_PRODUCT_AT_A_TIME:
        return _on_hessian_solver_compiled
    return _on_hessian_compiled


def operator_at(f: Any, params: Any, shardings: Any = None) -> V.TreeOperator:
    """The curvature operator of ``f`` at ``params``, on pytrees shaped like ``params``.

    A closure gives its Hessian (``grad f`` linearised once, products on the
    pytree itself); a :class:`~gradxform.hessian.DatasetObjective` its own
    operator; a :class:`FlatOperator` is the pytree of one flat leaf, its
    results mapped back by its ``unravel``.

    Args:
        f: the objective, a :class:`FlatOperator` or a ``DatasetObjective``.
        params: the point.
        shardings: the leaves' shardings (:func:`~gradxform.hessian._vectors.shardings_of`),
            or None.

    Returns:
        The :class:`~gradxform.hessian._vectors.TreeOperator`.
    """
    if isinstance(f, FlatOperator):
        return as_tree_operator(f)
    like = V.space(params, shardings)
    if hasattr(f, "_tree_operator_at"):
        return V.operator(f._tree_operator_at(params), like)
    check_objective(f, params)
    return V.operator(linearized_hvp(f, params), like)


def as_tree_operator(op: Any) -> V.TreeOperator:
    """A :class:`FlatOperator` as the operator on its one flat leaf (others pass through)."""
    if not isinstance(op, FlatOperator):
        return op
    like = jax.ShapeDtypeStruct((op.size,), op.dtype)
    return V.TreeOperator(op.matvec, like, op.size, jnp.dtype(op.dtype), op.unravel)


def eigh(f: Callable[[Any], jax.Array], params: Any) -> tuple[jax.Array, jax.Array]:
    """The full eigendecomposition ``H = V diag(lambda) V^T`` of the dense Hessian.

    Args:
        f: the objective, ``f(params) -> scalar``.
        params: the point, a pytree of float arrays with ``n`` entries in all.

    Returns:
        ``(lambda, V)``: the ``(n,)`` eigenvalues in ascending order and the
        ``(n, n)`` orthonormal eigenvectors as columns (``ravel_pytree`` order).

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> values, vectors = gx.hessian.eigh(lambda p: p[0] ** 2 - 3 * p[1] ** 2, jnp.zeros(2))
        >>> values
        Array([-6.,  2.], dtype=float32)
    """
    return _linalg.eigh(hessian_matrix(f, params))


class FlatOperator(NamedTuple):
    """A symmetric linear operator on flat vectors; the spectral tools accept it for ``f``.

    Build one by hand to analyse any symmetric matrix-free operator, e.g. a
    Gauss-Newton product from :mod:`gradxform.curvature`.

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
    """The Hessian of ``f`` at ``params`` as a :class:`FlatOperator`.

    ``grad f`` is linearised once at ``params``
    (:func:`gradxform.curvature.linearized_hvp`), so each product costs
    about one gradient.

    Args:
        f: the objective, ``f(params) -> scalar``.
        params: the point, a pytree of float arrays.

    Returns:
        The operator ``v -> H v`` on flat vectors in ``ravel_pytree`` order.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> op = gx.hessian.flat_operator(lambda p: jnp.sum(p["w"] ** 3), {"w": jnp.ones(2)})
        >>> op.size, op.matvec(jnp.array([1.0, 2.0]))
        (2, Array([ 6., 12.], dtype=float32))
    """
    check_objective(f, params)
    flat, unravel = ravel_pytree(params)
    matvec = linearized_hvp(lambda x: f(unravel(x)), flat)
    return FlatOperator(matvec, int(flat.size), flat.dtype, unravel)


def restrict(
    f: Callable[[Any], jax.Array], params: Any, select: Callable[[str], bool]
) -> tuple[Callable[[dict[str, Any]], jax.Array], dict[str, Any]]:
    """The objective as a function of a block of the params only (e.g. one layer).

    Every tool here then applies to the block's Hessian ``H_bb``, the
    submatrix of ``H`` on the chosen leaves.

    Args:
        f: the objective, ``f(params) -> scalar``.
        params: the point, a pytree of float arrays.
        select: ``select(path) -> bool`` for each leaf's path as a string
            (``"['layer1']['w']"``): whether the leaf belongs to the block.

    Returns:
        ``(f_block, block)``: ``block`` is a dict path -> leaf of the chosen
        leaves, and ``f_block(block)`` evaluates ``f`` with those leaves
        replaced and the others held at ``params``.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> f = lambda p: p["a"] ** 2 * p["b"]
        >>> f_b, block = gx.hessian.restrict(f, {"a": 1.0, "b": 3.0}, lambda path: "a" in path)
        >>> gx.hessian.hessian_matrix(f_b, block)
        Array([[6.]], dtype=float32)
    """
    checks.callable_arg("select", select, "select(path) -> bool")
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    keys = [jax.tree_util.keystr(path) for path, _ in leaves]
    chosen = [i for i, k in enumerate(keys) if select(k)]
    if not chosen:
        checks.fail("select", f"True for at least one leaf path of {keys}", "False for all")
    block = {keys[i]: leaves[i][1] for i in chosen}

    def f_block(sub):
        values = [leaf for _, leaf in leaves]
        for i in chosen:
            values[i] = sub[keys[i]]
        return f(jax.tree.unflatten(treedef, values))

    return f_block, block


def batch_mean(loss: Callable[[Any, Any], jax.Array], batches: Any) -> Callable[[Any], jax.Array]:
    """``params -> (1/B) sum_b loss(params, batches[b])`` over the leading axis of ``batches``.

    Its Hessian-vector product is the mini-batch average of the per-batch
    products, computed one batch at a time (``lax.map``), so memory does not
    grow with the number of batches ``B``.

    Args:
        loss: ``loss(params, batch) -> scalar``.
        batches: a pytree whose leaves share a leading axis of ``B`` batches.

    Returns:
        The objective ``f(params) -> scalar`` for every tool here.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> f = gx.hessian.batch_mean(lambda w, b: jnp.sum(b * w**2), jnp.array([[1.0], [3.0]]))
        >>> gx.hessian.hvp(f, jnp.array([0.5]), jnp.array([1.0]))  # (2 + 6) / 2
        Array([4.], dtype=float32)
    """

    def f(params):
        return jnp.mean(jax.lax.map(lambda batch: loss(params, batch), batches))

    return f
