"""Records the schedulefree package on the shared problem, for tests/test_schedule_free.py.

Run from the repository root with torch and the package on the path::

    python3 -m pip install --no-deps --target <dir> schedulefree   # 1.4.1 recorded
    PYTHONPATH=.:<dir>:<torch> python3 tests/reference/record_schedulefree.py

Writes ``tests/reference/schedulefree.npz``: for each config ``<c>`` (below), dtype
``<d>`` (float32, float64) and leaf ``<k>`` of the problem (tests/problems.py with
``SEED`` and ``SHAPES``, gradient ``0.5 x + cos(x) + noise_t`` taken at the params
torch holds, i.e. at :math:`y`), ``<c>/<d>/<k>/y`` (the params after every
``EVERY``-th step), ``<c>/<d>/<k>/x`` (the evaluation params after the last step,
read through the optimizer's ``eval()``) and ``<c>/<d>/<k>/z``.
"""

from __future__ import annotations

import pathlib

import numpy as np

from tests.problems import CURVATURE, make_problem

STEPS, EVERY, SEED = 200, 20, 3
SHAPES = {"w": (4, 3), "b": (5,), "batched": (2, 3, 4), "s": ()}
# name -> (class, keyword arguments); the gradxform side of each is in the test
CONFIGS = {
    "sgd_warmup_decay": (
        "SGDScheduleFree",
        {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.01, "warmup_steps": 10},
    ),
    "sgd_r": ("SGDScheduleFree", {"lr": 0.05, "momentum": 0.8, "r": 1.0, "weight_lr_power": 1.0}),
    "adamw_warmup_decay": (
        "AdamWScheduleFree",
        {"lr": 0.01, "betas": (0.9, 0.999), "weight_decay": 0.1, "warmup_steps": 20},
    ),
    "adamw_defaults": ("AdamWScheduleFree", {}),
    "adamw_decay_at_z": (
        "AdamWScheduleFreeReference",
        {"lr": 0.01, "weight_decay": 0.1, "warmup_steps": 20, "decay_at_z": True},
    ),
}


def record(cls_name: str, kwargs: dict, dtype: str) -> dict:
    import schedulefree
    import torch

    start, noise = make_problem(SEED, STEPS, SHAPES)
    tdt = getattr(torch, dtype)
    params = {k: torch.tensor(v, dtype=tdt).requires_grad_() for k, v in start.items()}
    opt = getattr(schedulefree, cls_name)(list(params.values()), **kwargs)
    opt.train()
    ys = {k: [] for k in params}
    for t in range(STEPS):
        with torch.no_grad():
            for k, p in params.items():
                p.grad = CURVATURE * p + torch.cos(p) + torch.tensor(noise[k][t], dtype=tdt)
        opt.step()
        if (t + 1) % EVERY == 0:
            for k, p in params.items():
                ys[k].append(p.detach().clone().numpy())
    out = {}
    for k, p in params.items():
        out[f"{k}/y"] = np.stack(ys[k])
        out[f"{k}/z"] = opt.state[p]["z"].detach().clone().numpy()
    opt.eval()
    for k, p in params.items():
        out[f"{k}/x"] = p.detach().clone().numpy()
    return out


def main() -> None:
    import schedulefree
    import torch

    version = getattr(schedulefree, "__version__", "1.4.1")
    arrays = {"versions": np.array(f"torch {torch.__version__}, schedulefree {version}")}
    for name, (cls_name, kwargs) in CONFIGS.items():
        for dtype in ("float32", "float64"):
            for key, value in record(cls_name, kwargs, dtype).items():
                arrays[f"{name}/{dtype}/{key}"] = value
    path = pathlib.Path(__file__).resolve().parent / "schedulefree.npz"
    np.savez_compressed(path, **arrays)
    print("wrote", path, arrays["versions"])


if __name__ == "__main__":
    main()
