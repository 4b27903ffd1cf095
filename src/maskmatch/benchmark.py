"""`maskmatch benchmark`: latency, throughput, memory and FLOPs of the recognizer on this machine's CPU.

What it measures, on images of realistic size (rendered synthetic expressions, or a folder of images):

- latency at a batch of one, greedy and beam search: the median and 90th percentile over expressions and
  repeats, split into the encoder, the decoder per step (the search's bookkeeping included) and the
  right-to-left rescoring;
- throughput (expressions/s) at a larger batch: of copies of one image (the median-area one: batching
  without padding), and of all the images bucketed by size as training and evaluation batch them
  (`data/batching.py`), where padding to the largest image of a batch costs what it costs;
- peak memory: the process's peak resident set size (RSS, `resource.getrusage`), which counts everything
  the process holds (Python, torch, the model, activations), not tensors alone;
- FLOPs of one representative expression (the median-area image), counted by
  `torch.utils.flop_counter.FlopCounterMode` (2 FLOPs per multiply-add; convolutions, matmuls and
  attention), against the machine's measured fp32 matmul rate.

A randomly initialized model (no --model) emits EOS at random, so its decoding length means nothing: it is
forced instead (--tokens, default the median caption length of CROHME 2014's test set). Timing is noisy
on a shared machine: the load average, the CPU that other processes used during the run, and the
environment variables that change speed are printed with the results.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from maskmatch.cli_args import positive_int
from maskmatch.errors import UserError

# The median length of the 983 captions of CROHME 2014's test set (data/crohme/2014/caption.txt, as built
# by `maskmatch data build`): 13 tokens (mean 16.1, 90th percentile 32); 2016 and 2019 have 14.
CROHME_2014_MEDIAN_TOKENS = 13
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
# Environment variables that can change CPU speed without changing results, shown with the results: glibc's
# allocator thresholds, a preloaded allocator, and the thread pools.
TUNING_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "LD_PRELOAD", "OMP_NUM_THREADS",
                    "MKL_NUM_THREADS", "MKL_DYNAMIC")
MATMUL_SIZE = {"default": 2048, "tiny": 256}  # the square fp32 matmul that measures the machine's rate
EXPRESSION_SPREAD = (6.25, 0.8, 0.5)  # synthetic symbols per expression: log-normal median, sigma; fraction share


# ---------------------------------------------------------------- inputs


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
    """(model in eval mode, render config, description): the weights at `path`, an onnx export folder (run by
    onnxruntime with `threads`), or a random model."""
    import torch

    from maskmatch.data.render import RenderConfig
    from maskmatch.model import HMERModel, ModelConfig
    from maskmatch.onnx_model import is_export, load_onnx

    if is_export(path):
        import onnxruntime

        from maskmatch.weights import render_config

        try:
            model, manifest = load_onnx(path, threads)
            return model, render_config(manifest), f"{path} (onnxruntime {onnxruntime.__version__})"
        except ValueError as e:
            raise UserError(str(e)) from None
    if path is None:
        torch.manual_seed(seed)
        config = ModelConfig.tiny() if preset == "tiny" else ModelConfig()
        return HMERModel(config).eval(), RenderConfig(), f"random initialization (seed {seed}), {preset} config"
    from maskmatch.weights import load_weights, render_config

    try:
        model, manifest = load_weights(path)
        render = render_config(manifest)
    except ValueError as e:
        raise UserError(str(e)) from None
    return model.eval(), render, str(path)


# ---------------------------------------------------------------- instruments


@contextmanager
def instrumented(decoder, tokens: int | None):
    """Counts decoder steps and times the r2l rescoring; with `tokens`, forces every sequence to exactly that
    many tokens and then EOS (the model's own choice among the other tokens). Yields the counters."""
    from maskmatch.data.vocab import EOS
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
    import resource  # POSIX only: imported here so that `maskmatch --help` works everywhere

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


# ---------------------------------------------------------------- report


def format_report(r: dict) -> str:
    lat, thr, fl, rep, beam = r["latency"], r["throughput"], r["flops"], r["representative"], r["beam"]
    load = " -> ".join("?" if x is None else f"{x:.2f}" for x in (r["load_average_before"], r["load_average_after"]))
    images = r["images"]
    lines = [
        f"maskmatch benchmark: CPU, {r['threads']} threads ({os.cpu_count()} cores), torch {r['torch']}"
        + (", onnxruntime" if "onnxruntime" in r["model"] else ""),
        f"load: 1-minute load average {load} (before -> after; this run's threads count too)"
        + ("" if r["other_processes_cores"] is None else
           f"; other processes used {r['other_processes_cores']:.2f} cores during the run (/proc/stat)"),
        f"model: {r['model']} ({r['parameters'] / 1e6:.1f} M parameters)",
        "decoding: " + ("the model's own lengths" if r["tokens"] is None else
                        f"every expression forced to exactly {r['tokens']} tokens + EOS (--tokens"
                        + ("; a random model's own lengths mean nothing)" if r["random_model"] else ")")),
        f"images: {images['count']} {images['source']}, median {images['median_height']:g}x"
        f"{images['median_width']:g} px (H x W)"
        + (f"; preprocessing {images['preprocess_ms']:.1f} ms each (median; not in the latencies)"
           if images.get("preprocess_ms") is not None else ""),
        "environment: " + (", ".join(f"{k}={v}" for k, v in r["environment"].items()) or
                           f"none of {', '.join(TUNING_VARIABLES)} set"),
        f"matmul rate: {r['matmul']['size']}x{r['matmul']['size']} fp32, {r['matmul']['gflops']:.1f} GFLOP/s "
        f"(median; best {r['matmul']['gflops_best']:.1f})",
        "",
        f"{'':44}{'median':>9}{'p90':>9}  unit",
    ]

    def row(label: str, s: dict | None, unit: str, digits: int = 1) -> None:
        if s is not None:
            lines.append(f"{label:44}{s['median']:>9.{digits}f}{s['p90']:>9.{digits}f}  {unit}")

    def single(label: str, value: float, unit: str, digits: int = 1) -> None:
        lines.append(f"{label:44}{value:>9.{digits}f}{'':9}  {unit}")

    titles = (("greedy", "greedy"), ("beam", f"beam {beam}"))
    for name, title in titles:
        d = lat[name]
        row(f"latency, batch of 1, {title}", d["ms"], "ms per expression")
        row("  encoder", d["encoder_ms"], "ms")
        row("  decoder, per step (search included)", d["decoder_step_ms"],
            f"ms; {d['steps']:g} steps" + (f" of {beam} beams" if name == "beam" else ""), 2)
        row("  right-to-left rescoring", d["rescore_ms"], "ms")
    for name, title in titles:
        single(f"throughput, batch of {r['batch']}, {title}", thr[f"{name}_copies"],
               f"expressions/s (copies of the {rep['height']}x{rep['width']} image)")
        single("  all images, bucketed by size", thr[f"{name}_bucketed"],
               f"expressions/s (batches of {'+'.join(map(str, thr['batches']))}; "
               f"padded pixels x{thr['padded_pixels_ratio']:.1f})")
    single("peak memory (process RSS, getrusage)", r["peak_rss_mib"],
           f"MiB ({r['peak_rss_mib_batch1']:.0f} after the batch-of-1 runs)", 0)
    if fl is None:
        return "\n".join(lines + ["", "FLOPs: counted for the torch runtime only (torch.utils.flop_counter)"])
    lines += ["", f"FLOPs of the median-area expression ({rep['height']}x{rep['width']} px), batch of 1 "
                  "(torch.utils.flop_counter, 2 per multiply-add; ms: its median time):",
              f"{'':28}{'GFLOP':>9}{'ms':>9}{'GFLOP/s':>9}{'of matmul':>11}"]
    for part, title in (("encoder", "encoder"), ("greedy", f"decoder, greedy ({fl['greedy_tokens']} tok)"),
                        ("beam", f"decoder, beam {beam} ({fl['beam_tokens']} tok)")):
        f = fl[part]
        lines.append(f"{title:28}{f['gflop']:>9.3f}{f['ms']:>9.1f}{f['gflops']:>9.1f}"
                     f"{f['fraction_of_matmul']:>11.0%}")
    return "\n".join(lines)


def _benchmark(args: argparse.Namespace) -> int:
    import torch

    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return _run(args)
    finally:
        torch.set_num_threads(threads)


def _run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    model, render, description = load_model(args.model, args.preset, args.seed, args.threads)
    tokens = args.tokens if args.tokens is not None else (None if args.model else CROHME_2014_MEDIAN_TOKENS)
    if args.images:
        images, preprocess_ms = folder_images(Path(args.images), args.n, render)
        source = f"images from {args.images} (normalized as the recognizer does)"
    else:
        images, preprocess_ms = synthetic_expressions(args.n, args.seed, render), None
        source = "synthetic expressions (rendered scribbles of CROHME-like size)"
    results = run_benchmark(images, model, args.beam, args.batch, args.repeats, tokens, MATMUL_SIZE[args.preset])
    results.update({
        "command": "maskmatch " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["benchmark"] else None,
        "threads": torch.get_num_threads(), "torch": torch.__version__, "model": description,
        "random_model": args.model is None,
        "parameters": parameter_count(model), "tokens": tokens, "beam": args.beam,
        "batch": args.batch, "repeats": args.repeats,
        "environment": {k: os.environ[k] for k in TUNING_VARIABLES if k in os.environ},
        "images": {"count": len(images), "source": source, "preprocess_ms": preprocess_ms,
                   "median_height": float(np.median([i.shape[0] for i in images])),
                   "median_width": float(np.median([i.shape[1] for i in images]))},
    })
    print(format_report(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("benchmark", help="latency, throughput, memory and FLOPs on this machine's CPU",
                            description="Times the recognizer on this machine's CPU. Without --model a randomly "
                            "initialized model is timed, each expression forced to --tokens tokens.")
    p.add_argument("--model", help="weights (.safetensors, with its .json manifest), or a folder of `maskmatch "
                   "export --onnx` (timed with onnxruntime); default: a random model")
    p.add_argument("--images", metavar="DIR", help="time these images (the first N by name); "
                   "default: synthetic expressions of CROHME-like size")
    p.add_argument("--n", type=positive_int, default=20, help="expressions (default 20)")
    p.add_argument("--beam", type=positive_int, default=10, help="beam size (default 10)")
    p.add_argument("--batch", type=positive_int, default=16, help="batch size for throughput (default 16)")
    p.add_argument("--repeats", type=positive_int, default=3, help="runs of each measurement (default 3)")
    p.add_argument("--threads", type=positive_int, help="torch threads (default: torch's, one per core)")
    p.add_argument("--tokens", type=positive_int, help="force every expression to this many tokens; default "
                   f"{CROHME_2014_MEDIAN_TOKENS} (CROHME 2014's median caption length) with a random model, "
                   "the model's own lengths with --model")
    p.add_argument("--preset", choices=("default", "tiny"), default="default",
                   help="random model's size (default: the paper's; tiny: for tests)")
    p.add_argument("--seed", type=int, default=0, help="random model and synthetic images (default 0)")
    p.add_argument("--json", metavar="FILE", help="also write the numbers as JSON")
    p.set_defaults(run=_benchmark)
