"""Stage 1, self-supervised encoder pretraining: `maskmatch pretrain`, on PyTorch Lightning.

Training images only, never labels (`data`). Two views of each image with known geometry, made on the
training device (`views`); a global NT-Xent (`global_loss`) and a local InfoNCE at matched ink points
(`local_loss`); a label-free probe (`probe`); the LightningModule (`module`); view pictures
(`pictures`). Time budget, checkpoints and the log are finetune's (`maskmatch.engine.callbacks`). The
run exports `encoder.safetensors`, which `maskmatch finetune --init` starts from.
"""
