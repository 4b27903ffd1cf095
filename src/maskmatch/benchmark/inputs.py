"""What `maskmatch benchmark` times: synthetic expressions of CROHME-like size or a folder's images, and the model
(weights, an onnx export, or a random one)."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from maskmatch.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
EXPRESSION_SPREAD = (6.25, 0.8, 0.5)  # synthetic symbols per expression: log-normal median, sigma; fraction share


def synthetic_expressions(n: int, seed: int = 0, render=None) -> list:
    """n rendered scribbled 'expressions', uint8 (H, W) like the training renders, sized like CROHME.

    Each is a row of random pen-stroke glyphs, some of them smaller and raised or lowered (scripts), or,
    half the time, two such rows over a fraction bar; the symbol count is log-normal. `render_strokes`
    scales them as it scales real ink, so their sizes come out of the same normalization. EXPRESSION_SPREAD
    was fitted by eye: for 1000 of them (seed 0) H is 63/110/195 px, W 77/338/902 px and H x W
    9.2k/40.9k/102k px at the 10th/50th/90th percentiles, against 70/113/192, 102/323/788 and
    7.9k/38.6k/129k for the 983 images of CROHME 2014's test set rendered by `maskmatch data build`.
    """
    import numpy as np

    from maskmatch.data.render import RenderConfig, render_strokes

    rng = np.random.default_rng(seed)
    median, sigma, fractions = EXPRESSION_SPREAD

    def glyph(x: float, y: float, size: float) -> list:
        strokes = []
        for _ in range(rng.integers(1, 3)):
            corners = rng.random((rng.integers(3, 7), 2)) * size
            t = np.linspace(0, 1, 4 * len(corners))  # a dense pen trace through random corners
            knots = np.linspace(0, 1, len(corners))
            strokes.append(np.stack([np.interp(t, knots, corners[:, i]) for i in (0, 1)], axis=1) + (x, y))
        return strokes

    def row(count: int, y: float) -> tuple[list, float]:
        strokes, x = [], 0.0
        for i in range(count):
            if i and rng.random() < 0.25:  # a script: smaller, raised or lowered
                strokes += glyph(x, y + rng.choice([-0.45, 0.55]), 0.6)
                x += 0.8
            else:
                strokes += glyph(x, y, 1.0)
                x += 1.3
        return strokes, x

    images = []
    for _ in range(n):
        count = int(np.clip(np.round(np.exp(rng.normal(np.log(median), sigma))), 1, 24))
        if count >= 2 and rng.random() < fractions:
            split = int(rng.integers(1, count))
            top, top_w = row(split, 0.0)
            bottom, bottom_w = row(count - split, 2.0)
            width = max(top_w, bottom_w)
            strokes = [s + ((width - top_w) / 2, 0) for s in top] + [s + ((width - bottom_w) / 2, 0) for s in bottom]
            strokes.append(np.array([[-0.1, 1.5], [width - 0.2, 1.5]]))  # the fraction bar
        else:
            strokes = row(count, 0.0)[0]
        images.append(render_strokes(strokes, render or RenderConfig()))
    return images


def folder_images(folder: Path, n: int, render) -> tuple[list, float]:
    """The first n images of a folder (sorted by name), normalized as the recognizer normalizes image files
    -> (images, median preprocessing ms)."""
    from maskmatch.data.images import load_image
    from maskmatch.data.bitmap import normalize_bitmap

    if not folder.is_dir():
        raise UserError(f"--images {folder}: no such folder")
    files = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())[:n]
    if not files:
        raise UserError(f"--images {folder}: no {', '.join(IMAGE_SUFFIXES)} files in this folder")
    images, times = [], []
    for f in files:
        start = time.perf_counter()
        try:
            images.append(normalize_bitmap(load_image(f), render))
        except ValueError as e:
            raise UserError(f"{f}: {e}") from None
        times.append(time.perf_counter() - start)
    return images, 1e3 * statistics.median(times)


def load_model(path: str | None, preset: str, seed: int, threads: int | None = None):
    """(model in eval mode, render config, description): the weights at `path` or an onnx export folder (run by
    onnxruntime with `threads`), loaded as `Recognizer.load` loads them, or a random model."""
    import torch

    from maskmatch.data.render import RenderConfig
    from maskmatch.model import HMERModel, ModelConfig
    from maskmatch.onnx_model import OnnxModel
    from maskmatch.recognizer import Recognizer

    if path is None:
        torch.manual_seed(seed)
        config = ModelConfig.tiny() if preset == "tiny" else ModelConfig()
        return HMERModel(config).eval(), RenderConfig(), f"random initialization (seed {seed}), {preset} config"
    try:
        rec = Recognizer.load(path, "cpu", threads=threads)
    except ValueError as e:
        raise UserError(str(e)) from None
    if isinstance(rec.model, OnnxModel):
        import onnxruntime

        return rec.model, rec.render, f"{path} (onnxruntime {onnxruntime.__version__})"
    return rec.model, rec.render, str(path)
