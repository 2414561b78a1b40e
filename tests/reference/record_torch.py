"""Records torch.optim trajectories on the shared test problem.

Run from the repository root (needs torch): ``python tests/reference/record_torch.py``.
Writes ``tests/reference/torch_trajectories.npz`` (optimizer trajectories),
``tests/reference/torch_schedules.npz`` (lr_scheduler sequences) and
``tests/reference/torch_lr_schedulers.npz`` (ReduceLROnPlateau decisions, OneCycleLR and
CyclicLR learning rates and momenta, trajectories under OneCycleLR), which the tests read
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
    CYCLE_SCHEDULES,
    CYCLE_TRAJECTORIES,
    LR_SCHEDULER_STEPS,
    PLATEAU_CONFIGS,
    RECORD_EVERY,
    TORCH_CONFIGS,
    TORCH_SCHEDULES,
    plateau_losses,
)


def torch_trajectory(
    torch_class: str, kwargs: dict, dtype: str, steps: int = STEPS, scheduler=None
):
    """Params every RECORD_EVERY steps, as {leaf: array (steps // RECORD_EVERY, *shape)}.

    ``scheduler(torch, optimizer)``, if given, makes an lr_scheduler stepped after each step.
    """
    import torch

    params0, noise = make_problem()
    tdtype = getattr(torch, dtype)
    params = {k: torch.tensor(v, dtype=tdtype) for k, v in params0.items()}
    noise_t = {k: torch.tensor(v, dtype=tdtype) for k, v in noise.items()}
    opt = getattr(torch.optim, torch_class)(list(params.values()), **kwargs)
    schedule = scheduler(torch, opt) if scheduler is not None else None
    record = {k: [] for k in params}
    for t in range(steps):
        with torch.no_grad():
            for k, p in params.items():
                p.grad = grad(p, noise_t[k][t], torch.cos)
        opt.step()
        if schedule is not None:
            schedule.step()
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


def torch_plateau_scales(lr: float, kwargs: dict, losses: np.ndarray, mode: str) -> np.ndarray:
    """``lr / initial lr`` after each ``scheduler.step(loss)`` of ReduceLROnPlateau (float64).

    ``mode="max"`` is fed the negated losses.
    """
    import torch

    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode=mode, **kwargs)
    sign = 1.0 if mode == "min" else -1.0
    scales = []
    for loss in losses:
        opt.step()
        scheduler.step(sign * float(loss))
        scales.append(opt.param_groups[0]["lr"] / lr)
    return np.asarray(scales, np.float64)


def torch_cycle(torch_class: str, kwargs: dict, optimizer: str = "SGD", steps: int | None = None):
    """(lr, momentum) each update uses under OneCycleLR or CyclicLR (Adam: its beta1)."""
    import torch

    steps = steps or kwargs.get("total_steps", LR_SCHEDULER_STEPS)
    param = [torch.zeros(1, requires_grad=True)]
    opt = torch.optim.SGD(param, lr=0.1, momentum=0.9) if optimizer == "SGD" else None
    opt = opt or torch.optim.Adam(param, lr=0.1)
    scheduler = getattr(torch.optim.lr_scheduler, torch_class)(opt, **kwargs)
    rates, momenta = [], []
    for _ in range(steps):
        group = opt.param_groups[0]
        rates.append(group["lr"])
        momenta.append(group["momentum"] if optimizer == "SGD" else group["betas"][0])
        opt.step()
        scheduler.step()
    return np.asarray(rates, np.float64), np.asarray(momenta, np.float64)


def record_lr_schedulers() -> None:
    """Writes torch_lr_schedulers.npz (issue #17's schedulers)."""
    import torch

    out = {"torch_version": np.array(torch.__version__)}
    losses = plateau_losses()
    for name, values in losses.items():
        out[f"losses/{name}"] = values
    for config, (lr, kwargs) in PLATEAU_CONFIGS.items():
        for name, values in losses.items():
            for mode in ("min", "max"):
                out[f"plateau/{config}/{name}/{mode}"] = torch_plateau_scales(
                    lr, kwargs, values, mode
                )
    for name, (torch_class, kwargs, _, _) in CYCLE_SCHEDULES.items():
        out[f"cycle/{name}/lr"], out[f"cycle/{name}/momentum"] = torch_cycle(torch_class, kwargs)
        if torch_class == "OneCycleLR":
            out[f"cycle/{name}/adam_beta1"] = torch_cycle(torch_class, kwargs, "Adam")[1]
    for name, (torch_class, kwargs, cycle) in CYCLE_TRAJECTORIES.items():

        def one_cycle(torch, opt, cycle=cycle):
            return torch.optim.lr_scheduler.OneCycleLR(opt, total_steps=STEPS, **cycle)

        for dtype in ("float32", "float64"):
            trajectory = torch_trajectory(torch_class, kwargs, dtype, scheduler=one_cycle)
            for leaf, values in trajectory.items():
                out[f"trajectory/{name}/{dtype}/{leaf}"] = values
    path = HERE / "torch_lr_schedulers.npz"
    np.savez_compressed(path, **out)
    print(f"wrote {len(out) - 1} arrays to {path}")


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
    record_lr_schedulers()


if __name__ == "__main__":
    main()
