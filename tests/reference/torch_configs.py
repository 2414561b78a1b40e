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
