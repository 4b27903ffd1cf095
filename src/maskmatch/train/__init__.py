"""Stage 3, supervised fine-tuning: `maskmatch finetune`, on PyTorch Lightning.

The model (`maskmatch.model.HMERModel`) knows nothing of training: `module.FinetuneModule` wraps it
with the loss, the optimizer and schedule, and the weight EMA; `data.FinetuneData` serves bucketed,
scale-augmented, resumable batches; `callbacks` plan the time budget, write checkpoints atomically,
the JSON-lines log and the plot. Heavy imports live in those modules, not here.
"""
