"""Loading users' image files safely: size checked before decoding, one-line errors."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

MAX_PIXELS = 40_000_000  # a 40-megapixel photo is the largest we decode; bigger is refused as a bomb


def load_image(source: str | Path | bytes) -> np.ndarray:
    """An image file (PNG, JPEG, BMP, ...) -> uint8 grayscale (H, W); ValueError with the reason."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
                width, height = image.size
                if width * height > MAX_PIXELS:
                    raise ValueError(f"image too large ({width}x{height} pixels > {MAX_PIXELS}); refused")
                if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
                    # Transparent pixels are background: composite onto white before graying.
                    rgba = image.convert("RGBA")
                    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                    image = Image.alpha_composite(white, rgba)
                return np.asarray(image.convert("L"), dtype=np.uint8)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ValueError(f"image too large (over {MAX_PIXELS} pixels); refused") from None
    except FileNotFoundError:
        raise ValueError("no such file") from None
    except (OSError, SyntaxError) as e:  # Pillow's errors for unreadable or truncated files
        raise ValueError(f"not a readable image ({e})") from None
