"""The table `maskmatch benchmark` prints."""

from __future__ import annotations

import os

# Environment variables that can change CPU speed without changing results, shown with the results: glibc's
# allocator thresholds, a preloaded allocator, and the thread pools.
TUNING_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "LD_PRELOAD", "OMP_NUM_THREADS",
                    "MKL_NUM_THREADS", "MKL_DYNAMIC")


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
