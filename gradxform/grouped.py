r"""Grouped optimizer state: the leaves of a many-leaf model packed into a few buffers.

``grouped(tx)`` runs an elementwise transform ``tx`` (SGD, momentum, Adam,
RMSProp, ... and chains of elementwise blocks) on the parameters packed by
(dtype, sharding) group, so that its state holds a few large buffers instead
of one array per parameter, and each update is a few large kernels instead of
a few small ones per parameter. The updates it returns are per parameter, as
``tx``'s are, and the same (see Exactness)::

    tx = gx.grouped(gx.adam(1e-3))
    state = tx.init(params)                       # a GroupedState
    updates, state = tx.update(grads, state, params)
    params = gx.apply_updates(params, updates)

Layout. The leaves of each (dtype, sharding) group are packed, in tree order,
into :math:`\lceil n / k \rceil` flat buffers ("blocks") of
:math:`k = \lceil \sqrt{n} \rceil` consecutive leaves, for a group of
:math:`n` leaves. One buffer per group would be the fewest kernels, but then
the per-leaf slices that hand each parameter its update sit at distinct
offsets of one buffer, and XLA compiles each as its own kernel (1,000 leaves:
85 s of compilation, measured); blocks of equal composition share their kernels, so a
model of repeated layers compiles about :math:`2 \sqrt{n}` distinct kernels.
A leaf of ``pack_below`` elements or more (default :math:`2^{13}`) is its own
block, kept as it is: a leaf is worth packing only while kernel launches, not
memory traffic, dominate its update (packed, 1,000 leaves of 16K floats took
three times optax's step; see the user guide).

Sharding. A group is packed per device (``jax.shard_map``): each device
concatenates its local shards, and the buffer is sharded along its one axis
over the mesh axes the group's partition spec names, so packing, the update
and unpacking run without any collective. Leaves whose sharding is not a
``NamedSharding`` or does not divide their shape evenly are their own blocks.
The layout is fixed by ``init`` from the parameters' shardings; under a traced
``init`` (inside ``jit``) shardings are unknown, and leaves are grouped by
dtype alone.

Exactness. Elementwise transforms compute each coordinate from that
coordinate alone, so packing does not change what they compute. In floating
point the results match ``tx``'s within a few units in the last place, and
mostly bit for bit: XLA:CPU contracts ``a * b + c * d`` into a fused
multiply-add, and which product it fuses can differ between its vector loop
and its scalar remainder, so a coordinate's last bit can depend on where it
sits in a buffer (as between shards). Transforms that reduce over leaves
(global-norm clipping, trust ratios, line searches, second-order methods) or
treat leaves differently (weight-decay masks) are not elementwise: ``init``
refuses gradxform's global-norm clipping, line searches and second-order
transforms; others are the caller's responsibility.

Views and checkpoints. :func:`ungroup_state` returns the state ``tx`` itself
would hold, per parameter; :func:`group_state` packs such a state back.
:func:`gradxform.checkpoint.save` writes the per-parameter form, and
:func:`gradxform.checkpoint.restore` reads it into either layout.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec

from gradxform import checks, tree
from gradxform.base import (
    GradientTransformation,
    GradientTransformationExtraArgs,
    OptState,
    with_extra_args,
)
from gradxform.hyperparams.store import Constant
from gradxform.second_order.linesearch import ScaleByLinesearchState
from gradxform.second_order.transforms import SecondOrderState
from gradxform.transforms.clipping import ClipByGlobalNormState

__all__ = ["GroupedLeaves", "GroupedState", "group_state", "grouped", "ungroup_state"]

# States of blocks whose update is not elementwise: grouped, they would not be exact.
_NOT_ELEMENTWISE = (ClipByGlobalNormState, SecondOrderState, ScaleByLinesearchState)


class _Block:
    """Leaves packed into one buffer, or one leaf kept as it is (``packed=False``).

    ``sharding`` is the group's ``NamedSharding`` when the block is packed per
    device, else ``None``; ``local_shapes`` are the leaves' shapes on one device.
    """

    def __init__(self, leaves, local_shapes, packed: bool, sharding: NamedSharding | None):
        self.leaves: tuple[int, ...] = tuple(leaves)
        self.local_shapes: tuple[tuple[int, ...], ...] = tuple(map(tuple, local_shapes))
        self.packed, self.sharding = packed, sharding
        sizes = [math.prod(shape) for shape in self.local_shapes]
        self.offsets: tuple[int, ...] = tuple(np.cumsum([0, *sizes]).tolist())
        self._key = (self.leaves, self.local_shapes, packed, sharding)

    def __eq__(self, other):
        return isinstance(other, _Block) and self._key == other._key

    def __hash__(self):
        return hash(self._key)

    @functools.cached_property
    def _buffer_spec(self) -> PartitionSpec:
        """The buffer's spec: its one axis over the mesh axes the leaves' spec names."""
        assert self.sharding is not None
        axes = [a for entry in self.sharding.spec for a in _axes(entry)]
        return PartitionSpec(tuple(axes)) if axes else PartitionSpec()

    def pack(self, xs: Sequence[jax.Array]) -> jax.Array:
        if not self.packed:
            return jnp.asarray(xs[0])
        if self.sharding is None:
            return _concatenate(xs)
        return self._sharded_pack(*xs)

    def unpack(self, buffer: jax.Array) -> list[jax.Array]:
        if not self.packed:
            return [buffer]
        if self.sharding is None:
            return _slices(buffer, self.offsets, self.local_shapes)
        return list(self._sharded_unpack(buffer))

    @functools.cached_property
    def _sharded_pack(self):
        spec = self.sharding.spec
        return jax.shard_map(
            lambda *xs: _concatenate(xs),
            mesh=self.sharding.mesh,
            in_specs=(spec,) * len(self.leaves),
            out_specs=self._buffer_spec,
        )

    @functools.cached_property
    def _sharded_unpack(self):
        spec = self.sharding.spec
        return jax.shard_map(
            lambda b: tuple(_slices(b, self.offsets, self.local_shapes)),
            mesh=self.sharding.mesh,
            in_specs=self._buffer_spec,
            out_specs=(spec,) * len(self.leaves),
        )


def _axes(entry) -> tuple:
    """The mesh axes one entry of a partition spec names."""
    if entry is None:
        return ()
    return tuple(entry) if isinstance(entry, tuple) else (entry,)


def _concatenate(xs: Sequence[jax.Array]) -> jax.Array:
    """The leaves raveled and concatenated, as bits: XLA cannot then move a dtype
    conversion of the consumers into the concatenation, which changes how it
    compiles them (which multiply-adds it contracts) from the ungrouped form."""
    dtype = jnp.result_type(xs[0])
    if dtype.kind == "c":  # no unsigned integer of a complex dtype's width
        return jnp.concatenate([jnp.ravel(x) for x in xs])
    bits = jnp.dtype(f"uint{8 * dtype.itemsize}")
    flat = [jax.lax.bitcast_convert_type(jnp.ravel(x), bits) for x in xs]
    return jax.lax.bitcast_convert_type(jnp.concatenate(flat), dtype)


def _slices(buffer: jax.Array, offsets: Sequence[int], shapes: Sequence[tuple]) -> list[jax.Array]:
    """The leaves of a packed buffer: static slices when traced (each block
    composition compiles once), runtime-offset slices when run op by op (one
    executable per leaf size, not per offset)."""
    if isinstance(buffer, jax.core.Tracer):
        return [buffer[a:b].reshape(s) for a, b, s in zip(offsets, offsets[1:], shapes)]
    return [
        jax.lax.dynamic_slice_in_dim(buffer, a, b - a).reshape(s)
        for a, b, s in zip(offsets, offsets[1:], shapes)
    ]


class _Layout:
    """Where each leaf of the parameters lives: the static part of a grouped tree.

    Attributes:
        treedef: the parameters' tree structure.
        shapes, dtypes: each leaf's global shape and dtype, in tree order.
        blocks: the buffers, in order.
    """

    def __init__(self, treedef, shapes, dtypes, blocks: tuple[_Block, ...]):
        self.treedef, self.shapes, self.dtypes, self.blocks = treedef, shapes, dtypes, blocks
        self._key = (treedef, shapes, dtypes, blocks)
        self._hash = hash(self._key)

    def __eq__(self, other):
        return self is other or (
            isinstance(other, _Layout) and self._hash == other._hash and self._key == other._key
        )

    def __hash__(self):
        return self._hash

    def __repr__(self):
        return f"<{len(self.shapes)} leaves in {len(self.blocks)} buffers>"

    def pack(self, values: Any, name: str) -> GroupedLeaves:
        """``values`` (shaped like the parameters) packed into this layout's buffers."""
        leaves, treedef = jax.tree.flatten(values)
        shapes = tuple(tuple(jnp.shape(x)) for x in leaves)
        if treedef != self.treedef or shapes != self.shapes:
            like = self.treedef.unflatten(
                jax.ShapeDtypeStruct(s, d) for s, d in zip(self.shapes, self.dtypes)
            )
            tree.check_structure(like, values, "params (as at init)", name)
        buffers = []
        for block in self.blocks:
            xs = [leaves[i] for i in block.leaves]
            if len({jnp.result_type(x) for x in xs}) > 1:
                found = sorted({str(jnp.result_type(x)) for x in xs})
                checks.fail(name, "of one dtype within each group of parameters", found, TypeError)
            buffers.append(block.pack(xs))
        return GroupedLeaves(tuple(buffers), self)

    def unpack(self, grouped: GroupedLeaves) -> Any:
        """The per-leaf tree of a grouped tree of this layout."""
        leaves: list[Any] = [None] * len(self.shapes)
        for block, buffer in zip(self.blocks, grouped.buffers):
            for i, x in zip(block.leaves, block.unpack(buffer)):
                leaves[i] = x
        return self.treedef.unflatten(leaves)


@jax.tree_util.register_pytree_with_keys_class
class GroupedLeaves:
    """A tree shaped like the parameters, packed: one buffer per block of a group.

    A pytree node whose children are the buffers and whose static data is the
    layout, so elementwise tree functions (``jax.tree.map``,
    :func:`gradxform.tree.zeros_like`, ...) act on the buffers. Made by
    :func:`grouped`; read per parameter with :func:`ungroup_state`.

    Args:
        buffers: the packed arrays, one per block.
        layout: where each parameter lives (static).

    Attributes:
        buffers: the packed arrays, one per block.
        layout: where each parameter lives (static).
    """

    def __init__(self, buffers: tuple, layout: _Layout):
        self.buffers, self.layout = tuple(buffers), layout

    def __repr__(self):
        return f"GroupedLeaves({self.layout!r})"

    def tree_flatten_with_keys(self):
        keys = (jax.tree_util.SequenceKey(i) for i in range(len(self.buffers)))
        return tuple(zip(keys, self.buffers)), self.layout

    def tree_flatten(self):
        return self.buffers, self.layout

    @classmethod
    def tree_unflatten(cls, layout, buffers):
        return cls(tuple(buffers), layout)


@jax.tree_util.register_pytree_with_keys_class
class GroupedState:
    """State of :func:`grouped`: the inner transform's state, on packed parameters.

    Every tree of the inner state shaped like the parameters (moments,
    velocities) is a :class:`GroupedLeaves`; :func:`ungroup_state` gives the
    per-parameter view.

    Args:
        inner: the inner transform's state.
        layout: where each parameter lives (static, fixed by ``init``).

    Attributes:
        inner: the inner transform's state.
        layout: where each parameter lives (static, fixed by ``init``).
    """

    def __init__(self, inner: OptState, layout: _Layout):
        self.inner, self.layout = inner, layout

    def __repr__(self):
        return f"GroupedState(inner={self.inner!r}, layout={self.layout!r})"

    def tree_flatten_with_keys(self):
        return ((jax.tree_util.GetAttrKey("inner"), self.inner),), self.layout

    def tree_flatten(self):
        return (self.inner,), self.layout

    @classmethod
    def tree_unflatten(cls, layout, children):
        return cls(children[0], layout)


def _group_key(leaf: Any) -> tuple[Any, NamedSharding | None, bool]:
    """``(placement, sharding to pack per device, whether it can be packed)``."""
    if isinstance(leaf, jax.core.Tracer) or not isinstance(leaf, jax.Array):
        return None, None, True
    sharding = leaf.sharding
    if len(sharding.device_set) == 1:
        return sharding, None, True
    if not isinstance(sharding, NamedSharding):
        return sharding, None, False
    mesh_shape = sharding.mesh.shape
    even = all(
        dim % math.prod(mesh_shape[a] for a in _axes(entry)) == 0
        for dim, entry in zip(leaf.shape, sharding.spec)
    )
    return sharding, sharding, even


def _layout(params: Any, leaves_per_block: int | None, pack_below: int) -> _Layout:
    leaves, treedef = jax.tree.flatten(params)
    groups: dict[tuple, list[int]] = {}
    solo: list[tuple[int, Any]] = []
    for i, leaf in enumerate(leaves):
        placement, sharding, packable = _group_key(leaf)
        local = sharding.shard_shape(leaf.shape) if sharding is not None else leaf.shape
        if not packable or math.prod(local) >= pack_below:
            solo.append((i, _Block([i], [leaf.shape], False, None)))
            continue
        groups.setdefault((jnp.result_type(leaf), placement, sharding), []).append(i)
    blocks = list(solo)
    for (_, _, sharding), members in groups.items():
        size = leaves_per_block or math.ceil(math.sqrt(len(members)))
        for start in range(0, len(members), size):
            chunk = members[start : start + size]
            local = [leaves[i].shape for i in chunk]
            if sharding is not None:
                local = [sharding.shard_shape(s) for s in local]
            blocks.append((chunk[0], _Block(chunk, local, len(chunk) > 1, sharding)))
    blocks.sort(key=lambda pair: pair[0])
    shapes = tuple(tuple(jnp.shape(x)) for x in leaves)
    dtypes = tuple(np.dtype(jnp.result_type(x)) for x in leaves)
    return _Layout(treedef, shapes, dtypes, tuple(block for _, block in blocks))


def _refuse_not_elementwise(inner_state: Any) -> None:
    nodes = jax.tree.leaves(inner_state, is_leaf=lambda x: isinstance(x, _NOT_ELEMENTWISE))
    for node in nodes:
        if isinstance(node, _NOT_ELEMENTWISE):
            checks.fail(
                "tx",
                "elementwise to be grouped (each coordinate's update computed from that "
                "coordinate alone; a global norm, line search or second-order model reduces "
                "over all parameters)",
                f"a transform holding a {type(node).__name__}",
            )


def grouped(
    tx: GradientTransformation, *, leaves_per_block: int | None = None, pack_below: int = 2**13
) -> GradientTransformationExtraArgs:
    r"""``tx`` run on the parameters packed into a few buffers per (dtype, sharding) group.

    The updates are ``tx``'s when ``tx`` is elementwise, to the last bit or
    within a few units in the last place (see :mod:`gradxform.grouped`); the
    state is a :class:`GroupedState`, read per parameter with
    :func:`ungroup_state`. It pays on models of many small
    leaves, where a step is dominated by per-leaf kernel launches (see the
    user guide's "Grouped state" page).

    Args:
        tx: an elementwise transform (a gradxform or optax transform).
        leaves_per_block: leaves packed into each buffer; ``None``:
            :math:`\lceil \sqrt{n} \rceil` for a group of :math:`n` leaves.
        pack_below: leaves with this many elements or more (per device) keep
            their own buffer, unpacked.

    Returns:
        The grouped transform. Its ``init`` fixes the layout from the
        parameters (their dtypes, shapes and shardings) and raises
        ``ValueError`` for a ``tx`` holding global-norm clipping, a line
        search or a second-order model; its ``update`` takes and returns
        per-parameter trees.

    Raises:
        TypeError: if ``tx`` is not a ``GradientTransformation``, or an option
            is not an integer.
        ValueError: for an option below 1.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> params = {"w": jnp.ones(3), "b": jnp.zeros(())}
        >>> tx = gx.grouped(gx.adam(0.1))
        >>> state = tx.init(params)
        >>> updates, state = tx.update({"w": jnp.ones(3), "b": jnp.ones(())}, state, params)
        >>> [round(float(u), 4) for u in updates["w"]], round(float(updates["b"]), 4)
        ([-0.1, -0.1, -0.1], -0.1)
        >>> gx.ungroup_state(state).hyperparams.count.tolist()  # adam's own state
        1
    """
    if not isinstance(tx, optax.GradientTransformation):
        checks.fail(
            "tx", "a GradientTransformation (a gradxform or optax transform)", tx, TypeError
        )
    if leaves_per_block is not None:
        leaves_per_block = checks.integer("leaves_per_block", leaves_per_block, minimum=1)
    pack_below = checks.integer("pack_below", pack_below, minimum=1)
    inner = with_extra_args(tx)

    def init_fn(params):
        tree.check_params(params)
        layout = _layout(params, leaves_per_block, pack_below)
        inner_state = inner.init(layout.pack(params, "params"))
        _refuse_not_elementwise(inner_state)
        return GroupedState(inner_state, layout)

    def update_fn(updates, state, params=None, **extra_args):
        if not isinstance(state, GroupedState):
            checks.fail("state", "the GroupedState that grouped(tx).init returns", state, TypeError)
        layout = state.layout
        packed_params = None if params is None else layout.pack(params, "params")
        packed, inner_state = inner.update(
            layout.pack(updates, "updates"), state.inner, packed_params, **extra_args
        )
        if not isinstance(packed, GroupedLeaves) or packed.layout != layout:
            checks.fail("tx", "elementwise (updates shaped like its input)", packed, TypeError)
        return layout.unpack(packed), GroupedState(inner_state, layout)

    return GradientTransformationExtraArgs(init_fn, update_fn)


def _is_grouped_state(x: Any) -> bool:
    return isinstance(x, GroupedState)


def _is_grouped_leaves(x: Any) -> bool:
    return isinstance(x, GroupedLeaves)


def _ungroup_one(node: Any) -> Any:
    if not isinstance(node, GroupedState):
        return node

    def view(x):
        return x.layout.unpack(x) if isinstance(x, GroupedLeaves) else x

    return jax.tree.map(view, node.inner, is_leaf=_is_grouped_leaves)


def ungroup_state(state: Any) -> Any:
    """The per-parameter view of a state holding :class:`GroupedState` nodes.

    Args:
        state: a state of :func:`grouped` (or any pytree holding such states,
            e.g. an ``optax.chain`` state).

    Returns:
        ``state`` with each :class:`GroupedState` replaced by its inner
        transform's state, each packed tree unpacked per parameter: the
        structure, shapes, dtypes and shardings the ungrouped transform's
        state has, holding the packed values bit for bit.

    Example:
        >>> import gradxform as gx, jax, jax.numpy as jnp
        >>> params = {"w": jnp.ones(2), "b": jnp.ones(())}
        >>> state = gx.ungroup_state(gx.grouped(gx.sgd(0.1, 0.9)).init(params))
        >>> jax.tree.structure(state) == jax.tree.structure(gx.sgd(0.1, 0.9).init(params))
        True
    """
    return jax.tree.map(_ungroup_one, state, is_leaf=_is_grouped_state)


def _grouped_leaves_or_constant(x: Any) -> bool:
    # a Constant (constant_hyperparams) is taken from ``state``, its value as the state holds it
    return _is_grouped_leaves(x) or isinstance(x, Constant)


def _grouped_state_or_constant(x: Any) -> bool:
    return _is_grouped_state(x) or isinstance(x, Constant)


def _group_one(state: Any, like: GroupedState) -> GroupedState:
    inner_def = jax.tree.structure(like.inner, is_leaf=_grouped_leaves_or_constant)
    try:
        parts = inner_def.flatten_up_to(state)  # type: ignore[attr-defined]
    except (ValueError, TypeError) as error:
        checks.fail("state", "structured as ungroup_state(like)", f"{error}", ValueError)
    like_parts = jax.tree.leaves(like.inner, is_leaf=_grouped_leaves_or_constant)
    packed = [
        node.layout.pack(part, "state") if isinstance(node, GroupedLeaves) else part
        for part, node in zip(parts, like_parts)
    ]
    return GroupedState(jax.tree.unflatten(inner_def, packed), like.layout)


def group_state(state: Any, like: Any) -> Any:
    """Packs a per-parameter state into the layout of ``like`` (inverts :func:`ungroup_state`).

    Args:
        state: the ungrouped state (e.g. ``tx.init(params)`` after some
            updates, or ``ungroup_state(s)``).
        like: a grouped state of the same transform, most simply
            ``grouped(tx).init(params)``; it gives the layout.

    Returns:
        ``state`` with each subtree at a :class:`GroupedState` of ``like``
        packed into that node's layout.

    Raises:
        ValueError: if ``state`` is not structured as ``ungroup_state(like)``.

    Example:
        >>> import gradxform as gx, jax, jax.numpy as jnp
        >>> params = {"w": jnp.ones(2)}
        >>> like = gx.grouped(gx.adam(0.1)).init(params)
        >>> state = gx.group_state(gx.adam(0.1).init(params), like)
        >>> jax.tree.structure(state) == jax.tree.structure(like)
        True
    """
    like_def = jax.tree.structure(like, is_leaf=_grouped_state_or_constant)
    try:
        parts = like_def.flatten_up_to(state)  # type: ignore[attr-defined]
    except (ValueError, TypeError) as error:
        checks.fail("state", "structured as ungroup_state(like)", f"{error}", ValueError)
    like_parts = jax.tree.leaves(like, is_leaf=_grouped_state_or_constant)
    grouped_parts = [
        _group_one(part, node) if isinstance(node, GroupedState) else part
        for part, node in zip(parts, like_parts)
    ]
    return jax.tree.unflatten(like_def, grouped_parts)
