"""`maskmatch serve` (the page and the API) and `maskmatch serve-load` (a bounded loopback load test)."""

from __future__ import annotations

import argparse
import errno
import json
import socket
import sys
from importlib import resources
from pathlib import Path

from maskmatch.cli_args import positive_float, positive_int
from maskmatch.errors import UserError
from maskmatch.memory import limit_heap_growth
from maskmatch.serve.local import LOOPBACK, allowed_hosts, exposure_warning


def _at_least_zero(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be from 0 to 65535, got {value}")
    return value


def _recognizer(args: argparse.Namespace):
    from maskmatch.recognizer import Recognizer

    limit_heap_growth()  # a server recognizes request after request: see memory.py
    try:
        return Recognizer.load(args.model, args.device)
    except (ValueError, OSError) as e:
        raise UserError(" ".join(str(e).split())) from None


def _app(args: argparse.Namespace, hosts: tuple[str, ...] | None = LOOPBACK, origins: tuple[str, ...] = ()):
    """hosts: the Host names answered (None: any, for a server on all interfaces); origins: CORS."""
    from maskmatch.serve.app import create_app

    return create_app(_recognizer(args), beam_size=args.beam, workers=args.workers, queue=args.queue,
                      hosts=hosts, allow_origins=origins)


def _check_port(host: str, port: int) -> None:
    """A one-line UserError now, rather than uvicorn's log lines later, when host:port cannot be bound."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        with socket.socket(infos[0][0], socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(infos[0][4])
    except socket.gaierror as e:
        raise UserError(f"cannot listen on {host}: {e.strerror}") from None
    except OSError as e:
        hint = " (another program uses it: pick another --port)" if e.errno == errno.EADDRINUSE else ""
        raise UserError(f"cannot listen on {host}:{port}: {e.strerror}{hint}") from None


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from maskmatch.serve.server import server_config

    _check_port(args.host, args.port)
    hosts = allowed_hosts(args.host, args.allow_host)
    app = _app(args, hosts, tuple(args.allow_origin))
    if exposure_warning(args.host):
        print(exposure_warning(args.host), file=sys.stderr, flush=True)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"maskmatch: serving http://{shown}:{args.port}/ (Ctrl+C stops)", file=sys.stderr, flush=True)
    uvicorn.Server(server_config(app, args.host, args.port)).run()
    return 0


def _load(args: argparse.Namespace) -> int:
    from maskmatch.serve.load import format_result, image_body, load_test, loopback, strokes_body
    from maskmatch.serve.server import BackgroundServer

    if args.url:
        try:
            loopback(args.url)
        except ValueError as e:
            raise UserError(str(e)) from None
    if args.soak is not None:
        return _soak(args)
    if args.image:
        try:
            body, kind = image_body(Path(args.image).read_bytes(), Path(args.image).name)
        except OSError as e:
            raise UserError(f"{args.image}: {e.strerror}") from None
    else:
        body, kind = strokes_body(), "application/json"
    if args.url:
        result = load_test(args.url, body, kind, args.requests, args.concurrency)
        what = f"server {args.url}"
    else:
        with BackgroundServer(_app(args)) as url:
            result = load_test(url, body, kind, args.requests, args.concurrency)
        what = (f"in-process server at {url}, model {args.model or 'shipped'}, "
                f"{'greedy' if args.beam == 1 else f'beam {args.beam}'}, {args.workers} worker(s)")
    print(format_result(result, f"{what}; {'image ' + args.image if args.image else 'strokes x^2+1'}"))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n", "utf-8")
    return 0


def _soak(args: argparse.Namespace) -> int:
    from maskmatch.serve.server import BackgroundServer
    from maskmatch.serve.soak import format_soak, soak

    try:
        image = Path(args.image).read_bytes() if args.image else next(
            p for p in sorted(Path(str(resources.files("maskmatch").joinpath("assets", "examples", "img"))).iterdir())
            if p.suffix == ".png").read_bytes()
    except OSError as e:
        raise UserError(f"{args.image}: {e.strerror}") from None
    decoding = "greedy" if args.beam == 1 else f"beam {args.beam}"
    if args.url:
        result, what = soak(args.url, args.soak, image, args.concurrency, rss=None), f"server {args.url}"
    else:
        with BackgroundServer(_app(args)) as url:
            result = soak(url, args.soak, image, args.concurrency)
        what = (f"in-process server at {url}, model {args.model or 'shipped'}, {decoding}, {args.workers} worker(s), "
                f"queue {args.queue}")
    text = format_soak(result, what)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n", "utf-8")
    if args.markdown:
        command = "maskmatch " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["serve-load"] else "maskmatch serve-load"
        Path(args.markdown).write_text(f"# Soak\n\nMade by `{command}`; do not edit by hand.\n\n{text}\n", "utf-8")
    return 0 if result["server_errors"] == 0 and result["unexpected"] == 0 else 1


def _model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", metavar="PATH", help="weights (.safetensors with its .json manifest); "
                        "default: the weights shipped in the package")
    parser.add_argument("--beam", type=positive_int, default=10, metavar="N",
                        help="beam size for requests that do not say (1: greedy; default 10)")
    parser.add_argument("--workers", type=positive_int, default=1, metavar="N",
                        help="inference threads (default 1; torch already uses all cores in each)")
    parser.add_argument("--queue", type=_at_least_zero, default=8, metavar="N",
                        help="requests that may wait for a worker; more get 429 (default 8)")
    parser.add_argument("--device", help="torch device, e.g. cpu or cuda (default: cuda if available)")


def register(commands: argparse._SubParsersAction) -> None:
    serve = commands.add_parser("serve", help="a local web page and JSON API: write or upload math, get LaTeX")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=_port, default=8000, help="port (default 8000)")
    serve.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                       help="also answer requests whose Host is NAME (the others, but for localhost, 127.0.0.1, ::1 "
                            "and --host, get 400: DNS rebinding); repeatable")
    serve.add_argument("--allow-origin", action="append", default=[], metavar="URL",
                       help="let pages from this origin call the API (CORS), e.g. http://localhost:3000; repeatable")
    _model_options(serve)
    serve.set_defaults(run=_serve)

    load = commands.add_parser("serve-load", help="load test of the API on loopback: requests/s and p95 latency")
    load.add_argument("--url", help="a running server on this machine (loopback); default: start one in-process")
    _model_options(load)
    load.add_argument("--requests", "-n", type=positive_int, default=200, metavar="N", help="requests (default 200)")
    load.add_argument("--concurrency", "-c", type=positive_int, default=8, metavar="C",
                      help="requests in flight at once (default 8)")
    load.add_argument("--image", metavar="PATH", help="post this image (multipart) instead of the sample strokes")
    load.add_argument("--json", metavar="FILE", help="write the numbers as JSON")
    load.add_argument("--soak", type=positive_float, metavar="MINUTES",
                      help="instead: a mix of good, bad and oversized requests for this long, -c at a time "
                      "(--image: the good upload; default a bundled example); exit 1 on any 5xx or unexpected answer")
    load.add_argument("--markdown", metavar="FILE", help="with --soak: write the table as Markdown")
    load.set_defaults(run=_load)
