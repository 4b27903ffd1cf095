"""A bounded load test on loopback: N requests, C at a time, each waiting for its answer; reports requests
per second and latency percentiles. A benchmark, not a pass/fail check: the numbers depend on the machine."""

from __future__ import annotations

import http.client
import ipaddress
import json
import socket
import threading
import time
from collections import Counter
from urllib.parse import urlsplit

import numpy as np

# "x^2+1" written as pen strokes in canvas pixels (y down): what the page sends
SAMPLE_STROKES = [
    [[20, 40], [32, 56], [44, 72]], [[44, 40], [32, 56], [20, 72]],  # x
    [[50, 22], [56, 16], [64, 18], [64, 26], [50, 38], [66, 38]],  # 2
    [[80, 56], [110, 56]], [[95, 42], [95, 70]],  # +
    [[124, 46], [132, 40], [132, 74]],  # 1
]


def loopback(url: str) -> tuple[str, int, str]:
    """(host, port, path) of an http:// URL whose host is a loopback address; ValueError otherwise (load is
    only ever sent to this machine)."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"{url}: expected http://HOST:PORT")
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(parts.hostname, parts.port or 80)}
    except socket.gaierror as e:
        raise ValueError(f"{url}: cannot resolve {parts.hostname} ({e.strerror})") from None
    if not all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses):
        raise ValueError(f"{url}: the load test only targets loopback addresses (127.0.0.0/8, ::1)")
    return parts.hostname, parts.port or 80, parts.path.rstrip("/")


def load_test(url: str, body: bytes, content_type: str, requests: int = 200, concurrency: int = 8,
              timeout: float = 120.0) -> dict:
    """POSTs `body` to URL/api/recognize `requests` times from `concurrency` threads, each with its own
    keep-alive connection -> {requests, concurrency, seconds, rps, p50_ms, p95_ms, max_ms, statuses}."""
    host, port, base = loopback(url)
    lock, latencies, statuses = threading.Lock(), [], Counter()
    left = [requests]

    def worker() -> None:
        connection = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            while True:
                with lock:
                    if left[0] == 0:
                        return
                    left[0] -= 1
                start = time.perf_counter()
                try:
                    connection.request("POST", base + "/api/recognize", body, {"Content-Type": content_type})
                    response = connection.getresponse()
                    response.read()
                    status = response.status
                except (OSError, http.client.HTTPException) as e:
                    status = type(e).__name__
                    connection.close()
                    connection = http.client.HTTPConnection(host, port, timeout=timeout)
                with lock:
                    latencies.append(time.perf_counter() - start)
                    statuses[status] += 1
        finally:
            connection.close()

    start = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    ms = 1000 * np.array(latencies)
    return {"requests": requests, "concurrency": concurrency, "seconds": round(seconds, 2),
            "rps": round(requests / seconds, 2), "p50_ms": round(float(np.percentile(ms, 50)), 1),
            "p95_ms": round(float(np.percentile(ms, 95)), 1), "max_ms": round(float(ms.max()), 1),
            "statuses": {str(k): v for k, v in sorted(statuses.items(), key=str)}}


def strokes_body(strokes: list = SAMPLE_STROKES, **options) -> bytes:
    return json.dumps({"strokes": strokes, **options}).encode()


def image_body(data: bytes, filename: str = "image.png") -> tuple[bytes, str]:
    """A multipart form with the image in `file` -> (body, content type)."""
    boundary = "maskmatch-load-boundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def format_result(r: dict, what: str) -> str:
    statuses = ", ".join(f"{k}: {v}" for k, v in r["statuses"].items())
    return (f"{what}\n{r['requests']} requests, {r['concurrency']} at a time, in {r['seconds']} s: "
            f"{r['rps']} requests/s; latency p50 {r['p50_ms']} ms, p95 {r['p95_ms']} ms, max {r['max_ms']} ms; "
            f"statuses {statuses}")
