"""Convolutions in XLA CPU's library layout, inside loops too.

XLA's CPU backend runs a convolution with its library kernel (Eigen's) only when
the input is ``NHWC``-like and the kernel ``HWIO``-like. A pass
(``ConvCanonicalization``) puts other convolutions in that layout with
transposes, but it visits only the program's top level: a convolution inside a
``while`` loop, a ``scan`` or a branch keeps its layout and is compiled to a
generic loop. Reverse-mode differentiation makes such layouts: the gradient of a
convolution with respect to its kernel contracts over the batch
(``f01b_i01o->01bf``). Inside a loop that gradient ran about 10x slower than in
a program of its own, and the input gradient 2x
(``python benchmarks/hessian_products_in_loops.py``, 2-core x86 VM).

:func:`canonical_convolutions` does the pass's rewrite in JAX, everywhere: each
convolution whose layout is not the library's becomes a transpose of each
operand, the convolution in the library layout, and a transpose of the result.
The values are the ones XLA computes for the same convolution outside a loop.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax import lax
from jax.extend import core as jcore

__all__ = ["canonical_convolutions"]

# primitives whose sub-programs are rewritten, and the parameters that hold them
_NESTED = {
    "jit": ("jaxpr",),
    "pjit": ("jaxpr",),
    "closed_call": ("call_jaxpr",),
    "while": ("cond_jaxpr", "body_jaxpr"),
    "cond": ("branches",),
    "scan": ("jaxpr",),
    "remat2": ("jaxpr",),
    "checkpoint": ("jaxpr",),
}


def canonical_convolutions(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with every convolution in XLA CPU's library layout, in loops and branches too.

    Apply it to the function that contains the loop, after differentiation: a
    jitted training step that runs several steps in a ``lax.scan``, a solver, a
    Lanczos driver. On a CPU backend a convolution outside any loop computes what
    XLA computes for it anyway (XLA rewrites those the same way), and one inside a
    loop runs the library kernel instead of a generic loop, with the values it
    would have outside. On other backends (``jax.default_backend()`` not
    ``"cpu"``, checked when the function is traced) ``fn`` runs unchanged. The
    Hessian tools, :func:`gradxform.minimize`, :func:`gradxform.least_squares`
    and the second-order transforms apply it themselves.

    Args:
        fn: a function of pytrees of arrays to a pytree of arrays (keyword
            arguments are passed through to it as constants of the trace).

    Returns:
        A function with ``fn``'s signature and values.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import gradxform as gx
        >>> conv = lambda x, w: jax.lax.conv(x, w, (1, 1), "SAME")
        >>> loss = lambda w, x: jnp.sum(jnp.tanh(conv(x, w)))
        >>> def descend(w, x):  # the kernel's gradient inside a loop
        ...     return jax.lax.fori_loop(0, 3, lambda i, w: w - 0.1 * jax.grad(loss)(w, x), w)
        >>> w, x = jnp.ones((4, 2, 3, 3)), jnp.ones((8, 2, 6, 6))
        >>> fast = jax.jit(gx.canonical_convolutions(descend))
        >>> bool(jnp.allclose(fast(w, x), jax.jit(descend)(w, x)))
        True
    """
    if not callable(fn):
        raise TypeError(f"fn must be a callable; got {fn!r}")

    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        call = functools.partial(fn, **kwargs) if kwargs else fn
        if jax.default_backend() != "cpu":
            return call(*args)
        # the traced program re-emitted (not ``fn`` traced again): nothing changes in a
        # program without convolutions to rewrite, and it costs no second trace
        closed, out_shape = jax.make_jaxpr(call, return_shape=True)(*args)
        outs = _evaluate(closed.jaxpr, closed.consts, jax.tree.leaves(args))
        return jax.tree.unflatten(jax.tree.structure(out_shape), outs)

    return wrapped


def _canonical_numbers(ndim: int) -> lax.ConvDimensionNumbers:
    """Batch first, features last (input, output); spatial, then in, out features (kernel)."""
    spatial = tuple(range(1, ndim - 1))
    return lax.ConvDimensionNumbers(
        (0, ndim - 1, *spatial), (ndim - 1, ndim - 2, *range(ndim - 2)), (0, ndim - 1, *spatial)
    )


def _is_canonical(params: dict, ndim: int) -> bool:
    return tuple(params["dimension_numbers"]) == tuple(_canonical_numbers(ndim))


def _convolve_canonically(lhs: Any, rhs: Any, params: dict) -> Any:
    """The convolution ``params`` describes, computed in the library layout."""
    numbers = params["dimension_numbers"]
    lhs_spec, rhs_spec, out_spec = numbers.lhs_spec, numbers.rhs_spec, numbers.out_spec
    lhs = lax.transpose(lhs, (lhs_spec[0], *lhs_spec[2:], lhs_spec[1]))
    rhs = lax.transpose(rhs, (*rhs_spec[2:], rhs_spec[1], rhs_spec[0]))
    canonical = _canonical_numbers(lhs.ndim)
    out = lax.conv_general_dilated_p.bind(lhs, rhs, **{**params, "dimension_numbers": canonical})
    order = (out_spec[0], *out_spec[2:], out_spec[1])  # the original axis of each axis of out
    return lax.transpose(out, tuple(int(i) for i in np.argsort(order)))


def _sub_jaxprs(value: Any) -> list:
    if isinstance(value, jcore.ClosedJaxpr):
        return [value.jaxpr]
    if isinstance(value, jcore.Jaxpr):
        return [value]
    if isinstance(value, (tuple, list)):
        return [j for v in value for j in _sub_jaxprs(v)]
    return []


def _has_other_layout(jaxpr: Any) -> bool:
    """Whether ``jaxpr`` or a program nested in it has a convolution outside the library layout."""
    for eqn in jaxpr.eqns:
        if eqn.primitive is lax.conv_general_dilated_p:
            if not _is_canonical(eqn.params, eqn.invars[0].aval.ndim):
                return True
        elif any(_has_other_layout(j) for v in eqn.params.values() for j in _sub_jaxprs(v)):
            return True
    return False


def _rewritten(value: Any) -> Any:
    """A nested program (closed or open, or a tuple of them) with its convolutions rewritten;
    unchanged when it has none to rewrite (or an open program would gain constants)."""
    if isinstance(value, (tuple, list)):
        return type(value)(_rewritten(v) for v in value)
    if isinstance(value, jcore.Jaxpr):
        new = _rewritten(jcore.ClosedJaxpr(value, ()))
        return value if new.consts else new.jaxpr
    if not isinstance(value, jcore.ClosedJaxpr) or not _has_other_layout(value.jaxpr):
        return value
    avals = [v.aval for v in value.jaxpr.invars]
    if not all(isinstance(a, jax.core.ShapedArray) for a in avals):  # tokens, references
        return value
    like = [jax.ShapeDtypeStruct(a.shape, a.dtype, weak_type=a.weak_type) for a in avals]
    return jax.make_jaxpr(lambda *xs: _evaluate(value.jaxpr, value.consts, xs))(*like)


def _evaluate(jaxpr: Any, consts: Any, args: Any) -> list:
    """``jaxpr`` evaluated (traced into the caller's trace) with convolutions rewritten."""
    env: dict = {}

    def read(v: Any) -> Any:
        return v.val if isinstance(v, jcore.Literal) else env[v]

    env.update(zip(jaxpr.constvars, consts))
    env.update(zip(jaxpr.invars, args))
    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        params = eqn.params
        if eqn.primitive is lax.conv_general_dilated_p and not _is_canonical(
            params, eqn.invars[0].aval.ndim
        ):
            outs = [_convolve_canonically(invals[0], invals[1], params)]
        else:
            names = _NESTED.get(eqn.primitive.name, ())
            params = {k: _rewritten(v) if k in names else v for k, v in params.items()}
            with eqn.ctx.manager:
                outs = eqn.primitive.bind(*invals, **eqn.primitive.get_bind_params(params))
            outs = outs if eqn.primitive.multiple_results else [outs]
        env.update(zip(eqn.outvars, outs))
    return [read(v) for v in jaxpr.outvars]
