"""`maskmatch pretrain --show-views N --out views.png`: each image beside its two views, matched points in colour."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from maskmatch.data.batching import Batch
from maskmatch.files import write_atomic
from maskmatch.pretrain.views import ViewPair

SHOWN_POINTS = 12  # points drawn per image: enough to judge the matches, few enough to tell apart


def draw_views(batch: Batch, views: ViewPair, path: Path, names: list[str]) -> None:
    """One row per image: the original, view 1, view 2, each cropped to its box; point k has one colour in all three."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    B = len(batch)
    colours = colormaps["tab20"](np.arange(SHOWN_POINTS) % 20)
    fig = Figure(figsize=(15, 2.2 * B), layout="constrained")
    axes = fig.subplots(B, 3, squeeze=False)
    for b in range(B):
        keep = np.flatnonzero(views.valid[b].cpu().numpy())[:SHOWN_POINTS]
        panels = [(batch.images[b, 0], batch.mask[b], views.points[b], "original")]
        for k in range(2):
            i = k * B + b
            panels.append((views.images[i, 0], views.mask[i], views.view_points[i], f"view {k + 1}"))
        for ax, (image, mask, points, title) in zip(axes[b], panels):
            h, w = int((~mask).any(1).sum()), int((~mask).any(0).sum())
            ax.imshow(image[:h, :w].float().cpu().numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            xy = points[keep].float().cpu().numpy() - 0.5  # pixel centres -> imshow's integer coordinates
            ax.scatter(xy[:, 0], xy[:, 1], s=18, c=colours[: len(keep)], edgecolors="white", linewidths=0.4)
            ax.set_title(f"{names[b]}: {title}" if title == "original" else title, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    write_atomic(Path(path), lambda f: fig.savefig(f, format="png", dpi=80))
