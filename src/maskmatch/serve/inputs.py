"""Request bodies to recognizer inputs, and attention maps placed where the page can draw them.

A request is JSON `{"strokes": [[[x, y], ...], ...], "beam"?: int, "attention"?: bool}` or a multipart form
with an image in `file` (and optional `beam`, `attention` fields); `beam` and `attention` may also be query
parameters. Mistakes raise BadRequest with the status and a one-line reason.
"""

from __future__ import annotations

import base64
import io
import json
import math
import reprlib
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request

from maskmatch.data.render import Placement

MAX_POINTS = 200_000  # pen points per request: far above a page of handwriting, bounds rendering time
MAX_BEAM = 32


class BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


@dataclass
class Job:
    x: Any  # strokes: a list of (n_i, 2) float arrays; or image file bytes
    is_strokes: bool
    beam: int
    attention: bool


def _shown(value: Any, limit: int = 60) -> str:
    """A request's value as its error message quotes it: at most `limit` characters, whatever was sent."""
    text = reprlib.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _flag(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("1", "true", "yes", "0", "false", "no", ""):
        return value.lower() in ("1", "true", "yes")
    raise BadRequest(422, f"{name} must be true or false, got {_shown(value)}")


def _beam(value: Any) -> int:
    try:
        beam = int(value) if not isinstance(value, (bool, float)) else None
    except (TypeError, ValueError):
        beam = None
    if beam is None or not 1 <= beam <= MAX_BEAM:
        raise BadRequest(422, f"beam must be an integer from 1 (greedy) to {MAX_BEAM}, got {_shown(value)}")
    return beam


def parse_strokes(strokes: Any) -> list[np.ndarray]:
    """JSON strokes -> (n_i, 2) float64 arrays (empty strokes dropped); BadRequest 422 naming the problem."""
    if not isinstance(strokes, list):
        raise BadRequest(422, 'expected {"strokes": [[[x, y], ...], ...]}')
    out, points = [], 0
    for i, stroke in enumerate(strokes):
        if not isinstance(stroke, list):
            raise BadRequest(422, f"stroke {i} is not a list of [x, y] points")
        points += len(stroke)
        if points > MAX_POINTS:
            raise BadRequest(422, f"more than {MAX_POINTS} points")
        if not stroke:
            continue
        if not all(isinstance(p, list) and len(p) == 2 and all(_number(v) for v in p) for p in stroke):
            raise BadRequest(422, f"stroke {i}: every point must be [x, y] with two finite numbers")
        out.append(np.asarray(stroke, dtype=np.float64))
    if not out:
        raise BadRequest(422, "no ink: the strokes hold no point")
    return out


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


async def read_job(request: Request, default_beam: int) -> Job:
    """The request -> a Job; BadRequest for a wrong content type, bad JSON, a missing file, bad options."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    options: dict[str, Any] = dict(request.query_params)
    if kind == "application/json":
        try:
            body = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError) as e:
            raise BadRequest(400, f"bad JSON: {' '.join(str(e).split())}") from None
        except RecursionError:  # found by tests/test_fuzz.py: 100,000 nested arrays
            raise BadRequest(400, "bad JSON: nested too deeply") from None
        if not isinstance(body, dict) or "strokes" not in body:
            raise BadRequest(422, 'expected {"strokes": [[[x, y], ...], ...]}')
        options.update({k: body[k] for k in ("beam", "attention") if k in body})
        x, is_strokes = parse_strokes(body["strokes"]), True
    elif kind == "multipart/form-data":
        try:
            form = await request.form()
        except (HTTPException, MultiPartException, ValueError) as e:
            reason = getattr(e, "detail", None) or getattr(e, "message", None) or str(e) or type(e).__name__
            raise BadRequest(400, f"bad multipart body: {' '.join(str(reason).split())}") from None
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise BadRequest(422, "the form has no image file in the field 'file'")
        x, is_strokes = await upload.read(), False
        if not x:
            raise BadRequest(400, "the uploaded file is empty")
        options.update({k: form[k] for k in ("beam", "attention") if k in form})
    else:
        raise BadRequest(415, "send JSON strokes (application/json) or an image file (multipart/form-data, field 'file')")
    beam = _beam(options["beam"]) if "beam" in options else default_beam
    return Job(x, is_strokes, beam, _flag(options.get("attention", False), "attention"))


# ---------------------------------------------------------------- attention on the page


def image_png(image: np.ndarray) -> str:
    """A normalized uint8 image (H, W) -> a PNG data URL, drawn dark ink on white as people expect."""
    buffer = io.BytesIO()
    Image.fromarray(255 - image).save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def attention_payload(maps: np.ndarray, image: np.ndarray, placement: Placement | None, stride: int) -> dict:
    """maps (T, h, w) -> the API's `attention` field: one row-major list of h*w weights per token, and the
    grid's place: in the strokes' coordinates (through the render's `placement`) for strokes, else in the
    returned normalized `image`."""
    T, h, w = maps.shape
    payload: dict[str, Any] = {"rows": h, "cols": w,
                               "maps": [[round(float(v), 5) for v in m.ravel()] for m in maps]}
    if placement is not None:  # image pixel = point * scale + offset: the image's corner and cells in points
        p = placement
        payload["grid"] = {"x": -p.x / p.scale, "y": -p.y / p.scale, "cell": stride / p.scale}
    else:
        payload["grid"] = {"x": 0.0, "y": 0.0, "cell": float(stride)}
        payload["image"] = image_png(image)
    return payload
