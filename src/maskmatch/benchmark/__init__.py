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
import sys
from pathlib import Path

from maskmatch.benchmark.inputs import folder_images, load_model, synthetic_expressions
from maskmatch.benchmark.measure import parameter_count, run_benchmark
from maskmatch.benchmark.report import TUNING_VARIABLES, format_report
from maskmatch.cli_args import positive_int

# The median length of the 983 captions of CROHME 2014's test set (data/crohme/2014/caption.txt, as built
# by `maskmatch data build`): 13 tokens (mean 16.1, 90th percentile 32); 2016 and 2019 have 14.
CROHME_2014_MEDIAN_TOKENS = 13
MATMUL_SIZE = {"default": 2048, "tiny": 256}  # the square fp32 matmul that measures the machine's rate


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
