"""Clipping: bound each coordinate, or the global norm, of the updates."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from gradxform import tree
from gradxform.base import GradientTransformationExtraArgs, Schedule
from gradxform.hyperparams import Hyperparams, HyperparamState, check_nonnegative

__all__ = ["ClipByGlobalNormState", "ClipState", "clip", "clip_by_global_norm"]


class ClipState(NamedTuple):
    """State of :func:`clip`: ``max_delta``."""

    hyperparams: HyperparamState


def clip(max_delta: float | Schedule) -> GradientTransformationExtraArgs:
    """Clamps each coordinate to ``[-max_delta, max_delta]`` (complex: by magnitude)."""
    check_nonnegative("max_delta", max_delta)
    hp = Hyperparams(max_delta=max_delta)

    def init_fn(params):
        return ClipState(hp.init(params))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        values, hyper = hp.step(state.hyperparams)

        def leaf(u):
            bound = values["max_delta"].astype(tree.real_dtype(u.dtype))
            if jnp.iscomplexobj(u):
                magnitude = jnp.abs(u)
                return jnp.where(magnitude > bound, u * (bound / magnitude), u)
            return jnp.clip(u, -bound, bound)

        return jax.tree.map(leaf, updates), ClipState(hyper)

    return GradientTransformationExtraArgs(init_fn, update_fn)


class ClipByGlobalNormState(NamedTuple):
    """State of :func:`clip_by_global_norm`: ``max_norm``."""

    hyperparams: HyperparamState


def clip_by_global_norm(max_norm: float | Schedule) -> GradientTransformationExtraArgs:
    """Rescales all updates together so that their global l2 norm is at most ``max_norm``.

    ``u <- u`` if ``||u|| < max_norm`` else ``u / ||u|| * max_norm``.
    """
    check_nonnegative("max_norm", max_norm)
    hp = Hyperparams(max_norm=max_norm)

    def init_fn(params):
        return ClipByGlobalNormState(hp.init(params))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        values, hyper = hp.step(state.hyperparams)
        norm = tree.global_norm(updates)
        keep = norm < values["max_norm"]

        def leaf(u):
            dt = tree.real_dtype(u.dtype)
            clipped = (u / norm.astype(dt)) * values["max_norm"].astype(dt)
            return jnp.where(keep, u, clipped)

        return jax.tree.map(leaf, updates), ClipByGlobalNormState(hyper)

    return GradientTransformationExtraArgs(init_fn, update_fn)
