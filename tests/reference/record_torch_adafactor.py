"""Records torch.optim.Adafactor on the shared problem, for tests/test_adafactor.py.

Run from the repository root (needs torch >= 2.5):
``PYTHONPATH=.:<torch> python tests/reference/record_torch_adafactor.py``. Writes
``tests/reference/torch_adafactor.npz``: for each config ``<c>`` and leaf ``<k>``,
``<c>/<k>/grads`` (steps, *shape), the gradient torch was given at each step
(``grad = 0.5 x + cos(x) + noise_t``, tests/problems.py, computed by torch), and
``<c>/<k>/params`` (steps + 1, *shape), the params before the first step and after
each, so that a test can feed the recorded gradients to gradxform without torch.
The tree has a matrix, a batched 3-D leaf (factored over its last two axes), a
vector and a scalar (both unfactored in torch).
"""

from __future__ import annotations

import pathlib

import numpy as np

from tests.problems import make_problem

SHAPES = {"w": (6, 4), "batched": (2, 3, 5), "b": (5,), "s": ()}
# name -> (dtype, steps, torch.optim.Adafactor arguments)
CONFIGS = {
    "default": ("float32", 200, {}),
    "decayed": (
        "float32",
        200,
        {"lr": 0.3, "beta2_decay": -0.5, "eps": (1e-2, 1e-2), "d": 1.0, "weight_decay": 0.1},
    ),
    "float64": ("float64", 60, {"lr": 0.02, "weight_decay": 0.01}),
}


def record(dtype: str, steps: int, config: dict) -> dict:
    import torch

    params0, noise = make_problem(7, steps, SHAPES)
    tdtype = getattr(torch, dtype)
    params = {k: torch.tensor(v, dtype=tdtype, requires_grad=False) for k, v in params0.items()}
    opt = torch.optim.Adafactor(list(params.values()), **config)
    grads = {k: [] for k in params}
    history = {k: [p.detach().clone().numpy()] for k, p in params.items()}
    for t in range(steps):
        with torch.no_grad():
            for k, p in params.items():
                p.grad = 0.5 * p + torch.cos(p) + torch.tensor(noise[k][t], dtype=tdtype)
                grads[k].append(p.grad.clone().numpy())
        opt.step()
        for k, p in params.items():
            history[k].append(p.detach().clone().numpy())
    out = {}
    for k in params:
        out[f"{k}/grads"] = np.stack(grads[k])
        out[f"{k}/params"] = np.stack(history[k])
    return out


def main() -> None:
    import torch

    arrays = {"torch_version": np.array(torch.__version__)}
    for name, (dtype, steps, config) in CONFIGS.items():
        for key, value in record(dtype, steps, config).items():
            arrays[f"{name}/{key}"] = value
    path = pathlib.Path(__file__).resolve().parent / "torch_adafactor.npz"
    np.savez_compressed(path, **arrays)
    print("wrote", path, "torch", torch.__version__, path.stat().st_size, "bytes")


if __name__ == "__main__":
    main()
