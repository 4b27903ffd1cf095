"""Stage 3, supervised fine-tuning: `maskmatch finetune`, on the engine (maskmatch.engine).

The model (`maskmatch.model.HMERModel`) knows nothing of training: `module.FinetuneModule` wraps it
with the loss and the weight EMA; `data.loading.FinetuneData` serves its bucketed, scale-augmented,
resumable batches. Heavy imports live in those modules, not here.
"""
