"""Records torch.optim's Adadelta, Rprop, RAdam, Adamax and NAdam on the shared problem.

Run from the repository root (needs torch):
``PYTHONPATH=<torch> python tests/reference/record_torch_more.py``. Writes
``tests/reference/torch_more.npz``: for each config ``<c>`` (CONFIGS), dtype
``<d>`` and leaf ``<k>``, ``<c>/<d>/<k>`` (STEPS // EVERY, *shape), the params
after every EVERY-th step of torch on tests/problems.py's problem (seed SEED,
the mixed tree SHAPES with a batched 3-D leaf; the gradient is computed by
torch from its own params), read by tests/test_torch_parity_more.py, so that
CI needs no torch.

float64 runs set torch's default dtype to float64, as a float64 torch program
does: NAdam keeps its product of momentum factors in the default dtype
(float32 otherwise, even for float64 params).
"""

from __future__ import annotations

import pathlib
import sys

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from problems import grad, make_problem  # noqa: E402

STEPS, EVERY, SEED = 200, 20, 3
SHAPES = {"w": (4, 3), "b": (5,), "batched": (2, 3, 4), "s": ()}

# name -> (torch.optim class, keyword arguments); tests/test_torch_parity_more.py
# pairs each with its gradxform optimizer
CONFIGS = {
    "adadelta": ("Adadelta", {"lr": 1.0}),
    "adadelta_l2": ("Adadelta", {"lr": 0.5, "rho": 0.8, "eps": 1e-4, "weight_decay": 0.01}),
    "rprop": ("Rprop", {"lr": 0.01}),
    "rprop_bounds": ("Rprop", {"lr": 0.05, "etas": (0.3, 1.5), "step_sizes": (1e-3, 0.2)}),
    "radam": ("RAdam", {"lr": 0.01}),
    "radam_eps0": ("RAdam", {"lr": 0.01, "betas": (0.8, 0.99), "eps": 0.0}),
    "adamax": ("Adamax", {"lr": 0.01}),
    "adamax_betas": ("Adamax", {"lr": 0.02, "betas": (0.8, 0.99), "eps": 1e-3}),
    "nadam": ("NAdam", {"lr": 0.01}),
    "nadam_l2": ("NAdam", {"lr": 0.01, "weight_decay": 0.01, "momentum_decay": 0.01}),
    "nadam_decoupled": (
        "NAdam",
        {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True},
    ),
}


def torch_trajectory(torch_class: str, kwargs: dict, dtype: str) -> dict:
    """Params every EVERY steps, as {leaf: array (STEPS // EVERY, *shape)}."""
    import torch

    params0, noise = make_problem(SEED, STEPS, SHAPES)
    tdtype = getattr(torch, dtype)
    previous_default = torch.get_default_dtype()
    torch.set_default_dtype(tdtype)
    try:
        params = {k: torch.tensor(v, dtype=tdtype) for k, v in params0.items()}
        noise_t = {k: torch.tensor(v, dtype=tdtype) for k, v in noise.items()}
        opt = getattr(torch.optim, torch_class)(list(params.values()), **kwargs)
        record = {k: [] for k in params}
        for t in range(STEPS):
            with torch.no_grad():
                for k, p in params.items():
                    p.grad = grad(p, noise_t[k][t], torch.cos)
            opt.step()
            if (t + 1) % EVERY == 0:
                for k, p in params.items():
                    record[k].append(p.detach().numpy().copy())
    finally:
        torch.set_default_dtype(previous_default)
    return {k: np.stack(v) for k, v in record.items()}


def main() -> None:
    import torch

    out = {"torch_version": np.array(torch.__version__)}
    for name, (torch_class, kwargs) in CONFIGS.items():
        for dtype in ("float32", "float64"):
            for leaf, values in torch_trajectory(torch_class, kwargs, dtype).items():
                out[f"{name}/{dtype}/{leaf}"] = values
    path = HERE / "torch_more.npz"
    np.savez_compressed(path, **out)
    print(f"wrote {len(out) - 1} arrays to {path} (torch {torch.__version__})")


if __name__ == "__main__":
    main()
