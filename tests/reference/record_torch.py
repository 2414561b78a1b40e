"""Records torch.optim trajectories on the shared test problem.

Run from the repository root (needs torch): ``python tests/reference/record_torch.py``.
Writes ``tests/reference/torch_trajectories.npz`` (optimizer trajectories) and
``tests/reference/torch_schedules.npz`` (lr_scheduler sequences), which the tests read
so that CI needs no torch; ``tests/test_torch_parity.py`` also compares live
when torch is importable.
"""

from __future__ import annotations

import pathlib
import sys

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from problems import STEPS, grad, make_problem  # noqa: E402
from reference.torch_configs import (  # noqa: E402
    BASE_LR,
    RECORD_EVERY,
    TORCH_CONFIGS,
    TORCH_SCHEDULES,
)


def torch_trajectory(torch_class: str, kwargs: dict, dtype: str, steps: int = STEPS):
    """Params every RECORD_EVERY steps, as {leaf: array (steps // RECORD_EVERY, *shape)}."""
    import torch

    params0, noise = make_problem()
    tdtype = getattr(torch, dtype)
    params = {k: torch.tensor(v, dtype=tdtype) for k, v in params0.items()}
    noise_t = {k: torch.tensor(v, dtype=tdtype) for k, v in noise.items()}
    opt = getattr(torch.optim, torch_class)(list(params.values()), **kwargs)
    record = {k: [] for k in params}
    for t in range(steps):
        with torch.no_grad():
            for k, p in params.items():
                p.grad = grad(p, noise_t[k][t], torch.cos)
        opt.step()
        if (t + 1) % RECORD_EVERY == 0:
            for k, p in params.items():
                record[k].append(p.detach().numpy().copy())
    return {k: np.stack(v) for k, v in record.items()}


def torch_learning_rates(name: str) -> np.ndarray:
    """The learning rate each of the first ``steps`` updates uses (float64)."""
    import torch

    steps, make_scheduler, _ = TORCH_SCHEDULES[name]
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=BASE_LR)
    scheduler = make_scheduler(torch, opt)
    rates = []
    for _ in range(steps):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    return np.asarray(rates, np.float64)


def main() -> None:
    import torch

    out = {"torch_version": np.array(torch.__version__)}
    for name, (torch_class, _, kwargs) in TORCH_CONFIGS.items():
        for dtype in ("float32", "float64"):
            for leaf, values in torch_trajectory(torch_class, kwargs, dtype).items():
                out[f"{name}/{dtype}/{leaf}"] = values
    path = HERE / "torch_trajectories.npz"
    np.savez_compressed(path, **out)
    print(f"wrote {len(out) - 1} arrays to {path} (torch {torch.__version__})")
    rates = {name: torch_learning_rates(name) for name in TORCH_SCHEDULES}
    rates["torch_version"] = np.array(torch.__version__)
    path = HERE / "torch_schedules.npz"
    np.savez_compressed(path, **rates)
    print(f"wrote {len(rates) - 1} learning-rate sequences to {path}")


if __name__ == "__main__":
    main()
