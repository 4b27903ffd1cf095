"""A soak on loopback (`maskmatch serve-load --soak MINUTES`): C clients send, for that long, a fixed mix of good,
bad and oversized requests, each checked against the answer it must get; the server's resident memory is
sampled throughout. The verdict: no 5xx and no connection error, memory growth after the first window (the
warm-up) and the p95 latency of good requests per window."""

from __future__ import annotations

import http.client
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from maskmatch.serve.limits import MAX_BODY
from maskmatch.serve.load import image_body, loopback, strokes_body

RSS_EVERY_S = 2.0  # seconds between samples of the server's resident memory


@dataclass(frozen=True)
class Kind:
    name: str
    body: bytes
    content_type: str
    expected: int  # the status it must get
    good: bool  # a recognition: its latency is the one watched


def request_mix(image: bytes) -> list[Kind]:
    """What each client cycles through: half good recognitions (strokes, an image), then a malformed JSON, a
    non-image upload, strokes with no ink and an upload just over the body limit."""
    png, multipart = image_body(image, "example.png")
    junk, _ = image_body(b"this is not an image", "junk.png")
    over, _ = image_body(b"\0" * (MAX_BODY + 1), "big.png")
    return [Kind("strokes", strokes_body(), "application/json", 200, True),
            Kind("image", png, multipart, 200, True),
            Kind("strokes", strokes_body(), "application/json", 200, True),
            Kind("malformed JSON", b'{"strokes": [[1,', "application/json", 400, False),
            Kind("not an image", junk, multipart, 400, False),
            Kind("no ink", strokes_body([]), "application/json", 422, False),
            Kind("over the limit", over, multipart, 413, False)]


def resident_mib() -> float:
    """This process's resident set size now (not its peak), from /proc/self/statm (Linux)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def soak(url: str, minutes: float, image: bytes, concurrency: int = 4, windows: int = 10,
         rss=resident_mib, timeout: float = 120.0) -> dict:
    """Runs the mix for `minutes` from `concurrency` threads against URL/api/recognize; rss() samples the
    server's memory (None: not known, a server in another process) -> the per-window table and the verdict."""
    host, port, base = loopback(url)
    mix, lock, records, samples = request_mix(image), threading.Lock(), [], []
    start = time.perf_counter()
    deadline = start + 60 * minutes

    def client(offset: int) -> None:
        connection, i = http.client.HTTPConnection(host, port, timeout=timeout), offset
        while time.perf_counter() < deadline:
            kind, i = mix[i % len(mix)], i + 1
            sent = time.perf_counter()
            try:
                connection.request("POST", base + "/api/recognize", kind.body, {"Content-Type": kind.content_type})
                response = connection.getresponse()
                response.read()
                status: int | str = response.status
                if response.getheader("Connection", "").lower() == "close":
                    connection.close()
            except (OSError, http.client.HTTPException) as e:
                status = type(e).__name__
                connection.close()
            with lock:
                records.append((time.perf_counter() - start, kind, status, time.perf_counter() - sent))

    def sampler() -> None:
        while time.perf_counter() < deadline:
            samples.append((time.perf_counter() - start, rss()))
            time.sleep(RSS_EVERY_S)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(concurrency)]
    if rss is not None:
        threads.append(threading.Thread(target=sampler, daemon=True))
    for t in threads:
        t.start()
    for t in threads[:concurrency]:
        t.join()
    return summarize(records, samples, 60 * minutes, windows, concurrency)


def summarize(records: list, samples: list, seconds: float, windows: int, concurrency: int) -> dict:
    width = seconds / windows
    rows = []
    for w in range(windows):
        inside = [r for r in records if w * width <= r[0] < (w + 1) * width or (w == windows - 1 and r[0] >= seconds)]
        good = 1000 * np.array([r[3] for r in inside if r[1].good and r[2] == 200])
        memory = [m for t, m in samples if t < (w + 1) * width]
        rows.append({"window": w + 1, "until_s": round((w + 1) * width, 1), "requests": len(inside),
                     "good_p50_ms": round(float(np.percentile(good, 50)), 1) if len(good) else None,
                     "good_p95_ms": round(float(np.percentile(good, 95)), 1) if len(good) else None,
                     "rss_mib": round(memory[-1], 1) if memory else None})
    by_kind = Counter((r[1].name, str(r[2])) for r in records)
    wrong = sum(1 for r in records if r[2] != r[1].expected)
    server_errors = sum(1 for r in records if isinstance(r[2], int) and r[2] >= 500)
    warm = rows[0]["rss_mib"]
    last = rows[-1]["rss_mib"]
    return {"seconds": round(seconds, 1), "concurrency": concurrency, "requests": len(records),
            "statuses": {f"{k} -> {s}": n for (k, s), n in sorted(by_kind.items())},
            "unexpected": wrong, "server_errors": server_errors,
            "rss_growth_after_warmup": None if warm is None or last is None else round((last - warm) / warm, 4),
            "windows": rows}


def format_soak(r: dict, what: str) -> str:
    growth = "unknown (a server in another process)" if r["rss_growth_after_warmup"] is None else \
        f"{r['rss_growth_after_warmup']:+.1%} from the end of window 1 to the end"
    lines = [f"soak: {what}", f"{r['requests']} requests in {r['seconds']} s from {r['concurrency']} clients; "
             f"5xx: {r['server_errors']}; answers other than expected: {r['unexpected']}; "
             f"resident memory {growth}", "",
             "| window | until (s) | requests | good p50 (ms) | good p95 (ms) | server RSS (MiB) |",
             "|---|---|---|---|---|---|"]
    for w in r["windows"]:
        cell = lambda v: "-" if v is None else f"{v}"  # noqa: E731
        lines.append(f"| {w['window']} | {w['until_s']} | {w['requests']} | {cell(w['good_p50_ms'])} "
                     f"| {cell(w['good_p95_ms'])} | {cell(w['rss_mib'])} |")
    lines += ["", "| request -> status | count |", "|---|---|"]
    lines += [f"| {k} | {n} |" for k, n in r["statuses"].items()]
    return "\n".join(lines)
