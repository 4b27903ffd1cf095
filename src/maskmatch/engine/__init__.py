"""The training engine every stage runs on, on PyTorch Lightning, knowing no stage in particular.

`runner.run_stage(stage, config, run_dir, ...)` trains a `runner.Stage` (config class, data, module, what it
monitors and exports); `common` holds the LightningModule skeleton's pieces (AdamW set-up, seeding, checkpoint
self-description); `callbacks` plan the time budget, write checkpoints atomically, the JSON-lines log and the
plot; `schedule` the learning rate, the EMA decay and the budget plan; `ema` the weight average; `config` the
sections every stage shares (data, optim, trainer). Heavy imports live in those modules, not here.
"""
