"""What the solvers return: :class:`Solution`, its :class:`Status` and :class:`History`.

One record for :func:`gradxform.minimize` (every method, L-BFGS-B included)
and :func:`gradxform.least_squares`. ``status`` says why a solve stopped;
for a success, ``stopping_test`` says which convergence test stopped it (the
gradient test, the relative reduction of ``f``, or the step size), and
``message`` says both in words, as scipy's ``OptimizeResult.message`` does.
"""

from __future__ import annotations

import collections
import enum
from typing import Any, NamedTuple

import jax
import numpy as np

from gradxform import checks

__all__ = ["MESSAGES", "STOPPING_TESTS", "History", "Solution", "Status", "message"]


class Status(enum.IntEnum):
    """Why :func:`minimize` stopped (``Solution.message`` says it in words).

    Attributes:
        SUCCESS: a convergence test was met: the gradient norm reached
            ``tol * max(1, |g0|)``, or (L-BFGS-B, least squares) the relative
            reduction of ``f`` or the step fell below its tolerance;
            ``Solution.stopping_test`` says which.
        MAXITER: ``maxiter`` iterations were taken first.
        LINESEARCH_FAILED: no step decreased the objective, even from steepest
            descent with the curvature model reset.
        NONFINITE: the objective or its gradient became NaN or infinite.
        STALLED: neither the best value nor the best gradient norm improved for
            many iterations: ``tol`` is below what the precision resolves.
    """

    SUCCESS = 0
    MAXITER = 1
    LINESEARCH_FAILED = 2
    NONFINITE = 3
    STALLED = 4


_RUNNING = -1
MESSAGES = {
    Status.SUCCESS: "converged: gradient norm <= tol * max(1, |g0|)",
    Status.MAXITER: "stopped: maximum number of iterations reached",
    Status.LINESEARCH_FAILED: (
        "failed: the line search found no point that decreases the objective "
        "(the direction is not a descent direction, or f is at its floating-point resolution)"
    ),
    Status.NONFINITE: "failed: the objective or its gradient is not finite (NaN or inf)",
    Status.STALLED: (
        "stopped: neither the best objective value nor the best gradient norm improved in 25 "
        "iterations (5 for Newton's methods); the iterate is at the floating-point resolution "
        "of f and its gradient (tol is below what this precision can resolve)"
    ),
}

GRADIENT, REDUCTION, STEP, REDUCTION_AND_STEP = 0, 1, 2, 3  # Solution.stopping_test's codes
STOPPING_TESTS = {
    GRADIENT: MESSAGES[Status.SUCCESS],
    REDUCTION: (
        "converged: the relative reduction of f in the last iteration is at most its tolerance "
        "(L-BFGS-B: (f_prev - f) <= factr * eps * max(|f_prev|, |f|, 1); least squares: ftol)"
    ),
    STEP: "converged: the last step is at most xtol relative to the size of x",
    REDUCTION_AND_STEP: (
        "converged: both the relative reduction of f (ftol) and the step size (xtol) are at "
        "most their tolerances"
    ),
}
"""``Solution.message`` of a success, by ``Solution.stopping_test``."""


def message(status, stopping_test=None) -> str:
    """The words for one solve's ``status`` code and, for a success, its ``stopping_test``.

    Args:
        status: a :class:`Status` code (an int or a scalar array).
        stopping_test: :attr:`Solution.stopping_test`'s code, or None (the
            gradient test).

    Returns:
        :data:`MESSAGES`'s entry, or for a success :data:`STOPPING_TESTS`'s.
    """
    if int(status) != Status.SUCCESS or stopping_test is None:
        return MESSAGES[Status(int(status))]
    return STOPPING_TESTS[int(stopping_test)]


class History(NamedTuple):
    """Per-iteration value and gradient norm, in buffers of ``maxiter + 1`` entries.

    Entry ``k`` is after ``k`` iterations (the same point again where an
    iteration's search failed); the first ``length`` entries are recorded and
    the rest are NaN. :meth:`trimmed` returns the recorded part, and the
    ``repr`` summarises it instead of printing the buffers.

    Attributes:
        value: ``f`` at each iterate, shape ``(maxiter + 1,)``.
        grad_norm: ``|grad f|`` there.
        length: the number of recorded entries, ``iterations + 1``.
    """

    value: jax.Array
    grad_norm: jax.Array
    length: jax.Array

    def trimmed(self) -> History:
        """The recorded entries only (call it outside ``jax.jit``).

        Returns:
            A :class:`History` whose buffers keep their first ``length``
            entries (under ``vmap``, the longest solve's: shorter rows keep
            NaN after their own ``length``).
        """
        if _traced(self):
            checks.fail("history", "concrete to be trimmed (outside jax.jit)", self.length)
        n = int(np.max(np.asarray(self.length)))
        return History(self.value[..., :n], self.grad_norm[..., :n], self.length)

    def __repr__(self) -> str:
        if _traced(self):
            return f"History(value={self.value!r}, grad_norm={self.grad_norm!r})"
        lengths, capacity = np.asarray(self.length), self.value.shape[-1]
        if lengths.ndim:
            return (
                f"History({lengths.min()} to {lengths.max()} of {capacity} entries recorded "
                f"per solve, batch shape {lengths.shape}; .trimmed() gives them)"
            )
        value, grad_norm = np.asarray(self.value), np.asarray(self.grad_norm)
        last = int(lengths) - 1
        return (
            f"History({last + 1} of {capacity} entries recorded: value "
            f"{_short(value[0])} -> {_short(value[last])}, grad_norm {_short(grad_norm[0])} -> "
            f"{_short(grad_norm[last])}; .trimmed() gives them)"
        )


class Solution(NamedTuple):
    """What :func:`minimize` and :func:`least_squares` return.

    Its ``repr`` is a summary (status, value, counts; large arrays shortened,
    the history as :class:`History` summarises itself); the fields hold the
    full arrays.

    Attributes:
        params: the last iterate, shaped like ``x0``.
        value: the objective there.
        grad_norm: the 2-norm of its gradient.
        iterations: iterations taken.
        num_fun_evals: objective evaluations (each is one ``value_and_grad``).
        num_grad_evals: gradient evaluations (equal to ``num_fun_evals``).
        num_hess_evals: dense Hessians (Newton).
        num_hvp_evals: Hessian-vector products (Newton-CG).
        status: a :class:`Status` code (int32 array; batched under vmap).
        stopping_test: for a ``SUCCESS``, which test stopped the solve: 0 the
            gradient test, 1 the relative reduction of ``f`` (L-BFGS-B's
            ``factr`` test, least squares' ``ftol``), 2 the step size (least
            squares' ``xtol``), 3 both 1 and 2 (int32; 0 where the status is
            not ``SUCCESS``; None from a solver that only has the gradient test).
        history: a :class:`History` if requested, else None.
    """

    params: Any
    value: jax.Array
    grad_norm: jax.Array
    iterations: jax.Array
    num_fun_evals: jax.Array
    num_grad_evals: jax.Array
    num_hess_evals: jax.Array
    num_hvp_evals: jax.Array
    status: jax.Array
    stopping_test: jax.Array | None = None
    history: History | None = None

    @property
    def success(self):
        """True where a convergence test was met (``status`` is ``SUCCESS``)."""
        return self.status == Status.SUCCESS

    @property
    def message(self):
        """The readable reason for :attr:`status`, and for a success the test that stopped
        the solve (:attr:`stopping_test`); a list of them when batched."""
        codes = np.asarray(self.status)
        tests = [None] * codes.size
        if self.stopping_test is not None:
            tests = list(np.broadcast_to(np.asarray(self.stopping_test), codes.shape).ravel())
        words = [message(c, t) for c, t in zip(codes.ravel(), tests)]
        return words[0] if codes.ndim == 0 else words

    def __repr__(self) -> str:
        fields = self._asdict()
        if _traced(self):
            return "Solution(" + ", ".join(f"{k}={v!r}" for k, v in fields.items()) + ")"
        codes = np.asarray(self.status).ravel()
        names = [Status(int(c)).name for c in codes]
        status = names[0] if np.ndim(self.status) == 0 else str(dict(collections.Counter(names)))
        counts = ("num_fun_evals", "num_grad_evals", "num_hess_evals", "num_hvp_evals")
        for name in ("value", "grad_norm", "iterations", *counts, "stopping_test"):
            if fields[name] is not None:
                fields[name] = _Text(_short(fields[name]))
        fields.update(
            status=_Text(status), params=jax.tree.map(lambda a: _Text(_short(a)), self.params)
        )
        return "Solution(" + ", ".join(f"{k}={v!r}" for k, v in fields.items()) + ")"


class _Text(str):
    """A string whose ``repr`` is itself (to print summaries inside containers)."""

    def __repr__(self) -> str:
        return str(self)


def _short(x) -> str:
    """``x`` in few characters: a scalar to 6 digits, an array as dtype, shape and some entries."""
    a = np.asarray(x)
    if a.ndim == 0:
        return f"{a.item():.6g}" if a.dtype.kind == "f" else str(a.item())
    entries = np.array2string(a, precision=6, threshold=6, edgeitems=2, separator=", ")
    return f"{a.dtype.name}{list(a.shape)} {' '.join(entries.split())}"


def _traced(record) -> bool:
    """True if a leaf of ``record`` is a tracer (a repr or trim inside ``jax.jit``)."""
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(record))
