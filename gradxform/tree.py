"""Tree arithmetic: the few pytree operations update functions are written in.

Every function maps leaf-wise over pytrees of arrays, so an update function
reads like its equation: ``tree.ema(decay, complement, moment, updates)``.
Scalars are cast to each leaf's (real) dtype, so a float32 hyperparameter
never promotes a bfloat16 moment. The checks (:func:`check_structure`,
:func:`check_real_floating`) run in Python at trace time and name the path of
the first offending leaf.

Example:
    >>> import jax.numpy as jnp
    >>> from gradxform import tree
    >>> m = {"w": jnp.zeros(2), "b": jnp.ones(())}
    >>> g = {"w": jnp.array([1.0, -1.0]), "b": jnp.zeros(())}
    >>> new = tree.ema(jnp.asarray(0.5), jnp.asarray(0.5), m, g)
    >>> new["w"].tolist(), new["b"].tolist()
    ([0.5, -0.5], 0.5)
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "add",
    "cast",
    "check_complex_updates",
    "check_real_floating",
    "check_structure",
    "ema",
    "full_like",
    "global_norm",
    "real_dtype",
    "safe_divide",
    "scale",
    "squared_magnitude",
    "squares_like",
    "to_dtype",
    "zeros_like",
]


def real_dtype(dtype) -> np.dtype:
    """The real dtype of a (possibly complex) dtype: complex64 -> float32.

    Args:
        dtype: any NumPy or JAX dtype (or something ``numpy.dtype`` accepts).

    Returns:
        The dtype of the real part for inexact dtypes (``float32`` for
        ``complex64``, the dtype itself for real floats); other dtypes unchanged.

    Example:
        >>> import jax.numpy as jnp
        >>> from gradxform import tree
        >>> tree.real_dtype(jnp.complex64)
        dtype('float32')
    """
    return jnp.finfo(dtype).dtype if jnp.issubdtype(dtype, jnp.inexact) else np.dtype(dtype)


def to_dtype(x: jax.Array, dtype) -> jax.Array:
    """``x`` cast to ``dtype``, or ``x`` itself when it has that dtype already.

    ``x.astype(dtype)`` traces an operation even when nothing changes; over
    thousands of leaves that is a noticeable part of tracing an update.

    Args:
        x: an array.
        dtype: the target dtype.

    Returns:
        ``x`` in ``dtype``.

    Example:
        >>> import jax.numpy as jnp
        >>> from gradxform import tree
        >>> x = jnp.ones(2)
        >>> tree.to_dtype(x, jnp.float32) is x, tree.to_dtype(x, jnp.bfloat16).dtype
        (True, dtype(bfloat16))
    """
    return x if x.dtype == dtype else x.astype(dtype)


def squared_magnitude(x: jax.Array, like: jax.Array | None = None) -> jax.Array:
    """:math:`|x|^2` elementwise, real-valued for complex ``x``.

    Args:
        x: an array.
        like: the accumulator the square goes into: when its dtype is wider,
            ``x`` is cast to it first (a float16 ``x`` of 2e-4 squares to a
            float16 subnormal, but to 4e-8 in a float32 second moment).

    Returns:
        ``x * x`` for real ``x``; ``(conj(x) * x).real`` for complex ``x``.

    Example:
        >>> import jax.numpy as jnp
        >>> from gradxform import tree
        >>> tree.squared_magnitude(jnp.array([3 + 4j])).tolist()
        [25.0]
        >>> x, accumulator = jnp.array(2e-4, jnp.float16), jnp.zeros((), jnp.float32)
        >>> # squared in float16, 4e-8 is a subnormal 50% off; in float32 it is not
        >>> [f"{float(tree.squared_magnitude(x, like)):.2g}" for like in (None, accumulator)]
        ['6e-08', '4e-08']
    """
    if like is not None:
        x = to_dtype(x, jnp.promote_types(x.dtype, like.dtype))
    if jnp.iscomplexobj(x):
        return (x.conj() * x).real
    return x * x


@jax.custom_jvp
def safe_divide(num: Any, den: Any) -> Any:
    """``num / den`` leaf-wise, and 0 where ``den == 0`` (a coordinate that never saw a gradient).

    Computed as ``where(den == 0, 0, num / den)``, for a denominator of any
    sign: a compare and a select per element, the zero they share being one
    broadcast constant. Where ``den == 0`` the result is +0 whatever ``num``
    is (a NaN numerator over a zero denominator gives 0, as does a negative
    one). Derivatives are those of ``num / den`` where ``den != 0`` and 0
    where ``den == 0``, finite in both modes (a custom JVP, one for the whole
    tree: the plain ``where`` would send ``0 * inf`` into reverse mode).

    Args:
        num: the numerator, a pytree of arrays (or an array).
        den: the denominator, a pytree of the same structure, each leaf
            broadcastable against ``num``'s.

    Returns:
        ``num / den`` with zeros where ``den == 0``, leaf-wise.

    Example:
        >>> import jax.numpy as jnp
        >>> from gradxform import tree
        >>> tree.safe_divide(jnp.array([1.0, 2.0]), jnp.array([2.0, 0.0])).tolist()
        [0.5, 0.0]
    """
    return jax.tree.map(_safe_divide_leaf, num, den)


def _safe_divide_leaf(num: jax.Array, den: jax.Array) -> jax.Array:
    quotient = num / den
    if den.shape != quotient.shape:
        den = jnp.broadcast_to(den, quotient.shape)
    zeros = jax.lax.full_like(quotient, 0)  # one broadcast, for the compare and the select
    den_zeros = zeros if den.dtype == zeros.dtype else jax.lax.full_like(den, 0)
    return jax.lax.select(jax.lax.eq(den, den_zeros), zeros, quotient)


@safe_divide.defjvp
def _safe_divide_jvp(primals, tangents):
    num, den = primals
    num_dot, den_dot = tangents
    out = safe_divide(num, den)

    def leaf(out, den, num_dot, den_dot):
        unseen = den == 0
        safe_den = jnp.where(unseen, jnp.ones_like(den), den)
        return jnp.where(unseen, jnp.zeros_like(out), (num_dot - out * den_dot) / safe_den)

    return out, jax.tree.map(leaf, out, den, num_dot, den_dot)


def zeros_like(params: Any, dtype=None, real: bool = False) -> Any:
    """Zeros shaped like ``params``; ``dtype`` overrides, ``real`` drops complex parts.

    Args:
        params: a pytree of arrays.
        dtype: the dtype of every leaf (default: each parameter's dtype).
        real: use the real dtype of each leaf's dtype (for second moments of
            complex parameters).

    Returns:
        A pytree of zeros with the structure, shapes and sharding of ``params``.

    Example:
        >>> import jax.numpy as jnp
        >>> from gradxform import tree
        >>> tree.zeros_like({"z": jnp.ones(2, jnp.complex64)}, real=True)["z"].dtype
        dtype('float32')
    """
    return full_like(params, 0, dtype=dtype, real=real)


def full_like(params: Any, value, dtype=None, real: bool = False) -> Any:
    """``value`` broadcast to every leaf of ``params`` (see :func:`zeros_like`).

    Each leaf of the result has the sharding of its parameter, so optimizer
    state built from sharded parameters is sharded the same way.

    Args:
        params: a pytree of arrays.
        value: the fill value (a scalar).
        dtype: the dtype of every leaf (default: each parameter's dtype).
        real: use the real dtype of each leaf's dtype.

    Returns:
        A pytree shaped like ``params`` filled with ``value``.

    Example:
        >>> import jax.numpy as jnp
        >>> from gradxform import tree
        >>> tree.full_like({"w": jnp.ones(2)}, 0.5)["w"].tolist()
        [0.5, 0.5]
    """

    def leaf(p):
        leaf_dtype = dtype if dtype is not None else jnp.asarray(p).dtype
        if real:
            leaf_dtype = real_dtype(leaf_dtype)
        if isinstance(p, jax.Array):  # keeps the leaf's sharding (and device)
            return jnp.full_like(p, value, dtype=leaf_dtype)
        return jnp.full(jnp.shape(p), value, dtype=leaf_dtype)

    return jax.tree.map(leaf, params)


def squares_like(params: Any, value, dtype=None) -> Any:
    r"""``value`` in every leaf of an accumulator of :math:`|g|^2` for ``params``.

    A running average or sum of squared gradients (Adam's :math:`v`,
    RMSProp's and AdaGrad's accumulators, AMSGrad's maximum) is real, and by
    default at least float32: float16's smallest number is 6e-8, so a gradient
    of 3e-3 squared and scaled by Adam's :math:`1 - \beta_2 = 10^{-3}` is 0
    there, and bfloat16 rounds :math:`\beta_2 = 0.999` to 1. float64 and
    complex128 parameters get float64.

    Args:
        params: a pytree of arrays.
        value: the fill value (a scalar).
        dtype: the dtype of every leaf, used as given (its real dtype); the
            default is each parameter's real dtype, float32 for float16 and
            bfloat16.

    Returns:
        A pytree shaped (and sharded) like ``params`` filled with ``value``.

    Example:
        >>> import jax.numpy as jnp
        >>> from gradxform import tree
        >>> params = {"h": jnp.ones(2, jnp.float16), "z": jnp.ones(2, jnp.complex64)}
        >>> {k: str(v.dtype) for k, v in tree.squares_like(params, 0.0).items()}
        {'h': 'float32', 'z': 'float32'}
    """
    if dtype is not None:
        return full_like(params, value, dtype, real=True)

    def leaf(p):
        return full_like(p, value, jnp.promote_types(real_dtype(jnp.asarray(p).dtype), jnp.float32))

    return jax.tree.map(leaf, params)


def cast(tree: Any, like: Any) -> Any:
    """Casts each leaf of ``tree`` to the dtype of the matching leaf of ``like``.

    Args:
        tree: a pytree of arrays.
        like: a pytree of the same structure whose leaves have the target dtypes.

    Returns:
        ``tree`` with every leaf cast to its counterpart's dtype.

    Example:
        >>> import jax.numpy as jnp
        >>> from gradxform import tree
        >>> tree.cast({"w": jnp.ones(2)}, {"w": jnp.zeros(2, jnp.bfloat16)})["w"].dtype
        dtype(bfloat16)
    """
    return jax.tree.map(lambda x, y: x.astype(y.dtype), tree, like)


def scale(factor: jax.Array, tree: Any) -> Any:
    """``factor * tree``, the scalar cast to each leaf's real dtype first.

    Args:
        factor: a scalar array.
        tree: a pytree of arrays (real or complex).

    Returns:
        The pytree ``factor * tree``; each leaf keeps its dtype.

    Example:
        >>> import jax.numpy as jnp
        >>> from gradxform import tree
        >>> z = tree.scale(jnp.asarray(2.0), {"z": jnp.array([1 + 1j], jnp.complex64)})["z"]
        >>> z.dtype, z.tolist()
        (dtype('complex64'), [(2+2j)])
    """
    return jax.tree.map(lambda x: x * to_dtype(factor, real_dtype(x.dtype)), tree)


def add(a: Any, b: Any) -> Any:
    """``a + b`` leaf-wise.

    Args:
        a: a pytree of arrays.
        b: a pytree of the same structure.

    Returns:
        The leaf-wise sum.

    Example:
        >>> import jax.numpy as jnp
        >>> from gradxform import tree
        >>> tree.add({"w": jnp.ones(2)}, {"w": jnp.ones(2)})["w"].tolist()
        [2.0, 2.0]
    """
    return jax.tree.map(jnp.add, a, b)


def ema(decay: jax.Array, complement: jax.Array | None, moment: Any, sample: Any) -> Any:
    r"""The exponential moving average :math:`(1 - \beta)\, x + \beta\, m`, in each moment's dtype.

    ``complement`` is :math:`1 - \beta` computed by the caller to full
    precision (a float32 ``1 - decay`` computed from a float32 ``decay`` would
    lose its low bits), passed separately from ``decay``. ``None`` stands for
    a gain of exactly 1 (heavy-ball momentum, :math:`x + \beta m`), which
    leaves out the multiplication (the same bits, one operation less per element).

    Args:
        decay: :math:`\beta`, a scalar array.
        complement: :math:`1 - \beta`, a scalar array, or ``None`` for 1.
        moment: the pytree :math:`m` of current averages.
        sample: the pytree :math:`x` of new samples, shaped like ``moment``.

    Returns:
        ``complement * sample + decay * moment``, each leaf in its moment's dtype.

    Example:
        >>> import jax.numpy as jnp
        >>> from gradxform import tree
        >>> m = {"w": jnp.array([1.0], jnp.bfloat16)}
        >>> new = tree.ema(jnp.asarray(0.75), jnp.asarray(0.25), m, {"w": jnp.array([3.0])})
        >>> new["w"].dtype, new["w"].tolist()
        (dtype(bfloat16), [1.5])
    """

    check_complex_updates(moment, sample, "moments", "updates")

    def leaf(m, x):
        dt = m.dtype
        x = to_dtype(x, dt)
        gained = x if complement is None else to_dtype(complement, dt) * x
        return to_dtype(gained + to_dtype(decay, dt) * m, dt)

    return jax.tree.map(leaf, moment, sample)


def global_norm(tree: Any) -> jax.Array:
    r"""The l2 norm of all leaves together: :math:`\sqrt{\sum_i |x_i|^2}`.

    Args:
        tree: a pytree of arrays (complex leaves count by magnitude).

    Returns:
        A scalar array; 0 for a tree with no leaves.

    Example:
        >>> import jax.numpy as jnp
        >>> from gradxform import tree
        >>> float(tree.global_norm({"a": jnp.array([3.0]), "b": jnp.array([4.0])}))
        5.0
    """
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
    with the shapes of ``reference``'s; ``leaves=False`` compares the
    structures only (e.g. a mask of Python booleans).

    Runs in Python at trace time, so the error appears when a jitted step is
    first traced, with the offending path in the message.

    Args:
        reference: the pytree that defines the expected structure.
        other: the pytree checked against it.
        reference_name: how the message names ``reference`` (e.g. ``"params"``).
        other_name: how the message names ``other`` (e.g. ``"updates"``).
        leaves: also check that ``other``'s leaves are arrays of
            ``reference``'s shapes.

    Raises:
        ValueError: naming the first differing path, or the first leaf whose
            shape differs.
        TypeError: naming the first leaf of ``other`` that is not an array.

    Example:
        >>> import jax.numpy as jnp
        >>> from gradxform import tree
        >>> x = jnp.ones(2)
        >>> tree.check_structure({"w": x}, {"v": x}, "params", "updates")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ValueError: updates and params have different tree structures: leaf 0 is at ['v'] ...
    """
    ref_def = jax.tree.structure(reference)
    other_def = jax.tree.structure(other)
    if ref_def == other_def:  # type: ignore[operator]  # PyTreeDef defines ==, untyped
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


def _is_complex(leaf: Any) -> bool:
    return hasattr(leaf, "dtype") and jnp.issubdtype(leaf.dtype, jnp.complexfloating)


def check_complex_updates(
    params: Any, updates: Any, params_name: str = "params", updates_name: str = "updates"
) -> None:
    """Raises ``TypeError`` naming the first real parameter whose update is complex.

    Cast to the parameter's dtype, a complex update would lose its imaginary
    part (NumPy and JAX only warn). Runs in Python at trace time; trees of
    different structures are left to :func:`check_structure`.

    Args:
        params: the pytree the updates are for (or a moment shaped like it).
        updates: the updates (gradients).
        params_name: how the message names ``params``.
        updates_name: how the message names ``updates``.

    Raises:
        TypeError: naming the path and both dtypes of the first complex
            update of a real leaf.

    Example:
        >>> import jax.numpy as jnp
        >>> from gradxform import tree
        >>> tree.check_complex_updates({"w": jnp.ones(2)}, {"w": jnp.ones(2, jnp.complex64)})
        Traceback (most recent call last):
        TypeError: updates must be real for real params; got complex64 at ['w'], ...
    """
    param_leaves, update_leaves = jax.tree.leaves(params), jax.tree.leaves(updates)
    if len(param_leaves) != len(update_leaves):
        return

    def dropped(p, u):
        return _is_complex(u) and hasattr(p, "dtype") and not _is_complex(p)

    if not any(map(dropped, param_leaves, update_leaves)):
        return  # the key paths, which cost more than the check, only name an offending leaf
    for (path, p), u in zip(jax.tree_util.tree_flatten_with_path(params)[0], update_leaves):
        if dropped(p, u):
            raise TypeError(
                f"{updates_name} must be real for real {params_name}; got {u.dtype} at "
                f"{jax.tree_util.keystr(path) or '<root>'}, where {params_name} is {p.dtype} "
                "(its imaginary part would be dropped: pass jnp.real(g), or make the "
                "parameter complex)"
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
        if isinstance(leaf, jax.ShapeDtypeStruct):
            raise TypeError(
                f"{name} must hold arrays; the leaf at {where} is a ShapeDtypeStruct "
                "(for an abstract state call jax.eval_shape(tx.init, params))"
            )
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

    Args:
        tree: the pytree to check (e.g. a solver's ``x0``).
        name: how the message names it.

    Raises:
        ValueError: if ``tree`` has no leaves.
        TypeError: naming the path of the first leaf whose dtype is not a real
            floating-point dtype.

    Example:
        >>> import jax.numpy as jnp
        >>> from gradxform import tree
        >>> tree.check_real_floating({"w": jnp.ones(2, jnp.int32)}, "x0")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        TypeError: x0 must hold real floating-point arrays; the leaf at ['w'] has dtype int32 ...
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
