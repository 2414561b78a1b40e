"""Learning-rate (and any hyperparameter) schedules: pure functions of the step count.

A schedule maps ``count``, the number of updates taken so far, to a value:
``count = 0`` is the first update, so ``schedule(0)`` is the value the first
update uses (this is optax's convention, and torch's ``lr_scheduler`` value
before its first ``step()``). Every gradxform hyperparameter accepts a schedule
(``gx.adam(gx.schedules.cosine_decay(1e-3, 10_000))``) and stores its current
value in the optimizer state.

Every schedule here

* takes an integer ``count`` (Python int, NumPy or JAX integer, traced or
  concrete, scalar or array) and returns float32 (float64 while
  ``jax_enable_x64`` is on, so float64 training keeps full precision) without
  overflow for any count up to ``2**31 - 1``: integer arithmetic is only ever
  divided, never multiplied or incremented;
* is accurate to a few float32 ulps of the exact value: powers are taken as
  ``exp(x * log(rate))`` with the logarithm computed in double precision when
  the schedule is built, and cosines near their zeros through the half-angle
  ``sin**2`` form, so there is no cancellation at the end of a decay;
* validates its arguments when built, raising ``ValueError`` that names the
  argument.

Module functions: :func:`constant`, :func:`step_decay`,
:func:`piecewise_constant`, :func:`exponential_decay`,
:func:`inverse_time_decay`, :func:`cosine_decay`, :func:`linear_decay`,
:func:`polynomial_decay`, :func:`inverse_sqrt_decay`, :func:`warmup`,
:func:`join`; the cycles :func:`one_cycle` (with :func:`one_cycle_momentum`)
and :func:`cyclic`; :func:`warmup_cosine`; and :func:`evaluate` to tabulate a
schedule for plotting.
In the formulas, :math:`t` is ``count`` (or the count since
``transition_begin`` where a schedule takes one).

Example:
    >>> import gradxform as gx
    >>> lr = gx.schedules.join(
    ...     [gx.schedules.warmup(1e-3, 100), gx.schedules.cosine_decay(1e-3, 900)], [100]
    ... )
    >>> tx = gx.adam(lr)  # the state holds the value the latest update used
"""

from gradxform.base import Schedule
from gradxform.schedules._common import evaluate
from gradxform.schedules._cycles import cyclic, one_cycle, one_cycle_momentum, warmup_cosine
from gradxform.schedules._decay import (
    constant,
    cosine_decay,
    exponential_decay,
    inverse_sqrt_decay,
    inverse_time_decay,
    join,
    linear_decay,
    piecewise_constant,
    polynomial_decay,
    step_decay,
    warmup,
)

__all__ = [
    "Schedule",
    "constant",
    "cosine_decay",
    "cyclic",
    "evaluate",
    "exponential_decay",
    "inverse_sqrt_decay",
    "inverse_time_decay",
    "join",
    "linear_decay",
    "one_cycle",
    "one_cycle_momentum",
    "piecewise_constant",
    "polynomial_decay",
    "step_decay",
    "warmup",
    "warmup_cosine",
]
