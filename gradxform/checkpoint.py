"""Saving and restoring optimizer state (and any pytree of arrays).

Every gradxform state is a plain pytree of arrays (named tuples, tuples and
dicts; hyperparameters and step counts included), so the ecosystem's tools
save it as it is:

* orbax-checkpoint: ``ocp.StandardCheckpointer().save(path, state)`` and
  ``.restore(path, target)`` with ``target = tx.init(params)`` (tested);
* NumPy, with the helpers here: :func:`save` writes one ``.npz`` file of the
  flattened tree, each array under its tree path, and :func:`restore` reads it
  back into the structure, shapes, dtypes and shardings of a template, most
  simply ``tx.init(params)``.

A run interrupted after step ``k`` and resumed from such a checkpoint takes
bit-for-bit the same steps as the run that was never interrupted
(``tests/test_reliability.py``).

A state of :func:`gradxform.constant_hyperparams` holds its hyperparameters in
its tree structure, not as arrays; :func:`save` writes each as the 0-d array it
would otherwise be, so its file is the same as the array form's, and
:func:`restore` reads either file into either template (orbax, which restores
arrays only, keeps the template's constants).

The state of :func:`gradxform.grouped` is saved per parameter (as
:func:`gradxform.ungroup_state` shows it), so a checkpoint is the same file in
either layout, and :func:`restore` reads it into a grouped or an ungrouped
template: training can resume with or without grouping.

Example:
    >>> import gradxform as gx, jax.numpy as jnp, tempfile, os
    >>> tx = gx.adam(1e-3)
    >>> params = {"w": jnp.ones(3)}
    >>> state = tx.init(params)
    >>> path = os.path.join(tempfile.mkdtemp(), "opt.npz")
    >>> gx.checkpoint.save(path, state)
    >>> restored = gx.checkpoint.restore(path, like=tx.init(params))
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradxform.grouped import GroupedState, group_state, ungroup_state
from gradxform.hyperparams.store import Constant

__all__ = ["load_state_dict", "restore", "save", "state_dict"]

_DTYPES_KEY = "__dtypes__"


def _is_constant(x: Any) -> bool:
    return isinstance(x, Constant)


def _keyed_leaves(tree: Any) -> list[tuple[str, Any]]:
    """Every leaf, and every hyperparameter held as a :class:`Constant`, by its tree path."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=_is_constant)
    return [(jax.tree_util.keystr(path) or "<root>", leaf) for path, leaf in leaves]


def _has_grouped(tree: Any) -> bool:
    nodes = jax.tree.leaves(tree, is_leaf=lambda x: isinstance(x, GroupedState))
    return any(isinstance(node, GroupedState) for node in nodes)


def state_dict(tree: Any) -> dict[str, np.ndarray]:
    """The leaves of ``tree`` as NumPy arrays, keyed by their tree paths.

    Args:
        tree: a pytree of arrays (an optimizer state, params, ...); a grouped
            state is taken per parameter (:func:`gradxform.ungroup_state`).

    Returns:
        ``{jax.tree_util.keystr(path): numpy array}`` for every leaf.

    Raises:
        TypeError: naming the path of a leaf that is not an array.
    """
    out = {}
    for key, leaf in _keyed_leaves(ungroup_state(tree)):
        if isinstance(leaf, Constant):  # constant_hyperparams: saved as the scalar it is
            out[key] = np.asarray(leaf.value, leaf.dtype)
            continue
        if not hasattr(leaf, "shape"):
            kind = type(leaf).__name__
            raise TypeError(f"state_dict: the leaf at {key} is a {kind}, not an array")
        out[key] = np.asarray(jax.device_get(leaf))
    return out


def load_state_dict(like: Any, arrays: dict[str, np.ndarray]) -> Any:
    """``arrays`` (from :func:`state_dict`) put back into the structure of ``like``.

    Each array must have the shape and dtype of the leaf of ``like`` at its
    path; it is placed with that leaf's sharding. A grouped template (holding
    :class:`~gradxform.GroupedState` nodes) takes the per-parameter arrays and
    packs them into its layout.

    Args:
        like: the template pytree, most simply ``tx.init(params)``.
        arrays: path -> array, as :func:`state_dict` returns.

    Returns:
        A pytree with the structure, shapes, dtypes and shardings of ``like``.

    Raises:
        ValueError: naming the first missing, extra or mismatched path.
    """
    if _has_grouped(like):
        return group_state(load_state_dict(ungroup_state(like), arrays), like)
    keyed = _keyed_leaves(like)
    missing = [key for key, _ in keyed if key not in arrays]
    if missing:
        raise ValueError(f"load_state_dict: the checkpoint has no array for {missing[0]}")
    extra = sorted(set(arrays) - {key for key, _ in keyed})
    if extra:
        raise ValueError(
            f"load_state_dict: the checkpoint has an array at {extra[0]}, which the "
            "template does not (was it saved from a different optimizer or params tree?)"
        )
    leaves: list[Any] = []
    for key, held in keyed:
        array = arrays[key]
        constant = isinstance(held, Constant)  # checked as an array, put back as a constant
        template = held.array() if constant else held
        if array.shape != template.shape or array.dtype != template.dtype:
            raise ValueError(
                f"load_state_dict: at {key} the checkpoint has {array.dtype}{list(array.shape)}"
                f" but the template has {template.dtype}{list(template.shape)}"
            )
        if constant:
            leaves.append(Constant.of(array))
            continue
        sharding = getattr(template, "sharding", None)
        leaves.append(jax.device_put(array, sharding) if sharding is not None else array)
    return jax.tree.unflatten(jax.tree.structure(like, is_leaf=_is_constant), leaves)


def save(path: str | os.PathLike, tree: Any) -> None:
    """Writes ``tree`` to ``path`` (a ``.npz`` file), one array per tree path.

    Dtypes NumPy cannot name (bfloat16, float8) are stored as their raw bits,
    with the dtype names kept in the file, so they come back exactly.

    Args:
        path: the file to write.
        tree: a pytree of arrays.
    """
    arrays = state_dict(tree)
    dtypes = {key: str(a.dtype) for key, a in arrays.items()}
    raw = {
        key: a.view(f"u{a.dtype.itemsize}") if a.dtype.kind == "V" else a
        for key, a in arrays.items()
    }
    with open(path, "wb") as file:
        raw[_DTYPES_KEY] = np.asarray(json.dumps(dtypes))
        np.savez(file, allow_pickle=False, **raw)


def restore(path: str | os.PathLike, like: Any) -> Any:
    """Reads a file written by :func:`save` into the structure of ``like``.

    Args:
        path: a file written by :func:`save`.
        like: the template pytree, most simply ``tx.init(params)``; grouped
            (``gx.grouped(tx).init(params)``) or not, whichever layout the
            checkpoint was saved from.

    Returns:
        The saved pytree, bit for bit, with the structure and shardings of ``like``.

    Raises:
        ValueError: as :func:`load_state_dict`, naming the first mismatched path.
    """
    with np.load(path, allow_pickle=False) as data:
        dtypes = json.loads(str(data[_DTYPES_KEY]))
        arrays = {}
        for key, name in dtypes.items():
            dtype = jnp.dtype(name)
            stored = data[key]
            arrays[key] = stored if stored.dtype == dtype else stored.view(dtype)
    return load_state_dict(like, arrays)
