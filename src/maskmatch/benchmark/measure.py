"""The instruments of `maskmatch benchmark` and the measurement itself: decoding with the decoder's steps counted
and the rescoring timed, FLOPs, the machine's matmul rate, memory and CPU use, latency and throughput."""

from __future__ import annotations

import os
import resource
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from maskmatch.data.vocab import EOS


@contextmanager
def instrumented(decoder, tokens: int | None):
    """Counts decoder steps and times the r2l rescoring; with `tokens`, forces every sequence to exactly that
    many tokens and then EOS (the model's own choice among the other tokens). Yields the counters."""
    from maskmatch.model import search

    counters = {"steps": 0, "rescore_s": 0.0}
    step, rescore = decoder.step, search.cached_sequence_logprob

    def counted_step(token_ids, cache):
        counters["steps"] += 1
        logits = step(token_ids, cache)
        if tokens is not None:  # cache.length: tokens taken in, SOS included = the position of the output
            logits[:, EOS] = 1e4 if cache.length > tokens else float("-inf")
        return logits

    def timed_rescore(*args, **kwargs):
        start = time.perf_counter()
        try:
            return rescore(*args, **kwargs)
        finally:
            counters["rescore_s"] += time.perf_counter() - start

    decoder.step, search.cached_sequence_logprob = counted_step, timed_rescore
    try:
        yield counters
    finally:
        vars(decoder).pop("step", None)  # the instance attribute: the class's method shows again
        search.cached_sequence_logprob = rescore


def decode(model, images, mask, beam: int, tokens: int | None) -> dict:
    """One timed run of encoder + search (greedy for beam 1) -> seconds and counts."""
    import torch

    from maskmatch.model import search

    max_len = model.config.max_len if tokens is None else max(model.config.max_len, tokens + 1)
    with torch.inference_mode(), instrumented(model.decoder, tokens) as counters:
        start = time.perf_counter()
        features, feature_mask = model.encode(images, mask)
        encoded = time.perf_counter()
        if beam == 1:
            hyps = search.greedy(model.decoder, features, feature_mask, max_len)
        else:
            hyps = search.beam_search(model.decoder, features, feature_mask, beam, max_len)
        end = time.perf_counter()
    return {"total_s": end - start, "encoder_s": encoded - start, "search_s": end - encoded,
            "rescore_s": counters["rescore_s"], "steps": counters["steps"], "tokens": [len(h.ids) for h in hyps]}


def count_flops(model, image, mask, beam: int, tokens: int | None) -> dict:
    """FLOPs (2 per multiply-add) of one batch: the encoder, greedy decoding and beam decoding (its
    rescoring included), and the tokens each decoding read. Attention on the CPU runs a kernel that the
    counter does not know; it is counted with the counter's own SDPA formula."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    from maskmatch.model import search

    def cpu_sdpa(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    def counter():
        mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: cpu_sdpa}
        return FlopCounterMode(display=False, custom_mapping=mapping)

    max_len = model.config.max_len if tokens is None else max(model.config.max_len, tokens + 1)
    out = {}
    with torch.inference_mode(), instrumented(model.decoder, tokens):
        with counter() as c:
            features, feature_mask = model.encode(image, mask)
        out["encoder"] = c.get_total_flops()
        for name, k in (("greedy", 1), ("beam", beam)):
            with counter() as c:
                if k == 1:
                    hyps = search.greedy(model.decoder, features, feature_mask, max_len)
                else:
                    hyps = search.beam_search(model.decoder, features, feature_mask, k, max_len)
            out[name], out[f"{name}_tokens"] = c.get_total_flops(), len(hyps[0].ids)
    return out


def matmul_rate(size: int, repeats: int) -> list[float]:
    """GFLOP/s of a square fp32 matmul, once per repeat after a warm-up."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        rates.append(2 * size**3 / (time.perf_counter() - start) / 1e9)
    return rates


def peak_rss_mib() -> float:
    """The process's peak resident set size so far (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def cpu_seconds() -> tuple[float, float | None]:
    """(this process's CPU seconds, every process's CPU seconds from /proc/stat or None off Linux)."""
    own = os.times()
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return own.user + own.system, None
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return own.user + own.system, (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile, q in [0, 100]."""
    ordered = sorted(values)
    x = (len(ordered) - 1) * q / 100
    low = int(x)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (x - low)


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "p90": percentile(values, 90)}


# ---------------------------------------------------------------- the benchmark


def one_batch(images: list):
    """uint8 images (H, W) -> images (B, 1, H, W), mask (B, H, W), as the recognizer batches them."""
    import numpy as np

    from maskmatch.data.batching import collate

    batch = collate([(i, image, np.zeros(0, np.int64)) for i, image in enumerate(images)])
    return batch.images, batch.mask


def latency(model, singles: list, beam: int, repeats: int, tokens: int | None, representative: int) -> dict:
    """Batch of one, every image `repeats` times (the first time of a size includes oneDNN's kernel set-up,
    as a user's new image does): total, encoder, decoder per step, rescoring."""
    out = {}
    for name, k in (("greedy", 1), ("beam", beam)):
        runs = [[decode(model, *single, k, tokens) for single in singles] for _ in range(repeats)]
        flat = [r for rep in runs for r in rep]
        ms = lambda key: [1e3 * r[key] for r in flat]  # noqa: E731
        out[name] = {
            "ms": summary(ms("total_s")), "encoder_ms": summary(ms("encoder_s")),
            "decoder_step_ms": summary([1e3 * (r["search_s"] - r["rescore_s"]) / r["steps"] for r in flat]),
            "rescore_ms": summary(ms("rescore_s")) if k > 1 else None,
            "steps": statistics.median(r["steps"] for r in flat),
            "tokens": statistics.median(t for r in flat for t in r["tokens"]),
            "representative": {  # the median-area image's own medians, for the FLOP rates
                "encoder_ms": statistics.median(1e3 * rep[representative]["encoder_s"] for rep in runs),
                "search_ms": statistics.median(1e3 * rep[representative]["search_s"] for rep in runs)},
        }
    return out


def throughput(model, images: list, batch: int, beam: int, repeats: int, tokens: int | None,
               representative: int) -> dict:
    """Expressions/s of `batch` copies of the median-area image (no padding), and of all the images in the
    batches of the project's bucketing sampler (padded to the largest image of each batch)."""
    import numpy as np

    from maskmatch.data.batching import BucketBatchSampler

    sizes = np.array([image.shape for image in images])
    plan = BucketBatchSampler(sizes, pixel_budget=int(sizes.prod(1).max()) * batch, max_batch_size=batch,
                              shuffle=False).plan(0)
    padded = sum(len(b) * int(sizes[b, 0].max()) * int(sizes[b, 1].max()) for b in plan)
    sets = {"copies": [one_batch([images[representative]] * batch)],
            "bucketed": [one_batch([images[i] for i in b]) for b in plan]}
    out = {"batches": [len(b) for b in plan], "padded_pixels_ratio": padded / int(sizes.prod(1).sum())}
    for name, k in (("greedy", 1), ("beam", beam)):
        for kind, batches in sets.items():
            rates = []
            for _ in range(repeats):
                seconds = sum(decode(model, *b, k, tokens)["total_s"] for b in batches)
                rates.append(sum(len(b[0]) for b in batches) / seconds)
            out[f"{name}_{kind}"] = statistics.median(rates)
    return out


def run_benchmark(images: list, model, beam: int, batch: int, repeats: int, tokens: int | None,
                  matmul_size: int) -> dict:
    """Times everything; returns the numbers (milliseconds, expressions/s, MiB, FLOPs)."""
    results: dict = {"load_average_before": load_average()}
    start, (own, everyone) = time.perf_counter(), cpu_seconds()
    rates = matmul_rate(matmul_size, max(5, repeats))
    singles = [one_batch([image]) for image in images]
    areas = [image.shape[0] * image.shape[1] for image in images]
    representative = sorted(range(len(images)), key=lambda i: areas[i])[len(images) // 2]  # the median area
    results["representative"] = {"index": representative, "height": int(images[representative].shape[0]),
                                 "width": int(images[representative].shape[1])}
    for k in (1, beam):  # warm-up: the first run of all builds caches and kernels
        decode(model, *singles[areas.index(min(areas))], k, tokens)

    results["latency"] = latency(model, singles, beam, repeats, tokens, representative)
    results["peak_rss_mib_batch1"] = peak_rss_mib()
    results["throughput"] = throughput(model, images, batch, beam, repeats, tokens, representative)
    results["peak_rss_mib"] = peak_rss_mib()

    rates += matmul_rate(matmul_size, max(5, repeats))  # before and after: the machine's load changes
    results["matmul"] = {"size": matmul_size, "gflops": statistics.median(rates), "gflops_best": max(rates)}
    results["flops"] = None if is_onnx(model) else flop_rates(model, singles[representative], beam, tokens,
                                                              results)
    results["load_average_after"] = load_average()
    own_after, everyone_after = cpu_seconds()
    results["other_processes_cores"] = None if everyone is None else max(
        0.0, (everyone_after - everyone - (own_after - own)) / (time.perf_counter() - start))
    return results


def is_onnx(model) -> bool:
    from maskmatch.onnx_model import OnnxModel

    return isinstance(model, OnnxModel)


def parameter_count(model) -> int:
    """The model's parameters; an onnx export's are its torch model's (the same config)."""
    from maskmatch.model import HMERModel

    return sum(p.numel() for p in (HMERModel(model.config) if is_onnx(model) else model).parameters())


def flop_rates(model, single, beam: int, tokens: int | None, results: dict) -> dict:
    """FLOPs of the median-area expression and the rates its median times achieve (torch only: the counter
    sees torch's operators)."""
    flops = count_flops(model, *single, beam, tokens)
    timed = results["latency"]
    out = {"greedy_tokens": flops["greedy_tokens"], "beam_tokens": flops["beam_tokens"]}
    for part, ms in (("encoder", timed["greedy"]["representative"]["encoder_ms"]),
                     ("greedy", timed["greedy"]["representative"]["search_ms"]),
                     ("beam", timed["beam"]["representative"]["search_ms"])):
        rate = flops[part] / 1e9 / (ms / 1e3)
        out[part] = {"gflop": flops[part] / 1e9, "ms": ms, "gflops": rate,
                     "fraction_of_matmul": rate / results["matmul"]["gflops"]}
    return out
