"""The app factory: the page, its static files, KaTeX (vendored), and the JSON API.

    POST /api/recognize  JSON strokes or a multipart image -> {"latex", "tokens", "mathml", "score",
                         "confidence", "alternatives", "warnings", "ms"}
    GET  /api/health     -> {"status": "ok", ...}
"confidence" is 0-1 (calibration.py) or null for an uncalibrated model; "alternatives" lists up to 5 of the
beam's answers, best first (the first is the answer), each {"latex", "tokens", "mathml", "score", "confidence"};
"warnings" lists what in the input makes the answer less sure (Recognizer.prepare: a pen thick for the writing).
With "attention": true (a JSON field, form field or query parameter) the answer also has "attention":
{"rows": h, "cols": w, "maps": one list of h*w weights (row-major) per token, "grid": {"x", "y", "cell"}}: the
feature grid's top-left corner and cell side in the strokes' own coordinates; for an image, in the pixels of
"image", the normalized image as a PNG data URL. "ms" is the time spent rendering and decoding this input.
Errors are JSON `{"error": "one line"}`: 400 unreadable input or bad JSON, 408 body not all received within
30 s, 413 body over 10 MB, 415 wrong content type, 422 empty ink or bad fields, 429 inference queue full, 500 a
bug (logged with its traceback); beyond 100 connections at once, uvicorn answers 503 (server.py).
"""

from __future__ import annotations

import logging
import os
import re
import time
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.requests import ClientDisconnect
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.staticfiles import StaticFiles

from maskmatch.data.render import place_strokes
from maskmatch.formats import mathml
from maskmatch.recognizer import Recognizer
from maskmatch.serve.inputs import BadRequest, Job, attention_payload, read_job
from maskmatch.serve.limits import BODY_SECONDS, MAX_BODY, BodyLimit, Busy, InferencePool
from maskmatch.serve.local import LOOPBACK, LocalOnly

log = logging.getLogger("maskmatch.serve")
STATIC = Path(__file__).parent / "static"
ALTERNATIVES = 5  # the beam's best answers an answer lists, the first being the answer itself
KATEX = Path(__file__).parent / "katex"  # vendored: the script, style and woff2 fonts of KaTeX (see its VERSION)
KATEX_HINT = "the package's serve/katex folder is missing; reinstall maskmatch, or set MASKMATCH_KATEX to a katex/dist folder"


def katex_folder() -> Path | None:
    """KaTeX's files: $MASKMATCH_KATEX (a katex/dist folder), else the copy vendored in the package, else None."""
    for c in (os.environ.get("MASKMATCH_KATEX"), KATEX):
        if c and (Path(c) / "katex.min.js").is_file():
            return Path(c)
    return None


def create_app(recognizer: Recognizer, *, beam_size: int = 10, workers: int = 1, queue: int = 8,
               max_body: int = MAX_BODY, body_seconds: float = BODY_SECONDS, katex: Path | bool = True,
               hosts: tuple[str, ...] | None = LOOPBACK, allow_origins: tuple[str, ...] = ()) -> FastAPI:
    """An ASGI app around `recognizer`. workers: inference threads; queue: requests that may wait for one
    (beyond that 429); katex: a dist folder, True to look for it (`katex_folder`), False for none; hosts: the
    Host names it answers for (None: any; local.py); allow_origins: sites whose pages may call the API (CORS)."""
    pool = InferencePool(workers, queue)
    katex_dir = katex_folder() if katex is True else Path(katex) if katex else None
    if katex_dir is None:
        log.warning("KaTeX not found: the page works without a rendered preview; %s", KATEX_HINT)
    stride = recognizer.model.config.stride

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        pool.shutdown()

    app = FastAPI(title="maskmatch", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)

    def error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    def recognize(job: Job) -> dict:
        """Runs on an inference thread."""
        start = time.perf_counter()
        placement, warnings = None, []  # strokes: the InkML training renderer, with where it drew them
        if job.is_strokes:
            image, placement = place_strokes(job.x, recognizer.render)
        else:
            image, warnings = recognizer.prepare(job.x)
        r = recognizer.decode([image], job.beam, attention=job.attention, n_best=min(ALTERNATIVES, job.beam))[0]
        out = {"latex": r.latex, "tokens": r.tokens, "mathml": mathml(r.tokens), "score": round(r.score, 4),
               "confidence": r.confidence,
               "alternatives": [{"latex": a.latex, "tokens": a.tokens, "mathml": mathml(a.tokens),
                                 "score": round(a.score, 4), "confidence": a.confidence} for a in r.alternatives],
               "warnings": warnings, "ms": round(1000 * (time.perf_counter() - start), 1)}
        if job.attention:
            out["attention"] = attention_payload(r.attention, image, placement, stride)
        return out

    @app.post("/api/recognize")
    async def api_recognize(request: Request) -> Response:
        try:
            job = await read_job(request, beam_size)
            return JSONResponse(await pool.run(recognize, job))
        except BadRequest as e:
            return error(e.status, e.message)
        except Busy as e:
            return error(429, str(e), {"Retry-After": "1"})
        except ClientDisconnect:  # the client left mid-upload: nobody to answer, nothing to log
            return Response(status_code=400)
        except ValueError as e:  # the recognizer's one-line reasons: unreadable image, no ink, ...
            reason = re.sub(r"<[^>]* object at 0x[0-9a-f]+>", "the upload", " ".join(str(e).split()))
            return error(422 if "no ink" in reason else 400, reason)

    @app.get("/api/health")
    async def health() -> dict:
        manifest = recognizer.manifest
        return {"status": "ok", "beam": beam_size, "workers": pool.workers, "queue": pool.queue, "max_body": max_body,
                "in_flight": pool.in_flight, "katex": katex_dir is not None,
                "model": {"maskmatch_version": manifest.get("maskmatch_version"),
                          "metrics": manifest.get("metrics")}}

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException) -> JSONResponse:  # 404, 405, ...: JSON like the rest
        return error(e.status_code, str(e.detail), getattr(e, "headers", None))

    @app.exception_handler(Exception)
    async def bug(request: Request, e: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        return error(500, f"internal error: {type(e).__name__}")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")  # resolves paths; none escapes the folder
    if katex_dir is not None:
        app.mount("/katex", StaticFiles(directory=katex_dir), name="katex")
    app.add_middleware(BodyLimit, limit=max_body, body_seconds=body_seconds)
    if allow_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(allow_origins), allow_methods=["GET", "POST"],
                           allow_headers=["content-type"])
    app.add_middleware(LocalOnly, hosts=hosts)  # outermost: a foreign Host is refused before anything else
    return app
