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
