"""Parameter groups: a transform per group of leaves, masking, freezing.

A *label* names the group of a parameter leaf. :func:`partition` runs one
transform per label, each on its group's leaves only; :func:`masked` runs a
transform on some leaves and passes the others through; :func:`freeze` trains
some leaves with a transform and holds the others still. A transform never
sees the other groups' leaves: they are replaced by ``optax.MaskedNode()``, a
pytree node with no leaves, so its state holds no buffer for them (as in
``optax.masked``).

The forms labels take, and the errors they raise, are :func:`partition`'s;
masks and ``frozen`` take the same forms with booleans as labels.
"""

from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import numpy as np
import optax

from gradxform import checks, tree
from gradxform.base import (
    EmptyState,
    GradientTransformation,
    GradientTransformationExtraArgs,
    with_extra_args,
)

__all__ = ["MaskedState", "PartitionState", "freeze", "masked", "partition", "set_to_zero"]


def _path_string(path: tuple) -> str:
    """A key path as ``/``-joined keys: ``(DictKey('a'), SequenceKey(0))`` -> ``'a/0'``."""
    parts = []
    for key in path:
        for field in ("key", "idx", "name"):
            if hasattr(key, field):
                parts.append(str(getattr(key, field)))
                break
        else:
            parts.append(str(key))
    return "/".join(parts)


def _glob_match(pattern: str, path: str) -> bool:
    """Whether ``pattern`` matches ``path`` or the path of a subtree holding it."""
    parts = path.split("/")
    return any(fnmatch.fnmatchcase("/".join(parts[:n]), pattern) for n in range(len(parts), 0, -1))


def _takes_path(fn: Callable) -> bool:
    """Whether ``fn`` takes ``(key_path, leaf)`` (two required positional arguments)."""
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    required = [p for p in parameters if p.kind in positional and p.default is p.empty]
    return len(required) >= 2


class _Kind(NamedTuple):
    """What a label spec holds: ``name`` in messages, ``what`` a label must be, its check."""

    name: str
    what: str
    check: Callable[[Any], Any]  # the label in canonical form, or raises TypeError/ValueError


def _is_glob_table(spec: Any, params: Any) -> bool:
    if not isinstance(spec, Mapping) or not spec or not all(isinstance(k, str) for k in spec):
        return False
    if any(isinstance(v, (Mapping, list, tuple)) for v in spec.values()):
        return False
    return params is None or not (isinstance(params, Mapping) and set(spec) == set(params))


def _check_label(kind: _Kind, where: str, label: Any) -> Any:
    try:
        return kind.check(label)
    except (TypeError, ValueError):
        checks.fail(f"{kind.name} at {where}", kind.what, label)


def _glob_labels(spec: Mapping, paths: list[str], kind: _Kind) -> list[Any]:
    out = []
    for path in paths:
        label = next((v for p, v in spec.items() if _glob_match(p, path)), _UNMATCHED)
        if label is _UNMATCHED:
            raise ValueError(
                f"{kind.name} must match every parameter; no pattern matches the leaf at "
                f"{path!r} (patterns: {', '.join(map(repr, spec))}; a catch-all '*' last "
                "labels the rest)"
            )
        out.append(label)
    return out


_UNMATCHED = object()


def _prefix_labels(spec: Any, params: Any, kind: _Kind) -> list[Any]:
    """The labels of a label pytree (a prefix of ``params``), broadcast to every leaf."""
    spec_leaves, spec_def = jax.tree.flatten(spec)
    try:
        subtrees = spec_def.flatten_up_to(params)  # type: ignore[attr-defined]  # untyped
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"{kind.name} must be a pytree of labels with the structure of params or a "
            f"prefix of it (or a dict of glob patterns, or a function); got {spec!r}, "
            f"which does not fit params: {error}"
        ) from None
    return [label for label, sub in zip(spec_leaves, subtrees) for _ in jax.tree.leaves(sub)]


def _leaf_labels(spec: Any, params: Any, kind: _Kind) -> tuple[list[Any], list[str]]:
    """Every leaf's label, in ``jax.tree.leaves(params)`` order, checked; and the leaf paths."""
    with_paths = jax.tree_util.tree_flatten_with_path(params)[0]
    paths = [_path_string(path) for path, _ in with_paths]
    if _is_glob_table(spec, params):
        labels = _glob_labels(spec, paths, kind)
    elif callable(spec) and _takes_path(spec):
        labels = [spec(path, leaf) for path, leaf in with_paths]
    else:
        labels = _prefix_labels(spec(params) if callable(spec) else spec, params, kind)
    return [_check_label(kind, repr(p), label) for p, label in zip(paths, labels)], paths


def _check_spec(spec: Any, kind: _Kind) -> None:
    """Checks a label spec when the transform is built (what can be known without params)."""
    if spec is None or (isinstance(spec, Mapping) and not spec):
        checks.fail(kind.name, "a pytree of labels, a dict of glob patterns or a function", spec)
    if callable(spec):
        return
    for path, label in jax.tree_util.tree_flatten_with_path(spec)[0]:
        _check_label(kind, repr(_path_string(path)) if path else "<root>", label)


def _select(leaves: list[Any], treedef: Any, labels: list[Any], group: Any) -> Any:
    """The tree with the leaves not labelled ``group`` replaced by ``optax.MaskedNode()``."""
    kept = [leaf if label == group else optax.MaskedNode() for leaf, label in zip(leaves, labels)]
    return jax.tree.unflatten(treedef, kept)


def _run_groups(transforms, states, labels, updates, params, extra_args):
    """Runs each group's transform on its leaves; returns the merged updates and new states."""
    leaves, treedef = jax.tree.flatten(updates)
    param_leaves = None if params is None else treedef.flatten_up_to(params)
    out, new_states = list(leaves), {}
    for group, tx in transforms.items():
        group_updates = _select(leaves, treedef, labels, group)
        group_params = None if params is None else _select(param_leaves, treedef, labels, group)
        new, new_states[group] = tx.update(group_updates, states[group], group_params, **extra_args)
        tree.check_structure(group_updates, new, "updates", f"the output of group {group!r}")
        positions = [i for i, label in enumerate(labels) if label == group]
        for i, leaf in zip(positions, jax.tree.leaves(new)):
            out[i] = leaf
    return jax.tree.unflatten(treedef, out), new_states


class PartitionState(NamedTuple):
    """State of :func:`partition` (and of :func:`freeze`).

    Attributes:
        inner_states: label -> the state of that group's transform, which holds
            buffers for the group's leaves only.
    """

    inner_states: dict[str, Any]


def _label_kind(labels: Any) -> _Kind:
    def check(label):
        if not isinstance(label, str) or label not in labels:
            raise ValueError
        return label

    what = "one of the transforms' labels (" + ", ".join(map(repr, labels)) + ")"
    return _Kind("labels", what, check)


def _partition(transforms: dict, labels: Any, kind: _Kind, require_used: bool):
    def resolve(tree_):
        found, _ = _leaf_labels(labels, tree_, kind)
        unused = [g for g in transforms if g not in found]
        if require_used and unused:
            raise ValueError(
                f"transforms must each label some parameter; no leaf is labelled "
                f"{unused[0]!r} (labels used: {', '.join(map(repr, sorted(set(found))))})"
            )
        return found

    def init_fn(params):
        found = resolve(params)
        leaves, treedef = jax.tree.flatten(params)
        return PartitionState(
            {g: tx.init(_select(leaves, treedef, found, g)) for g, tx in transforms.items()}
        )

    def update_fn(updates, state, params=None, **extra_args):
        found = resolve(updates)
        out, new_states = _run_groups(
            transforms, state.inner_states, found, updates, params, extra_args
        )
        return out, PartitionState(new_states)

    return GradientTransformationExtraArgs(init_fn, update_fn)


def partition(
    transforms: Mapping[str, GradientTransformation],
    labels: Any,
    *,
    allow_empty_groups: bool = False,
) -> GradientTransformationExtraArgs:
    """Applies a different transform to each group of parameters.

    Each leaf's label names the transform that updates it; a transform sees
    only its group's leaves (the others are ``optax.MaskedNode()``) and holds
    state for them only, so group ``a`` moves as ``tx_a`` alone would move
    those leaves. Hyperparameters are addressable by group:
    ``gx.set_hyperparams(state, group="embed", learning_rate=1e-4)``,
    ``gx.get_hyperparams(state)["embed"]``. Labels take these forms:

    * glob patterns on *path strings*, ``{"*/bias": "no_decay", "embed/*":
      "embed", "*": "rest"}``: the first pattern (in the dict's order)
      matching the path of the leaf or of a subtree holding it gives the label.
      A path string is the tree path's keys (dict keys, sequence indices,
      attribute names) joined by ``/``: ``layers/0/w``. Matching is
      :mod:`fnmatch`'s (case sensitive; ``*`` also matches ``/``).
    * a pytree of labels with the params' structure or a prefix of it, as in
      ``optax.partition`` (a dict of labels whose keys are exactly the params'
      top-level keys is read so; both readings agree there);
    * a function of the params returning such a pytree (one argument), or of
      ``(key_path, leaf)`` returning a leaf's label (two arguments).

    Labels are resolved at the first ``init``; extra arguments of ``update``
    (``value=``, ...) reach every group's transform unchanged.

    Args:
        transforms: label -> transform (gradxform or optax). Labels are
            non-empty strings without ``.`` (which separates the names of
            nested groups in :func:`gradxform.get_hyperparams`).
        labels: a pytree of labels (the params' structure or a prefix), a
            function of the params returning one, a function of
            ``(key_path, leaf)`` returning a label, or a dict of glob patterns
            on path strings (first match wins) to labels.
        allow_empty_groups: accept a transform that labels no leaf (its state
            then holds nothing); by default that is an error, since it is
            usually a misspelt pattern.

    Returns:
        The partitioned transform; its state is :class:`PartitionState`.

    Raises:
        ValueError: when built, for an empty ``transforms``, a label that is
            not a string without ``.``, or a label in ``labels`` with no
            transform; at the first ``init``, naming the path of a leaf no
            pattern matches or whose label has no transform, or a transform
            that labels no leaf (unless ``allow_empty_groups``).
        TypeError: when built, for a value of ``transforms`` that is not a transform.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> params = {"embed": {"w": jnp.ones(2)}, "head": {"w": jnp.ones(2), "bias": jnp.ones(1)}}
        >>> tx = gx.partition(
        ...     {"embed": gx.sgd(0.1), "no_decay": gx.sgd(1.0), "rest": gx.adamw(0.1)},
        ...     {"embed/*": "embed", "*/bias": "no_decay", "*": "rest"},
        ... )
        >>> state = tx.init(params)
        >>> state = gx.set_hyperparams(state, group="embed", learning_rate=0.5)
        >>> float(gx.get_hyperparams(state)["embed"]["learning_rate"])
        0.5
        >>> updates, state = tx.update(params, state, params)
        >>> updates["embed"]["w"].tolist(), updates["head"]["bias"].tolist()
        ([-0.5, -0.5], [-1.0])
    """
    if not isinstance(transforms, Mapping) or not transforms:
        checks.fail("transforms", "a non-empty dict of label -> transform", transforms)
    for label, tx in transforms.items():
        if not isinstance(label, str) or not label or "." in label:
            checks.fail("each label of transforms", "a non-empty string without '.'", label)
        if not isinstance(tx, optax.GradientTransformation):
            checks.fail(f"transforms[{label!r}]", "a gradxform or optax transform", tx, TypeError)
    parts = {label: with_extra_args(tx) for label, tx in transforms.items()}
    kind = _label_kind(parts)
    _check_spec(labels, kind)
    allow_empty = checks.boolean("allow_empty_groups", allow_empty_groups)
    return _partition(parts, labels, kind, require_used=not allow_empty)


def _bool_label(value: Any) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if getattr(value, "dtype", None) == np.bool_ and getattr(value, "shape", None) == ():
        return bool(value)  # a concrete 0-d boolean array
    raise TypeError


_MASK = _Kind("mask", "True or False", _bool_label)


class MaskedState(NamedTuple):
    """State of :func:`masked`.

    Attributes:
        inner_state: the wrapped transform's state, holding buffers for the
            selected leaves only.
    """

    inner_state: Any


def masked(tx: GradientTransformation, mask: Any) -> GradientTransformationExtraArgs:
    """Applies ``tx`` to the leaves the mask selects; the others pass through unchanged.

    ``tx`` sees the selected leaves only (the others are ``optax.MaskedNode()``)
    and holds state for them only. The same as ``optax.masked``.

    Args:
        tx: the transform to apply (gradxform or optax).
        mask: ``True`` for the leaves to transform: a pytree of bools (the
            params' structure or a prefix), a function of the params returning
            one, a function of ``(key_path, leaf)`` returning a bool, or a dict
            of glob patterns on path strings to bools (first match wins; the
            forms of :func:`partition`'s labels).

    Returns:
        The masked transform; its state is :class:`MaskedState`.

    Raises:
        ValueError: when built, for an empty mask or a mask leaf that is not a
            bool; at the first ``init``, naming the path of a leaf the mask
            does not cover.
        TypeError: when built, if ``tx`` is not a transform.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> params = {"w": jnp.ones(2), "b": jnp.ones(1)}
        >>> tx = gx.masked(gx.scale(10.0), {"w": True, "b": False})
        >>> updates, state = tx.update(params, tx.init(params))
        >>> updates["w"].tolist(), updates["b"].tolist()
        ([10.0, 10.0], [1.0])
    """
    if not isinstance(tx, optax.GradientTransformation):
        checks.fail("tx", "a gradxform or optax transform", tx, TypeError)
    inner = with_extra_args(tx)
    _check_spec(mask, _MASK)

    def init_fn(params):
        flags, _ = _leaf_labels(mask, params, _MASK)
        leaves, treedef = jax.tree.flatten(params)
        return MaskedState(inner.init(_select(leaves, treedef, flags, True)))

    def update_fn(updates, state, params=None, **extra_args):
        flags, _ = _leaf_labels(mask, updates, _MASK)
        out, new_states = _run_groups(
            {True: inner}, {True: state.inner_state}, flags, updates, params, extra_args
        )
        return out, MaskedState(new_states[True])

    return GradientTransformationExtraArgs(init_fn, update_fn)


def set_to_zero() -> GradientTransformationExtraArgs:
    r"""Replaces every update by zero: :math:`u \mapsto 0`; holds no state.

    The frozen group of :func:`freeze`; the same as ``optax.set_to_zero``.

    Returns:
        A ``GradientTransformationExtraArgs`` whose state is ``EmptyState()``.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> tx = gx.set_to_zero()
        >>> updates, state = tx.update(jnp.array([1.0, -2.0]), tx.init(jnp.zeros(2)))
        >>> updates.tolist(), state
        ([0.0, 0.0], EmptyState())
    """

    def init_fn(params):
        del params
        return EmptyState()

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        return tree.zeros_like(updates), state

    return GradientTransformationExtraArgs(init_fn, update_fn)


def freeze(tx: GradientTransformation, frozen: Any) -> GradientTransformationExtraArgs:
    """Trains the leaves ``frozen`` does not select with ``tx``; the frozen ones stay still.

    ``partition({"train": tx, "frozen": set_to_zero()}, labels)``: frozen
    leaves get zero updates and no optimizer state is held for them (``tx``
    sees only the trainable leaves), so freezing half of a model halves the
    optimizer state. ``freeze`` takes the transform it protects because a
    transform chained before the optimizer (``optax.freeze(mask)``) can zero
    the gradients but cannot keep a later optimizer from holding (and, with
    decoupled weight decay, applying) state for the frozen leaves. Equal to
    ``optax.transforms.selective_transform(tx, freeze_mask=...)``.

    Args:
        tx: the transform for the trainable leaves (gradxform or optax).
        frozen: ``True`` for the leaves to freeze: a pytree of bools (the
            params' structure or a prefix), a function of the params returning
            one, a function of ``(key_path, leaf)`` returning a bool, a dict of
            glob patterns to bools, or a list of glob patterns on path strings
            (a leaf matching any is frozen; the forms of :func:`partition`'s labels).

    Returns:
        The transform; its state is :class:`PartitionState` with the groups
        ``"train"`` and ``"frozen"`` (``gx.get_hyperparams(state)["train"]``).

    Raises:
        ValueError: when built, for an empty ``frozen`` or a leaf of it that is
            not a bool; at the first ``init``, naming the path of a leaf it
            does not cover.
        TypeError: when built, if ``tx`` is not a transform.

    Example:
        >>> import gradxform as gx, jax.numpy as jnp
        >>> params = {"embed": jnp.ones(2), "head": jnp.ones(2)}
        >>> tx = gx.freeze(gx.adam(0.1), ["embed"])
        >>> state = tx.init(params)
        >>> updates, state = tx.update(params, state, params)
        >>> updates["embed"].tolist(), [round(u, 3) for u in updates["head"].tolist()]
        ([0.0, 0.0], [-0.1, -0.1])
    """
    if not isinstance(tx, optax.GradientTransformation):
        checks.fail("tx", "a gradxform or optax transform", tx, TypeError)
    if isinstance(frozen, (list, tuple)) and frozen and all(isinstance(p, str) for p in frozen):
        frozen = {**dict.fromkeys(frozen, True), "*": False}
    kind = _Kind("frozen", "True or False", lambda flag: "frozen" if _bool_label(flag) else "train")
    _check_spec(frozen, kind)
    parts = {"train": with_extra_args(tx), "frozen": set_to_zero()}
    return _partition(parts, frozen, kind, require_used=False)
