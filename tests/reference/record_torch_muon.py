"""Records torch.optim.Muon on a 2-D-only problem, for tests/test_muon.py.

Run from the repository root (needs torch >= 2.9):
``PYTHONPATH=<torch> python tests/reference/record_torch_muon.py``. Writes
``tests/reference/torch_muon.npz``: for each config ``<c>`` and leaf ``<k>``,
``<c>/<k>/grads`` (steps, *shape), the gradient torch was given at each step, and
``<c>/<k>/params`` (steps + 1, *shape), the params before the first step and after
each. The gradient is ``2 * scale * (p - target) + noise_t`` (torch's layout
``(out, in)``), so a test can feed the recorded gradients to gradxform and compare
each step's params without torch.
"""

from __future__ import annotations

import pathlib

import numpy as np

STEPS = 200
SHAPES = {"w1": (6, 4), "w2": (3, 7)}  # (out, in): one tall, one wide
CONFIGS = {
    "default": {"lr": 0.02},  # weight_decay 0.1, momentum 0.95, nesterov, "original"
    "plain_rms": {
        "lr": 0.05,
        "weight_decay": 0.0,
        "momentum": 0.9,
        "nesterov": False,
        "adjust_lr_fn": "match_rms_adamw",
    },
}


def problem():
    """Initial params, targets, curvature scales and per-step noise (float32)."""
    rng = np.random.default_rng(18)
    out = {}
    for k, shape in SHAPES.items():
        out[k] = (
            rng.standard_normal(shape).astype(np.float32),
            rng.standard_normal(shape).astype(np.float32),
            rng.uniform(0.5, 2.0, shape).astype(np.float32),
            (0.1 * rng.standard_normal((STEPS, *shape))).astype(np.float32),
        )
    return out


def record(config: dict) -> dict:
    import torch

    data = problem()
    params = {k: torch.tensor(v[0]) for k, v in data.items()}
    opt = torch.optim.Muon(list(params.values()), **config)
    grads = {k: [] for k in params}
    history = {k: [p.detach().clone().numpy()] for k, p in params.items()}
    for t in range(STEPS):
        with torch.no_grad():
            for k, p in params.items():
                _, target, scale, noise = (torch.tensor(a) for a in data[k])
                p.grad = 2 * scale * (p - target) + noise[t]
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
    for name, config in CONFIGS.items():
        for key, value in record(config).items():
            arrays[f"{name}/{key}"] = value
    path = pathlib.Path(__file__).resolve().parent / "torch_muon.npz"
    np.savez_compressed(path, **arrays)
    print("wrote", path, "torch", torch.__version__)


if __name__ == "__main__":
    main()
