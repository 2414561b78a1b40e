r"""Adafactor's blocks: a factored second moment, and the per-leaf RMS scalings it is chained with.

Adafactor's direction (Shazeer & Stern, 2018) is::

    chain(scale_by_factored_rms(decay_rate, eps), clip_by_block_rms(threshold))

followed by the learning rate and :func:`scale_by_param_block_rms` (the step
relative to each leaf's RMS); see :func:`gradxform.adafactor` (optax's
recipe) and :func:`gradxform.adafactor_torch` (torch.optim.Adafactor's).

A *block* here is one leaf: the clipping and the parameter scale each read one
RMS per leaf, a reduction over the whole leaf.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform import checks, tree
from gradxform.base import EmptyState, GradientTransformationExtraArgs
from gradxform.hyperparams import Hyperparam, Hyperparams, HyperparamState, ScalarOrSchedule

__all__ = [
    "ClipByBlockRmsState",
    "FactoredRmsState",
    "ScaleByParamBlockRmsState",
    "ScaleByRelativeStepState",
    "clip_by_block_rms",
    "factored_axes",
    "scale_by_factored_rms",
    "scale_by_param_block_rms",
    "scale_by_relative_step",
]


def factored_axes(
    shape: tuple[int, ...], min_dim_size_to_factor: int = 128, axes: str = "largest"
) -> tuple[int, int] | None:
    """The two axes a leaf's second moment is factored over, or ``None`` (kept whole).

    Args:
        shape: the leaf's shape.
        min_dim_size_to_factor: the smaller of the two axes must be at least this long.
        axes: ``"largest"``, the two longest axes (optax; ties go to the later axis),
            or ``"last"``, the last two (torch; leading axes are a batch).

    Returns:
        ``(row_axis, col_axis)``: ``col_axis`` is the longest (``"largest"``) or the
        last (``"last"``) axis, ``row_axis`` the other one; ``None`` for a leaf of
        rank < 2 or whose two axes are too short.

    Example:
        >>> import gradxform as gx
        >>> gx.factored_axes((6, 2, 3), 2), gx.factored_axes((6, 2, 3), 2, "last")
        ((2, 0), (1, 2))
    """
    if len(shape) < 2:
        return None
    if axes == "last":
        row, col = len(shape) - 2, len(shape) - 1
    else:
        order = sorted(range(len(shape)), key=lambda i: shape[i])  # stable: ties by index
        row, col = order[-2], order[-1]
    return (row, col) if min(shape[row], shape[col]) >= min_dim_size_to_factor else None


class FactoredRmsState(NamedTuple):
    """State of :func:`scale_by_factored_rms`.

    Attributes:
        v_row: per leaf, the average over its column axis of :math:`g^2`, one
            value per row (the leaf's shape without its column axis), or
            ``None`` for a leaf that is not factored.
        v_col: per leaf, the average over its row axis, one value per column
            (the shape without the row axis), or ``None``.
        v: per leaf, the full second moment (shaped like the leaf) where it is
            not factored, else ``None``.
        hyperparams: the block's store (``decay_rate``, ``decay_offset``,
            ``eps`` unless handles) and the step count.
    """

    v_row: Any
    v_col: Any
    v: Any
    hyperparams: HyperparamState | EmptyState


def _moment(decay: jax.Array, complement: jax.Array, v: jax.Array, sample: jax.Array):
    """``decay * v + complement * sample`` in their common dtype, stored in ``v``'s."""
    return (decay * v + complement * sample).astype(v.dtype)


def _init_leaf(p: jax.Array, dims: tuple[int, int] | None):
    """Zeros for one leaf, with the sharding of the leaf (or of its mean over an axis)."""
    if dims is None:
        return None, None, tree.zeros_like(p, real=True)
    row, col = dims
    dtype = tree.real_dtype(p.dtype)
    without = lambda axis: jax.eval_shape(lambda x: jnp.sum(x, axis=axis), p)  # noqa: E731
    return jnp.zeros_like(without(col), dtype), jnp.zeros_like(without(row), dtype), None


def _update_leaf(g, v_row, v_col, v, dims, decay, complement, eps, clamp):
    """One leaf: the new moments and ``g`` over the root of the (factored) estimate."""
    eps = tree.to_dtype(eps, tree.real_dtype(g.dtype))
    square = tree.squared_magnitude(g) if clamp else tree.squared_magnitude(g) + eps
    if dims is None:
        v = _moment(decay, complement, v, square)
        return v_row, v_col, v, g * (jnp.maximum(v, eps * eps) if clamp else v) ** -0.5
    row, col = dims
    v_row = _moment(decay, complement, v_row, jnp.mean(square, axis=col))
    v_col = _moment(decay, complement, v_col, jnp.mean(square, axis=row))
    reduced_row = row - 1 if row > col else row  # the row axis of v_row
    mean = jnp.mean(v_row, axis=reduced_row, keepdims=True)
    rows, cols = jnp.expand_dims(v_row, col), jnp.expand_dims(v_col, row)
    if clamp:  # torch: V = R C / max(mean R, eps), then max(V, eps^2)
        estimate = rows * cols / jnp.maximum(jnp.expand_dims(mean, col), eps)
        return v_row, v_col, v, jnp.maximum(estimate, eps * eps) ** -0.5 * g
    return v_row, v_col, v, g * jnp.expand_dims((v_row / mean) ** -0.5, col) * cols**-0.5


def _decays(values: Any, offset_name: str, clamp: bool) -> tuple[jax.Array, jax.Array]:
    r"""``(beta_t, 1 - beta_t)`` with :math:`\beta_t = 1 - t^{-c}`.

    :math:`t` counts from 1 at the first update after ``decay_offset`` (and is 1
    before it, where optax's :math:`t \le 0` gives NaN). optax
    computes :math:`1 - t^{-c}` in float32 and then ``1 - beta_t`` (the ``"add"``
    mode); torch's weight is :math:`t^{-c}` itself, in Python double (the
    ``"clamp"`` mode: in the store's dtype, float64 for float64 params).
    """
    dtype = values["decay_rate"].dtype if clamp else jnp.float32
    t = jnp.asarray(jnp.maximum(values.count - values[offset_name], 1), dtype)
    power = t ** (-jnp.asarray(values["decay_rate"], dtype))
    decay = 1.0 - power
    return decay, power if clamp else 1.0 - decay


def scale_by_factored_rms(
    decay_rate: ScalarOrSchedule | Hyperparam = 0.8,
    eps: ScalarOrSchedule | Hyperparam | None = 1e-30,
    decay_offset: int | Hyperparam = 0,
    *,
    factored: bool = True,
    min_dim_size_to_factor: int = 128,
    axes: str = "largest",
    eps_mode: str = "add",
) -> GradientTransformationExtraArgs:
    r"""Adafactor's second moment: row and column averages of :math:`g^2` for matrices.

    With :math:`\beta_t = 1 - t^{-c}` (:math:`c` = ``decay_rate``, :math:`t`
    the update number after ``decay_offset``), for a leaf factored over a row
    axis :math:`i` and a column axis :math:`j` (see :func:`gradxform.factored_axes`;
    other axes are a batch):

    .. math::

        R \leftarrow \beta_t R + (1 - \beta_t)\, \mathrm{mean}_j(g^2 + \epsilon), \quad
        C \leftarrow \beta_t C + (1 - \beta_t)\, \mathrm{mean}_i(g^2 + \epsilon), \quad
        u = g \,/\, \sqrt{R_i C_j / \mathrm{mean}_i R}

    and for any other leaf :math:`v \leftarrow \beta_t v + (1 - \beta_t)(g^2 +
    \epsilon)`, :math:`u = g / \sqrt{v}`. A factored :math:`(m, n)` leaf keeps
    :math:`m + n` numbers instead of :math:`m n`. With ``eps_mode="clamp"``
    (torch) nothing is added to :math:`g^2`; instead the estimate is
    :math:`R_i C_j / \max(\mathrm{mean}_i R, \epsilon)` and
    :math:`u = g / \sqrt{\max(\hat v, \epsilon^2)}`, and the weight of the new
    sample is :math:`t^{-c}` itself rather than :math:`1 - \beta_t`. The
    decay is computed in float32 in the ``"add"`` mode (as optax does) and in
    the store's dtype in the ``"clamp"`` mode (torch: Python double). The ``"add"`` mode
    with ``axes="largest"`` is optax's ``scale_by_factored_rms`` (the same bits).

    Args:
        decay_rate: :math:`c \ge 0`: a number, a schedule or a handle.
        eps: :math:`\epsilon \ge 0`; ``None`` (``"clamp"`` mode only): each leaf's
            dtype's machine epsilon, torch's default.
        decay_offset: an integer :math:`\ge 0`, the number of updates before the
            decay schedule starts (for fine-tuning); until then :math:`t = 1`
            (:math:`v = g^2`; optax's schedule is NaN there).
        factored: ``False`` keeps every second moment whole (RMSProp with the schedule).
        min_dim_size_to_factor: an integer :math:`\ge 1`: factor a leaf only if both
            of its factored axes are at least this long (a static choice: shapes).
        axes: ``"largest"`` (optax) or ``"last"`` (torch): see :func:`gradxform.factored_axes`.
        eps_mode: ``"add"`` (optax, the paper) or ``"clamp"`` (torch).

    Returns:
        The block; its state is :class:`FactoredRmsState`.

    Raises:
        ValueError, TypeError: for a negative ``decay_rate``, ``eps`` or
            ``decay_offset``, ``min_dim_size_to_factor < 1``, or an unknown mode.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.scale_by_factored_rms(min_dim_size_to_factor=2)
        >>> state = tx.init({"w": jnp.zeros((3, 2))})
        >>> [x.shape for x in (state.v_row["w"], state.v_col["w"])]  # 3 + 2 numbers
        [(2,), (3,)]
        >>> u, _ = tx.update({"w": jnp.full((3, 2), -2.0)}, state)  # t = 1: v = g^2
        >>> u["w"].tolist()[0]
        [-1.0, -1.0]
    """
    checks.boolean("factored", factored)
    min_dim = checks.integer("min_dim_size_to_factor", min_dim_size_to_factor, minimum=1)
    checks.choice("axes", axes, ("largest", "last"))
    clamp = checks.choice("eps_mode", eps_mode, ("add", "clamp")) == "clamp"
    if eps is None and not clamp:
        checks.fail("eps", 'a number when eps_mode="add"', eps)
    specs = {"decay_rate": decay_rate, "decay_offset": decay_offset}
    hp = Hyperparams(**specs, **({} if eps is None else {"eps": eps})).use_count()
    hp.check("decay_rate", lower=0).check("decay_offset", lower=0, integer=True)
    if eps is not None:
        hp.check("eps", lower=0)

    def dims(p):
        return factored_axes(p.shape, min_dim, axes) if factored else None

    def init_fn(params):
        tree.check_params(params)
        leaves, treedef = jax.tree.flatten(params)
        parts = list(zip(*[_init_leaf(p, dims(p)) for p in leaves])) or [(), (), ()]
        trees = [jax.tree.unflatten(treedef, part) for part in parts]
        return FactoredRmsState(*trees, hp.init(params))

    def update_fn(updates, state, params=None, **extra_args):
        del params
        values, hyper = hp.step(state.hyperparams, extra_args)
        decay, complement = _decays(values, "decay_offset", clamp)
        leaves, treedef = jax.tree.flatten(updates)
        moments = [treedef.flatten_up_to(m) for m in state[:3]]
        out = []
        for g, v_row, v_col, v in zip(leaves, *moments):
            eps_leaf = values["eps"] if eps is not None else jnp.finfo(g.dtype).eps
            args = (dims(g), decay, complement, jnp.asarray(eps_leaf), clamp)
            out.append(_update_leaf(g, v_row, v_col, v, *args))
        v_row, v_col, v, direction = (jax.tree.unflatten(treedef, part) for part in zip(*out))
        return direction, FactoredRmsState(v_row, v_col, v, hyper)

    return GradientTransformationExtraArgs(init_fn, update_fn)


def _block_rms(x: jax.Array) -> jax.Array:
    """:math:`\\sqrt{\\mathrm{mean}(|x|^2)}` of one leaf."""
    return jnp.sqrt(jnp.mean(tree.squared_magnitude(x)))


class ClipByBlockRmsState(NamedTuple):
    """State of :func:`clip_by_block_rms`.

    Attributes:
        hyperparams: the block's store of ``threshold`` (``EmptyState()`` for a handle).
    """

    hyperparams: HyperparamState | EmptyState


def clip_by_block_rms(
    threshold: ScalarOrSchedule | Hyperparam = 1.0,
) -> GradientTransformationExtraArgs:
    r"""Adafactor's update clipping: each leaf's RMS at most ``threshold``.

    :math:`u \leftarrow u / \max(1, \mathrm{RMS}(u) / d)` leaf by leaf, with
    :math:`\mathrm{RMS}(u) = \sqrt{\mathrm{mean}(|u|^2)}` (optax's
    ``clip_by_block_rms``, torch's ``d``).

    Args:
        threshold: :math:`d > 0`: a number, a schedule or a handle.

    Returns:
        The block; its state is :class:`ClipByBlockRmsState`.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.clip_by_block_rms(1.0)
        >>> u, _ = tx.update(jnp.array([3.0, -3.0]), tx.init(jnp.zeros(2)))  # RMS 3
        >>> u.tolist()
        [1.0, -1.0]
    """
    hp = Hyperparams(threshold=threshold).check("threshold", lower=0, lower_open=True)

    def apply(updates, values, params):
        def leaf(u):
            d = tree.to_dtype(values["threshold"], tree.real_dtype(u.dtype))
            return u / jnp.maximum(1.0, _block_rms(u) / d)

        return jax.tree.map(leaf, updates)

    return hp.transform(apply, ClipByBlockRmsState)


class ScaleByParamBlockRmsState(NamedTuple):
    """State of :func:`scale_by_param_block_rms`.

    Attributes:
        hyperparams: the block's store of ``min_scale`` (``EmptyState()`` for a handle).
    """

    hyperparams: HyperparamState | EmptyState


def _floored_rms(p: jax.Array, floor: jax.Array) -> jax.Array:
    """``max(RMS(p), floor)`` from one pass over ``p``, with a zero derivative (not NaN)
    below the floor: the guard is on the scalar mean square, not on ``p``."""
    mean_square = jnp.mean(tree.squared_magnitude(p))
    small = jnp.sqrt(mean_square) <= floor
    return jnp.where(small, floor, jnp.sqrt(jnp.where(small, 1, mean_square)))


def scale_by_param_block_rms(
    min_scale: ScalarOrSchedule | Hyperparam = 1e-3,
) -> GradientTransformationExtraArgs:
    r"""Scales each leaf's update by its parameter's RMS: a step relative to the weights.

    :math:`u \leftarrow u \cdot \max(\mathrm{RMS}(x), s)` leaf by leaf
    (optax's ``scale_by_param_block_rms``; torch's :math:`\epsilon_2`).

    Args:
        min_scale: :math:`s \ge 0`, the scale of a leaf whose RMS is smaller
            (a zero-initialised bias still moves): a number, a schedule or a handle.

    Returns:
        The block; its state is :class:`ScaleByParamBlockRmsState`. Its update needs ``params``.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.scale_by_param_block_rms()
        >>> x = {"w": jnp.array([3.0, -3.0]), "b": jnp.zeros(2)}
        >>> u, _ = tx.update({"w": jnp.ones(2), "b": jnp.ones(2)}, tx.init(x), x)
        >>> u["w"].tolist(), u["b"].tolist()
        ([3.0, 3.0], [0.0010000000474974513, 0.0010000000474974513])
    """
    hp = Hyperparams(min_scale=min_scale).check("min_scale", lower=0)

    def apply(updates, values, params):
        if params is None:
            checks.fail("params", "given (scale_by_param_block_rms' update needs params)", params)
        tree.check_structure(params, updates, "params", "updates")

        def leaf(u, p):
            return u * _floored_rms(p, tree.to_dtype(values["min_scale"], tree.real_dtype(p.dtype)))

        return jax.tree.map(leaf, updates, params)

    return hp.transform(apply, ScaleByParamBlockRmsState)


class ScaleByRelativeStepState(NamedTuple):
    """State of :func:`scale_by_relative_step`.

    Attributes:
        hyperparams: the block's store of ``learning_rate`` (``EmptyState()`` for
            a handle) and the step count.
    """

    hyperparams: HyperparamState | EmptyState


def scale_by_relative_step(
    learning_rate: ScalarOrSchedule | Hyperparam = 1e-2,
) -> GradientTransformationExtraArgs:
    r"""Caps the learning rate that follows at :math:`1/\sqrt{t}`: the paper's relative step.

    :math:`u \leftarrow \min(1, 1 / (\eta \sqrt{t}))\, u` at update :math:`t`, so
    that a following :func:`gradxform.scale_by_learning_rate` with the same
    :math:`\eta` steps by :math:`\rho_t = \min(\eta, 1/\sqrt{t})` (Shazeer & Stern's
    relative step size with :math:`\eta = 0.01`; torch's ``lr``), while weight
    decay added in between is still multiplied by :math:`\eta` (torch's order).

    Args:
        learning_rate: :math:`\eta \ge 0`: a number, a schedule or a handle.

    Returns:
        The block; its state is :class:`ScaleByRelativeStepState`.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.scale_by_relative_step(1.0)
        >>> state = tx.init(jnp.zeros(1))
        >>> for _ in range(4):  # t = 4: min(1, 1 / (1 * 2))
        ...     u, state = tx.update(jnp.ones(1), state)
        >>> float(u[0])
        0.5
    """
    hp = Hyperparams(learning_rate=learning_rate).check("learning_rate", lower=0).use_count()

    def apply(updates, values, params):
        root = jnp.sqrt(jnp.asarray(values.count, values["learning_rate"].dtype))
        factor = jnp.minimum(1.0, 1.0 / (values["learning_rate"] * root))
        return tree.scale(factor, updates)

    return hp.transform(apply, ScaleByRelativeStepState)
