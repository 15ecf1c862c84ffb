"""The trainer: Hydra app, training loop, schedules, mixup, checkpoints, DDP and logging."""
