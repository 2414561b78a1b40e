"""The torch.optim configurations gradxform is checked against, and their presets.

Each row: name -> (torch.optim class name, keyword arguments). The matching
gradxform transform is ``gradxform.torch_compat.<preset>(**kwargs)``.
"""

TORCH_CONFIGS = {
    "sgd_momentum": ("SGD", "sgd", {"lr": 0.05, "momentum": 0.9}),
    "sgd_dampening_l2": (
        "SGD",
        "sgd",
        {"lr": 0.05, "momentum": 0.9, "dampening": 0.3, "weight_decay": 0.01},
    ),
    "sgd_nesterov": ("SGD", "sgd", {"lr": 0.05, "momentum": 0.9, "nesterov": True}),
    "adagrad": ("Adagrad", "adagrad", {"lr": 0.1}),
    "adagrad_decay_init_l2": (
        "Adagrad",
        "adagrad",
        {"lr": 0.1, "lr_decay": 0.01, "initial_accumulator_value": 0.1, "weight_decay": 0.01},
    ),
    "rmsprop": ("RMSprop", "rmsprop", {"lr": 0.01}),
    "rmsprop_centered_momentum_l2": (
        "RMSprop",
        "rmsprop",
        {"lr": 0.01, "centered": True, "momentum": 0.9, "weight_decay": 0.01},
    ),
    "adam": ("Adam", "adam", {"lr": 0.01}),
    "adam_l2": ("Adam", "adam", {"lr": 0.01, "weight_decay": 0.01}),
    "amsgrad": ("Adam", "adam", {"lr": 0.01, "amsgrad": True}),
    "adamw": ("AdamW", "adamw", {"lr": 0.01, "weight_decay": 0.1}),
    "adamw_amsgrad": ("AdamW", "adamw", {"lr": 0.01, "weight_decay": 0.1, "amsgrad": True}),
}

RECORD_EVERY = 10


# --- learning-rate schedulers ----------------------------------------------------
# name -> (steps, function(torch, optimizer) -> torch scheduler,
#          function(gradxform.schedules, base_lr) -> gradxform schedule)
BASE_LR = 0.1
SCHEDULE_STEPS = 400


def _cosine(torch, opt):
    return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=300, eta_min=1e-3)


def _sequential(torch, opt):
    s = torch.optim.lr_scheduler
    warm = s.LinearLR(opt, start_factor=0.1, end_factor=1.0, total_iters=20)
    cos = s.CosineAnnealingLR(opt, T_max=280)
    return s.SequentialLR(opt, [warm, cos], milestones=[20])


TORCH_SCHEDULES = {
    "StepLR": (
        SCHEDULE_STEPS,
        lambda torch, opt: torch.optim.lr_scheduler.StepLR(opt, step_size=30, gamma=0.5),
        lambda S, lr: S.step_decay(lr, 0.5, 30),
    ),
    "MultiStepLR": (
        SCHEDULE_STEPS,
        lambda torch, opt: torch.optim.lr_scheduler.MultiStepLR(opt, [100, 250, 300], 0.3),
        lambda S, lr: S.piecewise_constant(lr, [100, 250, 300], [0.3] * 3),
    ),
    "ExponentialLR": (
        SCHEDULE_STEPS,
        lambda torch, opt: torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.99),
        lambda S, lr: S.exponential_decay(lr, 0.99),
    ),
    "CosineAnnealingLR": (
        300,  # torch's cosine rises again after T_max; gradxform's stays at the floor
        _cosine,
        lambda S, lr: S.cosine_decay(lr, 300, alpha=1e-3 / lr),
    ),
    "CosineAnnealingWarmRestarts": (
        SCHEDULE_STEPS,
        lambda torch, opt: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
            opt, T_0=50, T_mult=2, eta_min=1e-3
        ),
        lambda S, lr: S.cosine_decay(lr, 50, alpha=1e-3 / lr, warm_restarts=True, period_mult=2),
    ),
    "CosineAnnealingWarmRestarts_mult1": (
        SCHEDULE_STEPS,
        lambda torch, opt: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=70),
        lambda S, lr: S.cosine_decay(lr, 70, warm_restarts=True),
    ),
    "LinearLR": (
        SCHEDULE_STEPS,
        lambda torch, opt: torch.optim.lr_scheduler.LinearLR(
            opt, start_factor=0.25, end_factor=1.0, total_iters=100
        ),
        lambda S, lr: S.linear_decay(lr * 0.25, lr, 100),
    ),
    "PolynomialLR": (
        SCHEDULE_STEPS,
        lambda torch, opt: torch.optim.lr_scheduler.PolynomialLR(opt, total_iters=300, power=2.0),
        lambda S, lr: S.polynomial_decay(lr, 0.0, 2.0, 300),
    ),
    "SequentialLR": (
        300,
        _sequential,
        lambda S, lr: S.join([S.linear_decay(0.1 * lr, lr, 20), S.cosine_decay(lr, 280)], [20]),
    ),
}


# --- ReduceLROnPlateau, OneCycleLR, CyclicLR (issue #17) ---------------------------
# Recorded into torch_lr_schedulers.npz by record_torch.py.
PLATEAU_STEPS = 400


def plateau_losses() -> dict:
    """The monitored loss sequences (float32 values, so both sides see the same numbers)."""
    import numpy as np

    rng = np.random.default_rng(17)
    t = np.arange(PLATEAU_STEPS)
    noise = rng.normal(size=PLATEAU_STEPS)
    decay = np.exp(-t / 60.0)
    stairs = 1.0 + 0.5 * (t < 100) + 0.25 * (t < 220) + 0.125 * (t < 300)
    sequences = {
        "noisy_decreasing": 0.1 + 2.0 * decay + 0.02 * noise,
        "constant": np.ones(PLATEAU_STEPS),
        "stairs": stairs + 1e-3 * noise,
        "negative_noisy": -1.0 - 2.0 * (1 - decay) + 0.02 * noise,
        "negative_constant": -np.ones(PLATEAU_STEPS),
        "negative_stairs": -stairs + 1e-3 * noise,
    }
    return {k: v.astype(np.float32) for k, v in sequences.items()}


# name -> (the optimizer's lr, ReduceLROnPlateau keyword arguments; mode is "min")
PLATEAU_CONFIGS = {
    "defaults": (1.0, {}),
    "abs_cooldown": (
        1.0,
        {"factor": 0.5, "patience": 5, "threshold": 1e-3, "threshold_mode": "abs", "cooldown": 3},
    ),
    "min_lr": (0.1, {"factor": 0.5, "patience": 2, "threshold": 1e-3, "min_lr": 1e-3}),
    "patience0_cooldown": (1.0, {"factor": 0.7, "patience": 0, "cooldown": 2}),
    "eps_stops_halving": (1.0, {"factor": 0.5, "patience": 0}),
    "eps_lr": (0.01, {"factor": 0.5, "patience": 1, "eps": 1e-6}),
}


def plateau_kwargs(lr: float, torch_kwargs: dict) -> dict:
    """gradxform's reduce_on_plateau arguments for a torch ReduceLROnPlateau on lr ``lr``.

    torch's ``min_lr`` and ``eps`` are learning rates; gradxform's ``min_scale``
    and ``eps`` are fractions of the initial one.
    """
    kwargs = {k: v for k, v in torch_kwargs.items() if k not in ("min_lr", "eps")}
    kwargs["min_scale"] = torch_kwargs.get("min_lr", 0.0) / lr
    kwargs["eps"] = torch_kwargs.get("eps", 1e-8) / lr
    return kwargs


LR_SCHEDULER_STEPS = 400

# name -> (torch class name, keyword arguments, gradxform schedules of lr and momentum)
# (torch's base_momentum / max_momentum defaults are OneCycleLR's 0.85 / 0.95 and
# CyclicLR's 0.8 / 0.9)
CYCLE_SCHEDULES = {
    "OneCycleLR": (
        "OneCycleLR",
        {"max_lr": 0.1, "total_steps": LR_SCHEDULER_STEPS},
        lambda S: S.one_cycle(LR_SCHEDULER_STEPS, 0.1),
        lambda S: S.one_cycle_momentum(LR_SCHEDULER_STEPS),
    ),
    "OneCycleLR_linear_three_phase": (
        "OneCycleLR",
        {
            "max_lr": 0.3,
            "total_steps": 333,
            "pct_start": 0.37,
            "anneal_strategy": "linear",
            "three_phase": True,
            "div_factor": 10.0,
            "final_div_factor": 100.0,
            "base_momentum": 0.8,
            "max_momentum": 0.9,
        },
        lambda S: S.one_cycle(
            333, 0.3, 0.37, "linear", div_factor=10.0, final_div_factor=100.0, three_phase=True
        ),
        lambda S: S.one_cycle_momentum(333, 0.8, 0.9, 0.37, "linear", three_phase=True),
    ),
    "OneCycleLR_cos_three_phase": (
        "OneCycleLR",
        {"max_lr": 1.0, "total_steps": 357, "pct_start": 0.2, "three_phase": True},
        lambda S: S.one_cycle(357, 1.0, 0.2, three_phase=True),
        lambda S: S.one_cycle_momentum(357, pct_start=0.2, three_phase=True),
    ),
    "CyclicLR_triangular": (
        "CyclicLR",
        {"base_lr": 0.01, "max_lr": 0.1, "step_size_up": 50},
        lambda S: S.cyclic(0.01, 0.1, 50),
        lambda S: S.cyclic(0.9, 0.8, 50),
    ),
    "CyclicLR_triangular2_asymmetric": (
        "CyclicLR",
        {
            "base_lr": 0.01,
            "max_lr": 0.1,
            "step_size_up": 40,
            "step_size_down": 60,
            "mode": "triangular2",
        },
        lambda S: S.cyclic(0.01, 0.1, 40, 60, mode="triangular2"),
        lambda S: S.cyclic(0.9, 0.8, 40, 60, mode="triangular2"),
    ),
    "CyclicLR_exp_range": (
        "CyclicLR",
        {"base_lr": 0.001, "max_lr": 0.1, "step_size_up": 30, "mode": "exp_range", "gamma": 0.995},
        lambda S: S.cyclic(0.001, 0.1, 30, mode="exp_range", gamma=0.995),
        lambda S: S.cyclic(0.9, 0.8, 30, mode="exp_range", gamma=0.995),
    ),
}

# trajectories on the shared problem: name -> (torch optimizer, kwargs, OneCycleLR kwargs)
CYCLE_TRAJECTORIES = {
    "sgd_one_cycle": ("SGD", {"lr": 0.1, "momentum": 0.9}, {"max_lr": 0.1}),
    "adam_one_cycle": ("Adam", {"lr": 0.01}, {"max_lr": 0.01}),
}
