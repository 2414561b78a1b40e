"""Argument checks for factories and solvers, with one message form.

Every check raises when a transform or solver is *built*, never inside
``jit``, with the message ``<name> must be <what>; got <value>``, and returns
the value in the form the caller stores (a Python ``int``, ``float`` or
``bool``), so a factory reads ``memory_size = checks.integer("memory_size",
memory_size, minimum=1)``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Collection
from typing import Any, NoReturn, overload

import jax.numpy as jnp
import numpy as np

__all__ = [
    "boolean",
    "callable_arg",
    "choice",
    "fail",
    "integer",
    "is_real_number",
    "real",
    "wolfe_constants",
]


def fail(name: str, what: str, value: Any, error: type[Exception] = ValueError) -> NoReturn:
    """Raises ``error("<name> must be <what>; got <value!r>")``."""
    raise error(f"{name} must be {what}; got {value!r}")


def is_real_number(value: Any) -> bool:
    """True for a Python or NumPy real number (``bool`` is not a number here)."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def integer(
    name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    """``value`` as an ``int``; ``bool`` and non-integral numbers are rejected.

    Raises:
        TypeError: if ``value`` is not an integer.
        ValueError: if it is below ``minimum`` or above ``maximum``.
    """
    what = "an integer " + _interval(minimum, maximum, False, False)
    what = what.removesuffix(" finite")
    if not isinstance(value, numbers.Integral) or isinstance(value, (bool, np.bool_)):
        fail(name, what, value, TypeError)
    v = int(value)
    if (minimum is not None and v < minimum) or (maximum is not None and v > maximum):
        fail(name, what, value)
    return v


def _interval(lower, upper, lower_open, upper_open) -> str:
    if lower is not None and upper is not None:
        left, right = "(" if lower_open else "[", ")" if upper_open else "]"
        return f"in {left}{lower}, {upper}{right}"
    if lower is not None:
        return f"{'>' if lower_open else '>='} {lower}"
    if upper is not None:
        return f"{'<' if upper_open else '<='} {upper}"
    return "finite"


def real(
    name: str,
    value: Any,
    *,
    lower: float | None = None,
    upper: float | None = None,
    lower_open: bool = False,
    upper_open: bool = False,
) -> float:
    """``value`` as a finite ``float`` in the given interval (ends closed unless ``*_open``).

    Raises:
        TypeError: if ``value`` is not a real number.
        ValueError: if it is not finite or lies outside the interval.
    """
    what = "a real number " + _interval(lower, upper, lower_open, upper_open)
    if not is_real_number(value):
        fail(name, what, value, TypeError)
    v = float(value)
    inside = math.isfinite(v)
    if lower is not None:
        inside = inside and (v > lower if lower_open else v >= lower)
    if upper is not None:
        inside = inside and (v < upper if upper_open else v <= upper)
    if not inside:
        fail(name, what, value)
    return v


def boolean(name: str, value: Any) -> bool:
    """``value`` as a ``bool``; only ``True``, ``False`` and NumPy booleans are accepted."""
    if not isinstance(value, (bool, np.bool_)):
        fail(name, "True or False", value, TypeError)
    return bool(value)


def choice(name: str, value: Any, options: Collection[Any]) -> Any:
    """``value`` if it is one of ``options``."""
    if value not in options:
        fail(name, "one of " + ", ".join(repr(o) for o in options), value)
    return value


def optional_dtype(name: str, value: Any, *, complex_ok: bool = False) -> np.dtype | None:
    """``None`` (each parameter's own dtype), or ``value`` as a floating NumPy dtype.

    Args:
        name: the argument's name, for the error.
        value: ``None`` or anything ``np.dtype`` reads (``jnp.float32``, ``"bfloat16"``).
        complex_ok: whether a complex dtype is accepted too.

    Returns:
        ``None`` or the dtype.
    """
    if value is None:
        return None
    what = "None or a floating dtype" if complex_ok else "None or a real floating dtype"
    try:
        dtype = np.dtype(value)
    except TypeError:
        fail(name, what, value, TypeError)
    if not jnp.issubdtype(dtype, jnp.inexact if complex_ok else jnp.floating):  # bfloat16 too
        fail(name, what, value)
    return dtype


def callable_arg(name: str, value: Any, form: str) -> Callable:
    """``value`` if it is callable; ``form`` says what it should be (``fun(params) -> scalar``)."""
    if not callable(value):
        fail(name, f"a callable {form}", value, TypeError)
    return value


@overload
def wolfe_constants(c1: Any) -> tuple[float, None]: ...
@overload
def wolfe_constants(c1: Any, c2: None) -> tuple[float, None]: ...
@overload
def wolfe_constants(c1: Any, c2: Any) -> tuple[float, float]: ...
def wolfe_constants(c1: Any, c2: Any | None = None) -> tuple[float, float | None]:
    """``(c1, c2)`` as floats with ``0 < c1 < 1`` and, if given, ``c1 < c2 < 1``."""
    c1 = real("c1", c1, lower=0, upper=1, lower_open=True, upper_open=True)
    if c2 is None:
        return c1, None
    return c1, real("c2", c2, lower=c1, upper=1, lower_open=True, upper_open=True)
