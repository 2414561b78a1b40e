"""The Moré-Garbow-Hillstrom unconstrained test set as residual functions.

J. J. Moré, B. S. Garbow and K. E. Hillstrom, "Testing unconstrained optimization
software", ACM Transactions on Mathematical Software 7(1), 17-41 (1981). The 35
problems are written as residuals ``r(x)`` with ``f(x) = sum(r(x)**2)``, the form of
the paper (its ``f`` is the plain sum of squares, not half of it), so the same
problems serve a general minimiser (``objective(p)``) and a least-squares solver
(``p.residual``).

Each ``Problem`` carries the paper's standard starting point ``x0`` and its published
minimum value ``f_min``. Where the paper lists more than one minimum, ``f_min`` is the
smallest and ``f_other`` holds the others a solver may legitimately reach from ``x0``
(local minima, or minima "at infinity" that a solver approaches without reaching);
``note`` says which. Problems with a free size use the sizes in ``SIZES``. Residuals
use ``jnp`` operations only and follow the dtype of ``x`` (pass float64 with x64 on).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np


class Problem(NamedTuple):
    """One test problem.

    Attributes:
        name: short snake_case name ("rosenbrock", "osborne1", ...).
        n: number of variables.
        m: number of residuals.
        residual: ``residual(x) -> (m,)`` array, ``x`` of shape ``(n,)``.
        x0: the paper's starting point, float64 NumPy.
        f_min: the published minimum of ``sum(residual(x)**2)``.
        note: number in the paper, source of ``f_min``, known other minima.
        f_other: other published values a solver may end at from ``x0`` (local minima,
            or infima at infinity); empty when only ``f_min`` is listed.
    """

    name: str
    n: int
    m: int
    residual: Callable
    x0: np.ndarray
    f_min: float
    note: str
    f_other: tuple[float, ...] = ()


def objective(p: Problem) -> Callable:
    """``f(x) = sum(p.residual(x)**2)``, the paper's objective."""

    def f(x):
        r = p.residual(x)
        return jnp.sum(r * r)

    return f


# Sizes of the problems whose dimension is free (the paper's suggested values where it
# gives some; all n <= 12 so a dense Hessian is cheap).
SIZES = {"n_var": 10, "m_linear": 20, "n_chebyquad": 8, "n_watson": 6, "m_gulf": 99}


def _c(values):
    return np.asarray(values, dtype=np.float64)


# --- 1-18: fixed-size problems --------------------------------------------------------


def _rosenbrock(x):
    return jnp.stack([10.0 * (x[1] - x[0] ** 2), 1.0 - x[0]])


def _freudenstein_roth(x):
    return jnp.stack(
        [
            -13.0 + x[0] + ((5.0 - x[1]) * x[1] - 2.0) * x[1],
            -29.0 + x[0] + ((x[1] + 1.0) * x[1] - 14.0) * x[1],
        ]
    )


def _powell_badly_scaled(x):
    return jnp.stack([1e4 * x[0] * x[1] - 1.0, jnp.exp(-x[0]) + jnp.exp(-x[1]) - 1.0001])


def _brown_badly_scaled(x):
    return jnp.stack([x[0] - 1e6, x[1] - 2e-6, x[0] * x[1] - 2.0])


_BEALE_Y = _c([1.5, 2.25, 2.625])


def _beale(x):
    i = jnp.arange(1, 4, dtype=x.dtype)
    return _BEALE_Y - x[0] * (1.0 - x[1] ** i)


def _jennrich_sampson(x):
    i = jnp.arange(1, 11, dtype=x.dtype)
    return 2.0 + 2.0 * i - (jnp.exp(i * x[0]) + jnp.exp(i * x[1]))


def _helical_valley(x):
    # theta = arctan(x2/x1)/(2 pi) (+ 1/2 when x1 < 0), the paper's branch.
    safe = jnp.where(x[0] == 0.0, 1.0, x[0])
    base = jnp.where(x[0] == 0.0, 0.25 * jnp.sign(x[1]), jnp.arctan(x[1] / safe) / (2 * jnp.pi))
    theta = jnp.where(x[0] < 0.0, base + 0.5, base)
    return jnp.stack(
        [10.0 * (x[2] - 10.0 * theta), 10.0 * (jnp.sqrt(x[0] ** 2 + x[1] ** 2) - 1.0), x[2]]
    )


_BARD_Y = _c(
    [0.14, 0.18, 0.22, 0.25, 0.29, 0.32, 0.35, 0.39, 0.37, 0.58, 0.73, 0.96, 1.34, 2.10, 4.39]
)
_BARD_U = np.arange(1.0, 16.0)
_BARD_V = 16.0 - _BARD_U
_BARD_W = np.minimum(_BARD_U, _BARD_V)


def _bard(x):
    return _BARD_Y - (x[0] + _BARD_U / (_BARD_V * x[1] + _BARD_W * x[2]))


_GAUSSIAN_Y = _c(
    [0.0009, 0.0044, 0.0175, 0.0540, 0.1295, 0.2420, 0.3521, 0.3989]
    + [0.3521, 0.2420, 0.1295, 0.0540, 0.0175, 0.0044, 0.0009]
)
_GAUSSIAN_T = (8.0 - np.arange(1.0, 16.0)) / 2.0


def _gaussian(x):
    return x[0] * jnp.exp(-x[1] * (_GAUSSIAN_T - x[2]) ** 2 / 2.0) - _GAUSSIAN_Y


_MEYER_Y = _c(
    [34780, 28610, 23650, 19630, 16370, 13720, 11540, 9744]
    + [8261, 7030, 6005, 5147, 4427, 3820, 3307, 2872]
)
_MEYER_T = 45.0 + 5.0 * np.arange(1.0, 17.0)


def _meyer(x):
    return x[0] * jnp.exp(x[1] / (_MEYER_T + x[2])) - _MEYER_Y


_GULF_T = np.arange(1.0, SIZES["m_gulf"] + 1.0) / 100.0
_GULF_Y = 25.0 + (-50.0 * np.log(_GULF_T)) ** (2.0 / 3.0)


def _gulf(x):
    d = jnp.abs(_GULF_Y - x[1])
    # |d|**x3 through exp/log, with the d == 0 point kept finite for autodiff.
    safe = jnp.where(d > 0.0, d, 1.0)
    power = jnp.where(d > 0.0, jnp.exp(x[2] * jnp.log(safe)), 0.0)
    return jnp.exp(-power / x[0]) - _GULF_T


_BOX_T = 0.1 * np.arange(1.0, 11.0)


def _box3d(x):
    return (
        jnp.exp(-_BOX_T * x[0])
        - jnp.exp(-_BOX_T * x[1])
        - x[2] * (np.exp(-_BOX_T) - np.exp(-10.0 * _BOX_T))
    )


def _powell_singular(x):
    return jnp.stack(
        [
            x[0] + 10.0 * x[1],
            np.sqrt(5.0) * (x[2] - x[3]),
            (x[1] - 2.0 * x[2]) ** 2,
            np.sqrt(10.0) * (x[0] - x[3]) ** 2,
        ]
    )


def _wood(x):
    return jnp.stack(
        [
            10.0 * (x[1] - x[0] ** 2),
            1.0 - x[0],
            np.sqrt(90.0) * (x[3] - x[2] ** 2),
            1.0 - x[2],
            np.sqrt(10.0) * (x[1] + x[3] - 2.0),
            (x[1] - x[3]) / np.sqrt(10.0),
        ]
    )


_KO_Y = _c([0.1957, 0.1947, 0.1735, 0.1600, 0.0844, 0.0627, 0.0456, 0.0342, 0.0323, 0.0235, 0.0246])
_KO_U = _c([4.0, 2.0, 1.0, 0.5, 0.25, 0.167, 0.125, 0.1, 0.0833, 0.0714, 0.0625])


def _kowalik_osborne(x):
    return _KO_Y - x[0] * (_KO_U**2 + _KO_U * x[1]) / (_KO_U**2 + _KO_U * x[2] + x[3])


_BD_T = np.arange(1.0, 21.0) / 5.0


def _brown_dennis(x):
    a = x[0] + _BD_T * x[1] - np.exp(_BD_T)
    b = x[2] + x[3] * np.sin(_BD_T) - np.cos(_BD_T)
    return a**2 + b**2


_OSBORNE1_Y = _c(
    [0.844, 0.908, 0.932, 0.936, 0.925, 0.908, 0.881, 0.850, 0.818, 0.784, 0.751]
    + [0.718, 0.685, 0.658, 0.628, 0.603, 0.580, 0.558, 0.538, 0.522, 0.506, 0.490]
    + [0.478, 0.467, 0.457, 0.448, 0.438, 0.431, 0.424, 0.420, 0.414, 0.411, 0.406]
)
_OSBORNE1_T = 10.0 * np.arange(33.0)


def _osborne1(x):
    model = x[0] + x[1] * jnp.exp(-_OSBORNE1_T * x[3]) + x[2] * jnp.exp(-_OSBORNE1_T * x[4])
    return _OSBORNE1_Y - model


_BIGGS_T = 0.1 * np.arange(1.0, 14.0)
_BIGGS_Y = np.exp(-_BIGGS_T) - 5.0 * np.exp(-10.0 * _BIGGS_T) + 3.0 * np.exp(-4.0 * _BIGGS_T)


def _biggs_exp6(x):
    t = _BIGGS_T
    return (
        x[2] * jnp.exp(-t * x[0]) - x[3] * jnp.exp(-t * x[1]) + x[5] * jnp.exp(-t * x[4]) - _BIGGS_Y
    )


_OSBORNE2_Y = _c(
    [1.366, 1.191, 1.112, 1.013, 0.991, 0.885, 0.831, 0.847, 0.786, 0.725, 0.746, 0.679, 0.608]
    + [0.655, 0.616, 0.606, 0.602, 0.626, 0.651, 0.724, 0.649, 0.649, 0.694, 0.644, 0.624, 0.661]
    + [0.612, 0.558, 0.533, 0.495, 0.500, 0.423, 0.395, 0.375, 0.372, 0.391, 0.396, 0.405, 0.428]
    + [0.429, 0.523, 0.562, 0.607, 0.653, 0.672, 0.708, 0.633, 0.668, 0.645, 0.632, 0.591, 0.559]
    + [0.597, 0.625, 0.739, 0.710, 0.729, 0.720, 0.636, 0.581, 0.428, 0.292, 0.162, 0.098, 0.054]
)
_OSBORNE2_T = np.arange(65.0) / 10.0


def _osborne2(x):
    t = _OSBORNE2_T
    model = (
        x[0] * jnp.exp(-t * x[4])
        + x[1] * jnp.exp(-((t - x[8]) ** 2) * x[5])
        + x[2] * jnp.exp(-((t - x[9]) ** 2) * x[6])
        + x[3] * jnp.exp(-((t - x[10]) ** 2) * x[7])
    )
    return _OSBORNE2_Y - model


# --- 20-35: problems of free size ----------------------------------------------------


def _watson(x):
    n = x.shape[0]
    t = (np.arange(1.0, 30.0) / 29.0)[:, None]
    j = np.arange(n)
    powers = t ** np.maximum(j - 1, 0)  # t**(j-2) in the paper's 1-based j
    first = jnp.sum(np.where(j >= 1, j, 0) * powers * x, axis=1)
    second = jnp.sum(t**j * x, axis=1)
    return jnp.concatenate([first - second**2 - 1.0, jnp.stack([x[0], x[1] - x[0] ** 2 - 1.0])])


def _extended_rosenbrock(x):
    odd, even = x[0::2], x[1::2]
    return jnp.stack([10.0 * (even - odd**2), 1.0 - odd], axis=1).reshape(-1)


def _extended_powell(x):
    a, b, c, d = x[0::4], x[1::4], x[2::4], x[3::4]
    r = [a + 10.0 * b, np.sqrt(5.0) * (c - d), (b - 2.0 * c) ** 2, np.sqrt(10.0) * (a - d) ** 2]
    return jnp.stack(r, axis=1).reshape(-1)


def _penalty1(x):
    a = 1e-5
    return jnp.concatenate([np.sqrt(a) * (x - 1.0), jnp.sum(x**2)[None] - 0.25])


def _penalty2(x):
    n = x.shape[0]
    a = 1e-5
    i = np.arange(2.0, n + 1.0)
    y = np.exp(i / 10.0) + np.exp((i - 1.0) / 10.0)
    middle = np.sqrt(a) * (jnp.exp(x[1:] / 10.0) + jnp.exp(x[:-1] / 10.0) - y)
    tail = np.sqrt(a) * (jnp.exp(x[1:] / 10.0) - np.exp(-0.1))
    last = jnp.sum(np.arange(n, 0.0, -1.0) * x**2) - 1.0
    return jnp.concatenate([(x[0] - 0.2)[None], middle, tail, last[None]])


def _variably_dimensioned(x):
    n = x.shape[0]
    s = jnp.sum(np.arange(1.0, n + 1.0) * (x - 1.0))
    return jnp.concatenate([x - 1.0, jnp.stack([s, s**2])])


def _trigonometric(x):
    n = x.shape[0]
    i = np.arange(1.0, n + 1.0)
    return n - jnp.sum(jnp.cos(x)) + i * (1.0 - jnp.cos(x)) - jnp.sin(x)


def _brown_almost_linear(x):
    n = x.shape[0]
    return jnp.concatenate([x[:-1] + jnp.sum(x) - (n + 1.0), (jnp.prod(x) - 1.0)[None]])


def _grid(n):
    h = 1.0 / (n + 1.0)
    return h, h * np.arange(1.0, n + 1.0)


def _discrete_boundary(x):
    h, t = _grid(x.shape[0])
    padded = jnp.pad(x, 1)
    return 2.0 * x - padded[:-2] - padded[2:] + h**2 * (x + t + 1.0) ** 3 / 2.0


def _discrete_integral(x):
    n = x.shape[0]
    h, t = _grid(n)
    cube = (x + t + 1.0) ** 3
    lower = np.tril(np.ones((n, n)))  # j <= i
    left = (1.0 - t) * ((lower * t) @ cube)
    right = t * (((1.0 - lower) * (1.0 - t)) @ cube)
    return x + h * (left + right) / 2.0


def _broyden_tridiagonal(x):
    padded = jnp.pad(x, 1)
    return (3.0 - 2.0 * x) * x - padded[:-2] - 2.0 * padded[2:] + 1.0


def _broyden_banded(x):
    n = x.shape[0]
    i, j = np.indices((n, n))
    band = ((j >= i - 5) & (j <= i + 1) & (i != j)).astype(np.float64)
    return x * (2.0 + 5.0 * x**2) + 1.0 - band @ (x * (1.0 + x))


def _linear_full_rank(x):
    m = SIZES["m_linear"]
    s = 2.0 / m * jnp.sum(x)
    return jnp.concatenate([x - s - 1.0, jnp.full((m - x.shape[0],), -s - 1.0)])


def _linear_rank1(x):
    m = SIZES["m_linear"]
    s = jnp.sum(np.arange(1.0, x.shape[0] + 1.0) * x)
    return np.arange(1.0, m + 1.0) * s - 1.0


def _linear_rank1_zero(x):
    m, n = SIZES["m_linear"], x.shape[0]
    s = jnp.sum(np.arange(2.0, n) * x[1:-1])
    i = np.arange(1.0, m + 1.0)
    inner = (i - 1.0) * s - 1.0
    return jnp.where((i == 1.0) | (i == m), -1.0, inner)


def _chebyquad(x):
    n = x.shape[0]
    y = 2.0 * x - 1.0  # shifted to [-1, 1]
    rows = [jnp.ones_like(x), y]
    for _ in range(2, n + 1):
        rows.append(2.0 * y * rows[-1] - rows[-2])
    means = jnp.stack(rows[1:]) @ jnp.full((n,), 1.0 / n, dtype=x.dtype)
    i = np.arange(1.0, n + 1.0)
    integral = np.where(i % 2 == 0, -1.0 / np.maximum(i**2 - 1.0, 1.0), 0.0)
    return means - integral


def _build() -> tuple[Problem, ...]:
    nv, ml = SIZES["n_var"], SIZES["m_linear"]
    nc, nw = SIZES["n_chebyquad"], SIZES["n_watson"]
    nv4 = 4 * (nv // 4 + (nv % 4 > 0))  # extended Powell needs a multiple of 4
    ones = np.ones(nv)
    _, t = _grid(nv)
    rows = [
        ("rosenbrock", 2, 2, _rosenbrock, [-1.2, 1.0], 0.0, "1", ()),
        (
            "freudenstein_roth",
            2,
            2,
            _freudenstein_roth,
            [0.5, -2.0],
            0.0,
            "2; local minimum 48.9842 at (11.41..., -0.8968...)",
            (48.9842,),
        ),
        ("powell_badly_scaled", 2, 2, _powell_badly_scaled, [0.0, 1.0], 0.0, "3", ()),
        ("brown_badly_scaled", 2, 3, _brown_badly_scaled, [1.0, 1.0], 0.0, "4", ()),
        ("beale", 2, 3, _beale, [1.0, 1.0], 0.0, "5", ()),
        ("jennrich_sampson", 2, 10, _jennrich_sampson, [0.3, 0.4], 124.362, "6 (m=10)", ()),
        ("helical_valley", 3, 3, _helical_valley, [-1.0, 0.0, 0.0], 0.0, "7", ()),
        (
            "bard",
            3,
            15,
            _bard,
            [1.0, 1.0, 1.0],
            8.21487e-3,
            "8; 17.4286 approached as x2, x3 -> -inf",
            (17.4286,),
        ),
        ("gaussian", 3, 15, _gaussian, [0.4, 1.0, 0.0], 1.12793e-8, "9", ()),
        ("meyer", 3, 16, _meyer, [0.02, 4000.0, 250.0], 87.9458, "10", ()),
        ("gulf", 3, SIZES["m_gulf"], _gulf, [5.0, 2.5, 0.15], 0.0, "11 (m=99, as CUTEst)", ()),
        (
            "box3d",
            3,
            10,
            _box3d,
            [0.0, 10.0, 20.0],
            0.0,
            "12 (m=10); zero also at (10,1,-1) and on x1=x2, x3=0",
            (),
        ),
        ("powell_singular", 4, 4, _powell_singular, [3.0, -1.0, 0.0, 1.0], 0.0, "13", ()),
        ("wood", 4, 6, _wood, [-3.0, -1.0, -3.0, -1.0], 0.0, "14", ()),
        (
            "kowalik_osborne",
            4,
            11,
            _kowalik_osborne,
            [0.25, 0.39, 0.415, 0.39],
            3.07505e-4,
            "15; 1.02734e-3 approached at infinity",
            (1.02734e-3,),
        ),
        ("brown_dennis", 4, 20, _brown_dennis, [25.0, 5.0, -5.0, -1.0], 85822.2, "16 (m=20)", ()),
        ("osborne1", 5, 33, _osborne1, [0.5, 1.5, -1.0, 0.01, 0.02], 5.46489e-5, "17", ()),
        (
            "biggs_exp6",
            6,
            13,
            _biggs_exp6,
            [1.0, 2.0, 1.0, 1.0, 1.0, 1.0],
            0.0,
            "18 (m=13); local minimum 5.65565e-3",
            (5.65565e-3,),
        ),
        (
            "osborne2",
            11,
            65,
            _osborne2,
            [1.3, 0.65, 0.65, 0.7, 0.6, 3.0, 5.0, 7.0, 2.0, 4.5, 5.5],
            4.01377e-2,
            "19",
            (),
        ),
        ("watson", nw, 31, _watson, np.zeros(nw), 2.28767e-3, "20 (n=6)", ()),
        (
            "extended_rosenbrock",
            nv,
            nv,
            _extended_rosenbrock,
            np.tile([-1.2, 1.0], nv // 2),
            0.0,
            "21",
            (),
        ),
        (
            "extended_powell",
            nv4,
            nv4,
            _extended_powell,
            np.tile([3.0, -1.0, 0.0, 1.0], nv4 // 4),
            0.0,
            "22",
            (),
        ),
        ("penalty1", nv, nv + 1, _penalty1, np.arange(1.0, nv + 1.0), 7.08765e-5, "23 (n=10)", ()),
        ("penalty2", nv, 2 * nv, _penalty2, 0.5 * ones, 2.93660e-4, "24 (n=10)", ()),
        (
            "variably_dimensioned",
            nv,
            nv + 2,
            _variably_dimensioned,
            1.0 - np.arange(1.0, nv + 1.0) / nv,
            0.0,
            "25",
            (),
        ),
        (
            "trigonometric",
            nv,
            nv,
            _trigonometric,
            ones / nv,
            0.0,
            "26; local minimum 2.79506e-5 for n=10",
            (2.79506e-5,),
        ),
        (
            "brown_almost_linear",
            nv,
            nv,
            _brown_almost_linear,
            0.5 * ones,
            0.0,
            "27; also 1 at (0, ..., 0, n+1)",
            (1.0,),
        ),
        ("discrete_boundary", nv, nv, _discrete_boundary, t * (t - 1.0), 0.0, "28", ()),
        ("discrete_integral", nv, nv, _discrete_integral, t * (t - 1.0), 0.0, "29", ()),
        ("broyden_tridiagonal", nv, nv, _broyden_tridiagonal, -ones, 0.0, "30", ()),
        ("broyden_banded", nv, nv, _broyden_banded, -ones, 0.0, "31", ()),
        ("linear_full_rank", nv, ml, _linear_full_rank, ones, float(ml - nv), "32 (m=20)", ()),
        (
            "linear_rank1",
            nv,
            ml,
            _linear_rank1,
            ones,
            ml * (ml - 1.0) / (2.0 * (2 * ml + 1)),
            "33 (m=20)",
            (),
        ),
        (
            "linear_rank1_zero",
            nv,
            ml,
            _linear_rank1_zero,
            ones,
            (ml**2 + 3.0 * ml - 6.0) / (2.0 * (2 * ml - 3)),
            "34 (m=20)",
            (),
        ),
        (
            "chebyquad",
            nc,
            nc,
            _chebyquad,
            np.arange(1.0, nc + 1.0) / (nc + 1.0),
            3.51687e-3,
            "35 (n=m=8)",
            (),
        ),
    ]
    return tuple(
        Problem(name, n, m, fn, _c(x0), float(f_min), "MGH problem " + note, tuple(other))
        for name, n, m, fn, x0, f_min, note, other in rows
    )


PROBLEMS: tuple[Problem, ...] = _build()
BY_NAME: dict[str, Problem] = {p.name: p for p in PROBLEMS}
