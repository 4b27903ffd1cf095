"""Loading users' image files safely: size checked before decoding, one-line errors."""

from __future__ import annotations

import io
import math
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

MAX_PIXELS = 40_000_000  # the most pixels decoded at full size; a larger PNG, BMP, ... is refused as a bomb
MAX_JPEG_PIXELS = 150_000_000  # a JPEG up to this size is decoded reduced (by 2, 4 or 8, Pillow's draft); larger: refused
WORK_PIXELS = 4_000_000  # larger images are reduced to about this size: far more than the model's input needs
READABLE = "PNG, JPEG, BMP, GIF, TIFF, WebP"


def load_image(source: str | Path | bytes) -> np.ndarray:
    """An image file (PNG, JPEG, BMP, ...) -> uint8 grayscale (H, W); ValueError with the reason.

    A phone photo (a 48-megapixel JPEG) is decoded at a reduced scale, and any image over WORK_PIXELS is
    reduced by an integer factor, so memory stays bounded; the normalizer only needs the ink's shape."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # sizes are checked here, below
            with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
                width, height = image.size
                limit = MAX_JPEG_PIXELS if image.format == "JPEG" else MAX_PIXELS
                if width * height > limit:
                    raise ValueError(f"image too large ({width}x{height} pixels > {limit}); refused")
                if image.format == "JPEG" and width * height > WORK_PIXELS:
                    factor = _reduction(width * height)
                    image.draft("L", (-(-width // factor), -(-height // factor)))  # decodes at 1/2, 1/4 or 1/8
                if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
                    # Transparent pixels are background: composite onto white before graying.
                    rgba = image.convert("RGBA")
                    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                    image = Image.alpha_composite(white, rgba)
                gray = image.convert("L")
                if gray.width * gray.height > WORK_PIXELS:
                    gray = gray.reduce(_reduction(gray.width * gray.height))
                return np.asarray(gray, dtype=np.uint8)
    except Image.DecompressionBombError:
        raise ValueError(f"image too large (over {MAX_JPEG_PIXELS} pixels); refused") from None
    except FileNotFoundError:
        raise ValueError("no such file") from None
    except Image.UnidentifiedImageError:
        raise ValueError(f"not a readable image (not a {READABLE} file)") from None
    except (OSError, SyntaxError) as e:  # Pillow's errors for truncated or broken files
        raise ValueError(f"not a readable image ({' '.join(str(e).split())})") from None


def _reduction(pixels: int) -> int:
    """The smallest integer factor that brings an image of this many pixels to at most WORK_PIXELS."""
    return max(1, math.ceil(math.sqrt(pixels / WORK_PIXELS)))
