"""Curvature products: the one layer that both second-order solvers and Hessian tools use.

Every function takes the objective as a closure ``f(params) -> scalar`` and
works on any pytree of float arrays (or a flat vector, which is a pytree of
one leaf). Nothing here knows about optimizers or spectra; ``second_order``
and ``hessian`` build on these products and never on each other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from gradxform import checks, tree

__all__ = [
    "check_objective",
    "dense_hessian",
    "hvp",
    "linearized_hvp",
]


def check_objective(f: Any, params: Any, name: str = "f") -> None:
    """Raises unless ``f`` is callable and ``f(params)`` is a real floating scalar.

    Traces ``f`` abstractly (``jax.eval_shape``); nothing is computed.

    Raises:
        TypeError: if ``f`` is not callable or a leaf of ``params`` is not a real float.
        ValueError: if ``f(params)`` is not a real floating scalar.
    """
    checks.callable_arg(name, f, "f(params) -> scalar")
    tree.check_real_floating(params, "params")
    out = jax.eval_shape(f, params)
    shape, dtype = getattr(out, "shape", None), getattr(out, "dtype", None)
    if shape != () or dtype is None or not jnp.issubdtype(dtype, jnp.floating):
        checks.fail(f"{name}(params)", "a real floating scalar", f"{shape} {dtype}")


def hvp(f: Callable[[Any], jax.Array], params: Any, v: Any) -> Any:
    """``H v``: the Hessian of ``f`` at ``params`` times ``v`` (forward-over-reverse).

    Args:
        f: the objective, ``f(params) -> scalar``.
        params: the point, a pytree of float arrays.
        v: the vector, shaped like ``params``.

    Returns:
        ``H v``, shaped like ``params``; about the cost of two gradients.
    """
    return jax.jvp(jax.grad(f), (params,), (v,))[1]


def linearized_hvp(f: Callable[[Any], jax.Array], params: Any) -> Callable[[Any], Any]:
    """``v -> H v`` at a fixed point, linearising ``grad f`` once and reusing it.

    The forward pass and the residuals of ``grad f`` are computed once, so
    each later product costs about one gradient: the operator for many
    products at one point (Lanczos, trace estimation, CG).

    Args:
        f: the objective, ``f(params) -> scalar``.
        params: the point, a pytree of float arrays.

    Returns:
        A function ``v -> H v`` on pytrees shaped like ``params``.
    """
    _, matvec = jax.linearize(jax.grad(f), params)
    return matvec


def dense_hessian(f: Callable[[jax.Array], jax.Array], x: jax.Array) -> jax.Array:
    """The dense Hessian of ``f`` at the flat vector ``x``, row ``i`` = ``H e_i``.

    Forward-over-reverse like ``jax.hessian``, which stacks the products as
    columns; stacking them as rows gives the same symmetric matrix without a
    transpose before a column-major LAPACK factorisation.

    Args:
        f: the objective on flat vectors, ``f(x) -> scalar``.
        x: the point, a 1-D array of size ``n``.

    Returns:
        The ``(n, n)`` Hessian in ``x``'s dtype.
    """
    basis = jnp.eye(x.size, dtype=x.dtype)
    return jax.vmap(lambda v: jax.jvp(jax.grad(f), (x,), (v,))[1])(basis)
