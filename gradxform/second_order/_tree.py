"""Pytree arithmetic of the second-order methods: real inner products, steps and stacks.

Every function works leaf by leaf, so the methods run on any pytree of
parameters (a flat vector is a pytree of one leaf) and never concatenate
leaves, which keeps sharded parameters sharded. Complex parameters are
vectors of ``R^2n``: inner products are ``Re<a, b>`` and a gradient is the
conjugate of what ``jax.grad`` returns (optax's convention for complex updates).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from gradxform import checks
from gradxform.tree import real_dtype


def scalar_dtype(params: Any) -> np.dtype:
    """The dtype of step sizes, values and slopes: float32 or wider, the widest real leaf."""
    return jnp.result_type(
        jnp.float32, *(real_dtype(leaf.dtype) for leaf in jax.tree.leaves(params))
    )


def inner(a: Any, b: Any, dtype) -> jax.Array:
    """``Re<a, b>`` summed over the leaves, in ``dtype``."""

    def leaf(x, y):
        if jnp.iscomplexobj(x) or jnp.iscomplexobj(y):
            return jnp.sum((jnp.conj(x) * y).real.astype(dtype))
        return jnp.sum(x.astype(dtype) * y.astype(dtype))

    return functools.reduce(jnp.add, jax.tree.leaves(jax.tree.map(leaf, a, b)))


def norm(a: Any, dtype) -> jax.Array:
    """The 2-norm of all leaves together, in ``dtype``."""
    return jnp.sqrt(inner(a, a, dtype))


def axpy(t: jax.Array, d: Any, x: Any) -> Any:
    """``x + t d`` leaf by leaf, each leaf in ``x``'s dtype."""
    return jax.tree.map(lambda p, v: (p + t * v).astype(p.dtype), x, d)


def scale(t: jax.Array, d: Any) -> Any:
    """``t d`` leaf by leaf, each leaf in ``d``'s dtype."""
    return jax.tree.map(lambda v: (t * v).astype(v.dtype), d)


def sub(a: Any, b: Any) -> Any:
    """``a - b`` leaf by leaf."""
    return jax.tree.map(jnp.subtract, a, b)


def neg(a: Any) -> Any:
    """``-a`` leaf by leaf."""
    return jax.tree.map(jnp.negative, a)


def select(condition: jax.Array, a: Any, b: Any) -> Any:
    """``a`` where ``condition`` holds, else ``b``, for two pytrees of one structure."""
    return jax.tree.map(lambda x, y: jnp.where(condition, x, y), a, b)


def all_finite(a: Any) -> jax.Array:
    """True if every entry of every leaf is finite."""
    return functools.reduce(jnp.logical_and, [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(a)])


def cast(a: Any, like: Any) -> Any:
    """``a`` with each leaf cast to the dtype of the matching leaf of ``like``."""
    return jax.tree.map(lambda x, y: jnp.asarray(x).astype(y.dtype), a, like)


def conj(a: Any) -> Any:
    """Complex leaves conjugated; real leaves as they are (no operation)."""
    return jax.tree.map(lambda x: jnp.conj(x) if jnp.iscomplexobj(x) else x, a)


def zeros(params: Any, dtype=None) -> Any:
    """Zeros shaped like ``params`` (arrays or ``jax.ShapeDtypeStruct``), keeping shardings."""

    def leaf(p):
        leaf_dtype = p.dtype if dtype is None else dtype
        if isinstance(p, jax.ShapeDtypeStruct):
            return jnp.zeros(p.shape, leaf_dtype, device=p.sharding)
        return jnp.zeros_like(p, dtype=leaf_dtype)

    return jax.tree.map(leaf, params)


def stacked_zeros(params: Any, size: int, dtype=None) -> Any:
    """Zeros with a leading axis of ``size`` on every leaf (sharded as the leaf is)."""
    return jax.tree.map(lambda z: jnp.stack([z] * size), zeros(params, dtype))


def dtype_proxy(params: Any) -> Any:
    """A scalar zero per leaf, in the leaf's dtype: what a dtype-only consumer needs."""
    return jax.tree.map(lambda p: jnp.zeros((), p.dtype), params)


def flat_view(x: Any) -> tuple[jax.Array, Callable[[jax.Array], Any]]:
    """``(flat vector, unflatten)``; a lone 1-D leaf is its own flat view."""
    leaves = jax.tree.leaves(x)
    if len(leaves) == 1 and jnp.ndim(leaves[0]) == 1:
        treedef = jax.tree.structure(x)
        return leaves[0], lambda v: jax.tree.unflatten(treedef, [v])
    return ravel_pytree(x)


def size(params: Any) -> int:
    """The number of scalars in ``params`` (arrays or ``jax.ShapeDtypeStruct``)."""
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(params))


def value_and_grad(objective: Callable[[Any], jax.Array], dtype) -> Callable:
    """``x -> (f(x) in dtype, gradient as a vector of the params' space)``.

    The gradient is ``jax.grad``'s, conjugated on complex leaves, so that
    ``f(x + t d) ~ f(x) + t Re<g, d>``.
    """
    vg = jax.value_and_grad(objective)

    def evaluate(x):
        f, g = vg(x)
        return jnp.asarray(f).astype(dtype), conj(g)

    return evaluate


def _keyword_names(fn: Callable) -> frozenset[str]:
    try:
        parameters = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return frozenset()
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return frozenset(p.name for p in parameters[1:] if p.kind in kinds)


def objective(value_fn: Any, extra: dict[str, Any], owner: str) -> Callable[[Any], jax.Array]:
    """``value_fn`` with the extra ``update`` arguments its signature names bound to it.

    A data batch passed as ``tx.update(..., value_fn=loss, batch=b)`` reaches
    ``loss(params, batch=b)`` at every trial point, as optax's line searches do.

    Raises:
        ValueError: if ``value_fn`` was not passed to ``update``.
    """
    if value_fn is None:
        checks.fail(
            f"{owner}: value_fn",
            "passed to update, as in tx.update(grads, state, params, value=..., grad=..., "
            "value_fn=f)",
            value_fn,
        )
    checks.callable_arg("value_fn", value_fn, "value_fn(params, ...) -> scalar")
    names = _keyword_names(value_fn)
    bound = {k: v for k, v in extra.items() if k in names}
    return functools.partial(value_fn, **bound) if bound else value_fn


def evaluation(
    value_fn: Any, extra: dict[str, Any], params: Any, owner: str
) -> tuple[Callable, Callable, Any]:
    """What an ``update`` evaluates: ``(objective, value_and_grad, scalar dtype)``.

    Raises:
        ValueError: if ``value_fn`` or ``params`` was not passed to ``update``.
    """
    bound = objective(value_fn, extra, owner)
    if params is None:
        checks.fail(f"{owner}: params", "passed to update", params)
    dtype = scalar_dtype(params)
    return bound, value_and_grad(bound, dtype), dtype


def start_point(evaluate: Callable, params: Any, value: Any, grad: Any, dtype) -> tuple[Any, Any]:
    """``(f(params), gradient)`` from the ``value`` and ``grad`` given to ``update``.

    What is missing is computed with ``evaluate`` (one evaluation); a given
    ``grad`` is ``jax.grad``'s and is conjugated like ``evaluate``'s.
    """
    if value is None or grad is None:
        f, g = evaluate(params)
        value = f if value is None else value
        grad = g if grad is None else conj(grad)
    else:
        grad = conj(grad)
    return jnp.asarray(value).astype(dtype), cast(grad, params)


def compile_cache(compile_fn: Callable, maxsize: int = 64) -> Callable:
    """``compile_fn(fun, settings)`` memoised on ``(fun, settings)`` where ``fun`` is hashable.

    A solver driver compiles once per objective (its identity) and settings; an objective
    that cannot key a cache (a closure over arrays, say) compiles afresh each call.
    """
    cached = functools.lru_cache(maxsize=maxsize)(compile_fn)

    def solver(fun: Callable, settings: Any) -> Callable:
        try:
            hash(fun)
        except TypeError:
            return compile_fn(fun, settings)
        return cached(fun, settings)

    return solver
