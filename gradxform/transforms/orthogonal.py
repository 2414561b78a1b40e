r"""Orthogonalisation of matrix updates by a Newton-Schulz iteration (Muon's block).

The iteration maps a matrix :math:`G = U S V^\top` to approximately
:math:`U V^\top` without an SVD: after :math:`X_0 = G / \max(\|G\|_F, \epsilon)`
(singular values in (0, 1]), each step applies the odd quintic
:math:`X \leftarrow a X + (b A + c A^2) X` with :math:`A = X X^\top`, which maps
each singular value :math:`\sigma` to :math:`p(\sigma) = a\sigma + b\sigma^3 + c\sigma^5`.
With Keller Jordan's coefficients (3.4445, -4.7750, 2.0315) and 5 steps the
singular values of the output land in a band around 1 (within [0.68, 1.21]
for singular values of :math:`X_0` of at least 3e-3), not exactly at 1: the
coefficients maximise the slope at zero rather than convergence.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import DTypeLike

from gradxform import checks, tree
from gradxform.base import EmptyState, GradientTransformationExtraArgs
from gradxform.hyperparams import Hyperparam, Hyperparams, HyperparamState, ScalarOrSchedule
from gradxform.transforms.moments import _first_moment
from gradxform.transforms.partition import _path_string

__all__ = ["OrthogonalizeState", "newton_schulz", "orthogonalize", "scale_by_lookahead_ema"]

_SCALINGS = ("original", "match_rms_adamw", "none")
_LAYOUTS = ("in_out", "out_in")
_BATCHING = ("leading", "flatten")
_EPS_MODES = ("clamp", "add")


def _rounded_steps(x, coeffs, steps, eps, eps_mode, dtype):
    """torch.optim.Muon's precision: values stored in ``dtype``, each fused
    operation (a matrix product accumulated in float32, plus its addend)
    rounded to ``dtype`` once, at the points where torch's ``addmm`` rounds."""
    f32 = jnp.float32
    a, b, c = (jnp.asarray(k).astype(f32) for k in coeffs)
    x = x.astype(dtype)
    wide = x.astype(f32)
    norm = jnp.sqrt(jnp.sum(wide * wide, axis=(-2, -1), keepdims=True)).astype(dtype).astype(f32)
    e = jnp.asarray(eps).astype(dtype).astype(f32)
    x = (wide / (jnp.maximum(norm, e) if eps_mode == "clamp" else norm + e)).astype(dtype)

    def mm(p, q):
        return jnp.matmul(p, q, preferred_element_type=f32)

    for _ in range(steps):
        gram = mm(x, jnp.swapaxes(x, -1, -2)).astype(dtype)
        poly = (b * gram.astype(f32) + c * mm(gram, gram)).astype(dtype)
        x = (a * x.astype(f32) + mm(poly, x)).astype(dtype)
    return x


def newton_schulz(
    x: jax.Array,
    coeffs: tuple[Any, Any, Any],
    steps: int,
    eps: Any,
    *,
    eps_mode: str = "clamp",
    dtype: DTypeLike | None = None,
) -> jax.Array:
    r"""``steps`` Newton-Schulz steps on the last two axes of ``x`` (others: a batch).

    :math:`X_0 = x / \max(\|x\|_F, \epsilon)`, then
    :math:`A = X X^H`, :math:`X \leftarrow a X + (b A + c A A) X` (optax's
    expression, in ``x``'s dtype). Tall matrices are transposed first (the
    Gram matrix is then the smaller one) and back at the end.

    Args:
        x: an array of rank >= 2 (its last two axes are the matrices).
        coeffs: :math:`(a, b, c)`, scalars (cast to ``x``'s dtype).
        steps: the number of steps (static).
        eps: :math:`\epsilon`: the norm is clamped below at it (``eps_mode="clamp"``,
            torch) or it is added to the norm (``"add"``, optax).
        eps_mode: ``"clamp"`` or ``"add"``.
        dtype: ``None`` (compute in ``x``'s dtype), or a real floating dtype to
            store the iterates in, each fused operation accumulated in float32
            and rounded once as torch.optim.Muon does in bfloat16 (bitwise
            equal to torch on the matrices tested; real ``x`` only).

    Returns:
        The iterate after ``steps`` steps, shaped like ``x``, in ``x``'s dtype
        (or ``dtype``).
    """
    if x.ndim == 2 and dtype is None:  # a batch of one: XLA's batched product, as optax's vmap
        return newton_schulz(x[None], coeffs, steps, eps, eps_mode=eps_mode)[0]
    tall = x.shape[-2] > x.shape[-1]
    if tall:
        x = jnp.swapaxes(x, -1, -2)
    if dtype is not None:
        x = _rounded_steps(x, coeffs, steps, eps, eps_mode, dtype)
        return jnp.swapaxes(x, -1, -2) if tall else x
    dt = x.dtype
    a, b, c = (tree.to_dtype(jnp.asarray(k), dt) for k in coeffs)
    norm = jnp.sqrt(jnp.sum(jnp.real(x * jnp.conj(x)), axis=(-2, -1), keepdims=True))
    e = tree.to_dtype(jnp.asarray(eps), norm.dtype)
    x = x / (jnp.maximum(norm, e) if eps_mode == "clamp" else norm + e).astype(dt)
    for _ in range(steps):
        gram = x @ jnp.conj(jnp.swapaxes(x, -1, -2))
        poly = b * gram + c * gram @ gram
        x = a * x + poly @ x
    return jnp.swapaxes(x, -1, -2) if tall else x


class OrthogonalizeState(NamedTuple):
    """State of :func:`orthogonalize`.

    Attributes:
        hyperparams: the block's store of ``ns_a``, ``ns_b``, ``ns_c``, ``eps``
            (and ``rms`` for ``scaling="match_rms_adamw"``); ``EmptyState()``
            when they are all handles. No arrays per parameter.
    """

    hyperparams: HyperparamState | EmptyState


def _matrix_shape(shape: tuple[int, ...], batching: str) -> tuple[int, int]:
    """(rows, columns) of each matrix a leaf of ``shape`` is split into."""
    if batching == "flatten":
        return shape[0], math.prod(shape[1:])
    return shape[-2], shape[-1]


def _shape_factor(rows: int, cols: int, scaling: str, layout: str, rms: Any) -> Any:
    """The update's scale for a ``rows x cols`` matrix (see :func:`orthogonalize`)."""
    if scaling == "none":
        return 1.0
    if scaling == "match_rms_adamw":
        return rms * math.sqrt(max(rows, cols))
    fan_in, fan_out = (rows, cols) if layout == "in_out" else (cols, rows)
    return math.sqrt(max(1.0, fan_out / fan_in))


def _check_matrices(params: Any) -> None:
    """Fails at init, naming the path, for a leaf that is not a batch of matrices."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        if jnp.ndim(leaf) < 2:
            checks.fail(
                f"leaf {_path_string(path)!r} of params",
                "an array of rank >= 2 for orthogonalize (route 1-D leaves elsewhere, e.g. "
                "with gx.partition as gx.muon does)",
                jnp.shape(leaf),
            )


def orthogonalize(
    ns_coeffs: tuple[ScalarOrSchedule | Hyperparam, ...] = (3.4445, -4.7750, 2.0315),
    ns_steps: int = 5,
    eps: ScalarOrSchedule | Hyperparam = 1e-7,
    *,
    eps_mode: str = "clamp",
    scaling: str = "original",
    layout: str = "in_out",
    rms: ScalarOrSchedule | Hyperparam = 0.2,
    batching: str = "leading",
    ns_dtype: DTypeLike | None = None,
) -> GradientTransformationExtraArgs:
    r"""Orthogonalises each matrix update: :math:`u \leftarrow s \cdot \mathrm{NS}_k(u)`.

    :math:`\mathrm{NS}_k` is ``ns_steps`` steps of :func:`newton_schulz`
    (:math:`X_0 = u / \max(\|u\|_F, \epsilon)`, then
    :math:`X \leftarrow a X + (b X X^\top + c (X X^\top)^2) X`, a tall matrix
    transposed), approximately :math:`U V^\top` for :math:`u = U S V^\top`
    (singular values in a band around 1, see the module docs). The shape
    factor :math:`s` (``scaling``):

    * ``"original"`` (default, Keller Jordan's rule, the default of both
      optax.contrib.muon and torch.optim.Muon):
      :math:`s = \sqrt{\max(1, \text{fan\_out}/\text{fan\_in})}`; with
      ``layout="in_out"`` (JAX/flax kernels, optax) a ``(m, n)`` matrix has
      fan-in :math:`m`, with ``"out_in"`` (torch's ``Linear.weight``) fan-in
      :math:`n`, so both give the same factor for the same layer;
    * ``"match_rms_adamw"`` (Moonshot, optax's ``consistent_rms``):
      :math:`s = \rho \sqrt{\max(m, n)}` with :math:`\rho` = ``rms`` (0.2),
      which gives updates of AdamW's RMS;
    * ``"none"``: :math:`s = 1`.

    A leaf of rank > 2: ``batching="leading"`` (default; optax's convention
    with ``MuonDimensionNumbers`` naming the last two axes) orthogonalises
    each matrix of the last two axes; ``"flatten"`` (Keller Jordan's
    reference for convolution kernels; torch.optim.Muon accepts only 2-D
    parameters) reshapes to ``(shape[0], prod(shape[1:]))``.

    Args:
        ns_coeffs: :math:`(a, b, c)`, each a number, a schedule or a handle
            (stored as ``ns_a``, ``ns_b``, ``ns_c``).
        ns_steps: number of steps, an integer >= 1 (static: changing it recompiles).
        eps: :math:`\epsilon > 0`.
        eps_mode: ``"clamp"`` (divide by :math:`\max(\|u\|, \epsilon)`, torch)
            or ``"add"`` (by :math:`\|u\| + \epsilon`, optax).
        scaling: ``"original"``, ``"match_rms_adamw"`` or ``"none"``.
        layout: ``"in_out"`` or ``"out_in"``: which axis is the fan-in.
        rms: :math:`\rho \ge 0` for ``"match_rms_adamw"``.
        batching: ``"leading"`` or ``"flatten"``.
        ns_dtype: ``None`` (iterate in each leaf's dtype, as optax), or the
            dtype to store the iterates in, rounded where torch rounds:
            ``jnp.bfloat16`` is torch.optim.Muon (see :func:`newton_schulz`).
            The output is cast back to the leaf's dtype.

    Returns:
        The block; its state is :class:`OrthogonalizeState`.

    Raises:
        ValueError, TypeError: when built, for bad options; at ``init``, for a
            leaf of rank < 2 (naming its path).

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.orthogonalize(scaling="none")
        >>> g = jnp.array([[3.0, 0.0], [0.0, 0.1]])
        >>> u, _ = tx.update(g, tx.init(g))
        >>> [round(float(v), 2) for v in jnp.diag(u)]  # singular values near 1
        [0.7, 1.13]
    """
    if not isinstance(ns_coeffs, (tuple, list)) or len(ns_coeffs) != 3:
        checks.fail("ns_coeffs", "a tuple (a, b, c)", ns_coeffs)
    steps = checks.integer("ns_steps", ns_steps, minimum=1)
    for name, value, options in (
        ("eps_mode", eps_mode, _EPS_MODES),
        ("scaling", scaling, _SCALINGS),
        ("layout", layout, _LAYOUTS),
        ("batching", batching, _BATCHING),
    ):
        checks.choice(name, value, options)
    dtype = checks.optional_dtype("ns_dtype", ns_dtype)
    specs = dict(zip(("ns_a", "ns_b", "ns_c"), ns_coeffs), eps=eps)
    if scaling == "match_rms_adamw":
        specs["rms"] = rms
    hp = Hyperparams(**specs).check("eps", lower=0, lower_open=True)
    for name in ("ns_a", "ns_b", "ns_c"):
        hp.check(name)
    if scaling == "match_rms_adamw":
        hp.check("rms", lower=0)

    def leaf(u, values):
        rows, cols = _matrix_shape(u.shape, batching)
        x = u.reshape(rows, cols) if batching == "flatten" else u
        coeffs = (values["ns_a"], values["ns_b"], values["ns_c"])
        x = newton_schulz(x, coeffs, steps, values["eps"], eps_mode=eps_mode, dtype=dtype)
        x = x.astype(u.dtype)
        rho = values["rms"] if scaling == "match_rms_adamw" else None
        factor = _shape_factor(rows, cols, scaling, layout, rho)
        x = (
            x
            if scaling == "none"
            else x * tree.to_dtype(jnp.asarray(factor), tree.real_dtype(x.dtype))
        )
        return x.reshape(u.shape)

    def init_fn(params):
        _check_matrices(params)
        return OrthogonalizeState(hp.init(params))

    def update_fn(updates, state, params=None, **extra_args):
        del params
        values, hyper = hp.step(state.hyperparams, extra_args)
        return jax.tree.map(lambda u: leaf(u, values), updates), OrthogonalizeState(hyper)

    return GradientTransformationExtraArgs(init_fn, update_fn)


def scale_by_lookahead_ema(
    decay: ScalarOrSchedule | Hyperparam = 0.95,
    *,
    nesterov: bool = True,
    dtype: DTypeLike | None = None,
) -> GradientTransformationExtraArgs:
    r"""Muon's momentum: an EMA without bias correction, and its look-ahead.

    :math:`m \leftarrow \beta m + (1 - \beta) g`, output
    :math:`\beta m + (1 - \beta) g` (``nesterov=True``, torch.optim.Muon's
    ``grad.lerp(buf, momentum)``) or :math:`m`. (optax.contrib.muon
    bias-corrects both terms: that is :func:`gradxform.nesterov_first_moment`.)

    Args:
        decay: :math:`\beta` in [0, 1): a number, a schedule or a handle.
        nesterov: output the look-ahead.
        dtype: dtype of :math:`m` (default: each parameter's dtype).

    Returns:
        The block; its state is an :class:`~gradxform.EmaFirstMomentState`.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.scale_by_lookahead_ema(0.5)
        >>> out, _ = tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))
        >>> float(out[0])  # m = 1; 0.5 * 1 + 0.5 * 2
        1.5
    """
    nesterov = checks.boolean("nesterov", nesterov)

    def look_ahead(values, mu, updates):
        b, gain = values["decay"], values.complement("decay")
        return tree.cast(tree.ema(b, gain, mu, updates), updates)

    return _first_moment(decay, dtype, look_ahead if nesterov else lambda values, mu, g: mu)
