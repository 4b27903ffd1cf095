"""Stage 2, Mask & Match: a self-supervised attention network trained with progressive spatial masking.

The student (encoder + attention network + feature predictor) sees images with blocks of ink hidden;
the teacher, an exponential moving average of encoder and attention network, sees them whole. Pieces:
schedule.py (how much, how large, how guided the masking is at a point of training), masking.py (the
block mask), one loss per file, teacher.py, config.py, module.py (the LightningModule), drawing.py.
"""
