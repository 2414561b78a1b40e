"""The shared test problem: a mixed pytree and a deterministic gradient sequence.

``grad(x, t) = curvature * x + cos(x) + noise[t]`` leaf-wise: the gradient of
``sum(curvature * x**2 / 2 + sin(x)) + <noise[t], x>``, a smooth nonconvex loss
with per-step noise, computable the same way in JAX, NumPy and torch.
"""

from __future__ import annotations

import numpy as np

STEPS = 200
CURVATURE = 0.5
SHAPES = {"matrix": (4, 3), "square": (3, 3), "vector": (5,), "scalar": ()}


def make_problem(seed: int = 0, steps: int = STEPS, shapes: dict | None = None):
    """Initial params and the noise sequence, float64 NumPy, keyed like ``shapes``
    (default SHAPES)."""
    shapes = SHAPES if shapes is None else shapes
    rng = np.random.default_rng(seed)
    params = {k: rng.normal(size=s) for k, s in shapes.items()}
    noise = {k: 0.3 * rng.normal(size=(steps, *s)) for k, s in shapes.items()}
    return params, noise


def grad(x, noise_t, cos):
    """The gradient at ``x`` for one step; ``cos`` is the library's cosine."""
    return CURVATURE * x + cos(x) + noise_t
