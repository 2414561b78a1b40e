"""``while_loop`` with the scalar part of the carry packed into one array per dtype.

XLA:CPU runs each loop-carried scalar as its own small kernel (a fusion or a
copy per scalar, each dispatched by the runtime, through its thread pool when
the loop also carries a buffer over 512 bytes); solver loops carry a dozen or
more scalars (step sizes, bracket ends, counters, flags). Stacked per dtype,
they are one buffer each to carry and copy, and XLA fuses many of their
updates into the stacking kernel (the measured effect is in the user guide's
second-order performance notes). Same semantics as :func:`jax.lax.while_loop`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def packed_while_loop(cond_fun, body_fun, init):
    """:func:`jax.lax.while_loop` that carries scalars stacked by dtype.

    Args:
        cond_fun: ``carry -> bool``.
        body_fun: ``carry -> carry``.
        init: the initial carry, any pytree of arrays.

    Returns:
        The final carry, as :func:`jax.lax.while_loop` returns it.
    """
    leaves, treedef = jax.tree.flatten(init)
    leaves = [jnp.asarray(leaf) for leaf in leaves]
    dtypes = sorted({leaf.dtype.name for leaf in leaves if leaf.ndim == 0})
    slots = []  # for each leaf: (dtype name, index in its stack) or None (kept as is)
    counts = dict.fromkeys(dtypes, 0)
    for leaf in leaves:
        if leaf.ndim == 0:
            slots.append((leaf.dtype.name, counts[leaf.dtype.name]))
            counts[leaf.dtype.name] += 1
        else:
            slots.append(None)

    def pack(carry):
        flat = [jnp.asarray(leaf) for leaf in jax.tree.leaves(carry)]
        stacks = {
            name: jnp.stack([v for v, slot in zip(flat, slots) if slot and slot[0] == name])
            for name in dtypes
        }
        arrays = [v for v, slot in zip(flat, slots) if slot is None]
        return stacks, arrays

    def unpack(packed):
        stacks, arrays = packed
        arrays = iter(arrays)
        flat = [next(arrays) if slot is None else stacks[slot[0]][slot[1]] for slot in slots]
        return jax.tree.unflatten(treedef, flat)

    out = jax.lax.while_loop(
        lambda p: cond_fun(unpack(p)), lambda p: pack(body_fun(unpack(p))), pack(init)
    )
    return unpack(out)
