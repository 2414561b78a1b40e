"""Records pytorch-optimizer's SophiaH on the shared problem, for tests/test_sophia.py.

Run from the repository root, with torch and pytorch-optimizer (4.1.0) importable:
``PYTHONPATH=<pytorch-optimizer>:<torch>:. python tests/reference/record_torch_sophia.py``.
Writes ``tests/reference/torch_sophia.npz``: for each config ``<c>``, dtype ``<d>``
(float32, float64) and leaf ``<k>`` of the shared mixed tree (tests/problems.py, seed 3,
the batched 3-D leaf included), ``<c>/<d>/<k>``: the params after every 20th of 200
steps. SophiaH estimates the Hessian's diagonal itself (Hutchinson, Rademacher probes,
``loss.backward(create_graph=True)``); the loss is separable (its Hessian is
``diag(CURVATURE - sin x)``), so every probe gives the exact diagonal and gradxform's
own probes reproduce it without the recorded random numbers.
"""

from __future__ import annotations

import pathlib

import numpy as np

from tests.problems import CURVATURE, make_problem

STEPS, EVERY, SEED = 200, 20, 3
SHAPES = {"w": (4, 3), "b": (5,), "batched": (2, 3, 4), "s": ()}
CONFIGS = {
    # SophiaH's defaults (clip p = 0.01: nearly every coordinate is clipped), k = 10
    "defaults": {"lr": 0.06},
    # a mix of clipped and unclipped coordinates, decoupled weight decay
    "curvature_matters": {
        "lr": 0.05,
        "betas": (0.9, 0.95),
        "weight_decay": 0.1,
        "p": 1.0,
        "update_period": 5,
        "eps": 1e-3,
    },
}


def record(config: dict, dtype: str) -> dict:
    import torch
    from pytorch_optimizer import SophiaH

    torch_dtype = getattr(torch, dtype)
    x0, noise = make_problem(SEED, STEPS, SHAPES)
    params = {k: torch.tensor(v, dtype=torch_dtype, requires_grad=True) for k, v in x0.items()}
    opt = SophiaH(list(params.values()), hessian_distribution="rademacher", **config)
    history = {k: [] for k in params}
    for t in range(STEPS):
        loss = sum(
            torch.sum(0.5 * CURVATURE * p * p + torch.sin(p))
            + torch.sum(torch.tensor(noise[k][t], dtype=torch_dtype) * p)
            for k, p in params.items()
        )
        opt.zero_grad(set_to_none=True)
        loss.backward(create_graph=True)
        opt.step()
        if (t + 1) % EVERY == 0:
            for k, p in params.items():
                history[k].append(p.detach().clone().numpy())
    return {k: np.stack(v) for k, v in history.items()}


def main() -> None:
    from importlib.metadata import version

    import torch

    arrays = {
        "torch_version": np.array(torch.__version__),
        "pytorch_optimizer_version": np.array(version("pytorch-optimizer")),
    }
    for name, config in CONFIGS.items():
        for dtype in ("float32", "float64"):
            for key, value in record(config, dtype).items():
                arrays[f"{name}/{dtype}/{key}"] = value
    path = pathlib.Path(__file__).resolve().parent / "torch_sophia.npz"
    np.savez_compressed(path, **arrays)
    print(
        "wrote", path, "torch", torch.__version__, "pytorch-optimizer", version("pytorch-optimizer")
    )


if __name__ == "__main__":
    main()
