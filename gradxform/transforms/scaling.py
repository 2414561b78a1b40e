"""Scaling transforms: multiply updates by a number, a schedule or the learning rate."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from gradxform import tree
from gradxform.base import GradientTransformationExtraArgs, Schedule
from gradxform.hyperparams import (
    Hyperparams,
    HyperparamState,
    check_nonnegative,
)

__all__ = [
    "ScaleByLearningRateState",
    "ScaleState",
    "add_decayed_weights",
    "AddDecayedWeightsState",
    "scale",
    "scale_by_learning_rate",
    "scale_by_schedule",
]


class ScaleState(NamedTuple):
    """State of :func:`scale`: the factor, stored under its name."""

    hyperparams: HyperparamState


def scale(factor: float | Schedule, *, name: str = "factor") -> GradientTransformationExtraArgs:
    """``u <- factor * u``; ``factor`` may be a schedule and is stored as ``name``."""
    hp = Hyperparams(**{name: factor})

    def init_fn(params):
        return ScaleState(hp.init(params))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        values, hyper = hp.step(state.hyperparams)
        return tree.scale(values[name], updates), ScaleState(hyper)

    return GradientTransformationExtraArgs(init_fn, update_fn)


def scale_by_schedule(schedule: Schedule) -> GradientTransformationExtraArgs:
    """``u <- schedule(t) * u`` with ``t`` the number of updates taken so far.

    The current factor is stored under the name ``schedule``.
    """
    if not callable(schedule):
        raise TypeError(f"schedule must be a function of the step count; got {schedule!r}")
    return scale(schedule, name="schedule")


class ScaleByLearningRateState(NamedTuple):
    """State of :func:`scale_by_learning_rate`: ``learning_rate`` and the step count."""

    hyperparams: HyperparamState


def scale_by_learning_rate(
    learning_rate: float | Schedule, *, flip_sign: bool = True
) -> GradientTransformationExtraArgs:
    """``u <- -learning_rate * u``: the step, and the only sign flip in gradxform.

    Args:
        learning_rate: a number >= 0 or a schedule ``t -> learning rate``,
            evaluated at ``t`` = number of updates taken so far (0 first).
        flip_sign: ``False`` gives ``+learning_rate * u`` (for ascent or for
            composing the lecture's velocity form by hand).
    """
    check_nonnegative("learning_rate", learning_rate)
    hp = Hyperparams(learning_rate=learning_rate)
    sign = -1 if flip_sign else 1

    def init_fn(params):
        return ScaleByLearningRateState(hp.init(params))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        values, hyper = hp.step(state.hyperparams)
        return tree.scale(sign * values["learning_rate"], updates), ScaleByLearningRateState(hyper)

    return GradientTransformationExtraArgs(init_fn, update_fn)


class AddDecayedWeightsState(NamedTuple):
    """State of :func:`add_decayed_weights`: ``weight_decay``."""

    hyperparams: HyperparamState


def add_decayed_weights(
    weight_decay: float | Schedule = 0.0, mask=None
) -> GradientTransformationExtraArgs:
    """``u <- u + weight_decay * params`` (only where ``mask`` is True, if given).

    Before the moments (``chain(add_decayed_weights(wd), adam...)``) this is L2
    regularisation, torch's ``weight_decay``; after them it is decoupled weight
    decay, as in :func:`gradxform.adamw`.

    Args:
        weight_decay: a number >= 0 or a schedule.
        mask: None (decay every leaf), a pytree of bools shaped like the params,
            or a function ``params -> such a pytree`` (e.g. to spare biases).
    """
    check_nonnegative("weight_decay", weight_decay)
    if mask is not None and not callable(mask) and not jax.tree.leaves(mask):
        raise ValueError("mask must be a pytree of bools, a function params -> mask, or None")
    hp = Hyperparams(weight_decay=weight_decay)

    def init_fn(params):
        return AddDecayedWeightsState(hp.init(params))

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError("add_decayed_weights: update needs params; got params=None")
        tree.check_structure(params, updates, "params", "updates")
        values, hyper = hp.step(state.hyperparams)
        decayed = tree.scale(values["weight_decay"], params)
        out = tree.cast(tree.add(updates, decayed), updates)
        if mask is not None:
            flags = mask(params) if callable(mask) else mask
            tree.check_structure(params, flags, "params", "mask", leaves=False)
            out = jax.tree.map(
                lambda keep, o, u: (
                    (o if keep else u) if isinstance(keep, bool) else jnp.where(keep, o, u)
                ),
                flags,
                out,
                updates,
            )
        return out, AddDecayedWeightsState(hyper)

    return GradientTransformationExtraArgs(init_fn, update_fn)
