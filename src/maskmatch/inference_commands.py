"""`maskmatch recognize` (images, InkML files, folders) and `maskmatch evaluate` (offline-layout splits).

Both are thin shells around `Recognizer`. A bad input is one line on stderr naming the file and the
reason; the others go on.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from maskmatch.cli_args import positive_int, scales
from maskmatch.data.source import offline_split
from maskmatch.errors import UserError
from maskmatch.formats import FORMATS, formatted
from maskmatch.memory import limit_heap_growth
from maskmatch.metrics import canonical, edit_distance, expression_scores, parses

DEFAULT_DATA = "data/crohme"  # `maskmatch data build`'s usual --out: --data of a model whose manifest names none
SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".inkml")  # what a folder is searched for
PIXEL_BUDGET = 2_000_000  # padded pixels per evaluation batch (B x maxH x maxW), besides --batch-size
WINDOW = 8  # recognize reads this many batches' inputs, then decodes them grouped by size
STDIN = "-"  # the path that means standard input
MAX_STDIN = 64 * 2**20  # bytes read from standard input at most


def _recognizer(args: argparse.Namespace):
    from maskmatch.recognizer import Recognizer, check_scales

    limit_heap_growth()  # many batches in one process: see memory.py
    try:
        check_scales(args.scales)
        return Recognizer.load(args.model, args.device, constrained=not getattr(args, "unconstrained", False),
                               runtime=args.runtime)
    except ValueError as e:
        raise UserError(str(e)) from None


def _beam(args: argparse.Namespace) -> int:
    return 1 if args.greedy else args.beam


def _decoding(beam: int) -> str:
    return "greedy" if beam == 1 else f"beam {beam}"


def _reason(e: Exception) -> str:
    """An exception as one line; a bug (not a ValueError or OSError) says so."""
    text = " ".join(str(e).split()) or type(e).__name__
    return text if isinstance(e, (ValueError, OSError)) else f"unexpected {type(e).__name__}: {text}"


# ---------------------------------------------------------------- recognize


def _inputs(paths: list[str]) -> list[tuple[str, str | None]]:
    """(path, problem or None) for each file: files as given, folders searched recursively for SUFFIXES."""
    out = []
    for p in paths:
        path = Path(p)
        if p == STDIN:
            out.append((p, None))
        elif path.is_dir():
            found = sorted(f for f in path.rglob("*") if f.suffix.lower() in SUFFIXES and f.is_file())
            out += [(str(f), None) for f in found] or [(p, f"no {', '.join(SUFFIXES)} files in this folder")]
        else:
            out.append((p, None if path.exists() else "no such file or folder"))
    return out


def _stdin_bytes() -> bytes:
    """`recognize -`: an image or InkML file on standard input, at most MAX_STDIN bytes."""
    data = sys.stdin.buffer.read(MAX_STDIN + 1)
    if len(data) > MAX_STDIN:
        raise ValueError(f"standard input is over {MAX_STDIN // 2**20} MB")
    if not data:
        raise ValueError("standard input is empty")
    return data


def _recognize(args: argparse.Namespace) -> int:
    """Inputs in windows of WINDOW batches: each window is preprocessed, decoded in batches of like-sized images
    (little padding: less time and memory than batches in name order), and printed in the order given."""
    from maskmatch.recognizer import agreed_per_input

    rec, beam = _recognizer(args), _beam(args)
    inputs, failed = _inputs(args.paths), 0
    window = WINDOW * args.batch_size
    for at in range(0, len(inputs), window):
        # entries: (path, input position or the problem), in order; each input adds one image per scale
        entries, images, warnings, spent = [], [], [], []
        for path, problem in inputs[at : at + window]:
            start = time.perf_counter()
            if problem is None:
                try:
                    read, warned = rec.read(_stdin_bytes() if path == STDIN else path, args.scales)
                    images += read
                    warnings.append(warned)
                except Exception as e:  # noqa: BLE001 - one bad file must not stop the others
                    problem = _reason(e)
            if problem is not None:
                entries.append((path, problem))
                if not args.json:
                    print(f"{path}: {problem}", file=sys.stderr)
                failed += 1
                continue
            entries.append((path, len(warnings) - 1))
            spent.append(1000 * (time.perf_counter() - start))
        results = agreed_per_input(decode_batched(rec, images, beam, args.batch_size, n_best=args.n_best),
                                   len(args.scales))
        for path, found in entries:
            if isinstance(found, str):  # with --json, in the stream of answers, so that their reader sees it
                if args.json:
                    print(json.dumps({"path": path, "error": found}, ensure_ascii=False))
                continue
            r, ms = results[found], spent[found]
            if args.json:
                record = {"path": path, "latex": r.latex, "output": formatted(r.tokens, args.format),
                          "score": round(r.score, 4), "confidence": r.confidence, "ms": round(r.ms + ms, 1),
                          **({"warnings": warnings[found]} if warnings[found] else {})}
                if args.n_best > 1:
                    record["alternatives"] = [{"latex": a.latex, "output": formatted(a.tokens, args.format),
                                               "score": round(a.score, 4), "confidence": a.confidence}
                                              for a in r.alternatives]
                print(json.dumps(record, ensure_ascii=False))
            else:
                print("\t".join([path, *(formatted(a.tokens, args.format) for a in r.alternatives)]))
                for warning in warnings[found]:
                    print(f"{path}: warning: {warning}", file=sys.stderr)
        sys.stdout.flush()
    return 1 if failed else 0


def decode_batched(rec, images: list, beam: int, batch_size: int, n_best: int = 1,
                   progress: str | None = None) -> list:
    """Recognitions of normalized images, in their order, decoded in batches of like size (`size_batches`);
    progress: a label for a progress bar on stderr (None: no bar)."""
    from tqdm import tqdm

    results = [None] * len(images)
    plan = size_batches(images, batch_size)
    for batch in tqdm(plan, desc=progress, unit="batch", disable=None if progress else True, file=sys.stderr):
        for j, r in zip(batch, rec.decode([images[j] for j in batch], beam, n_best=n_best)):
            results[j] = r
    return results


def size_batches(images: list, batch_size: int) -> list[list[int]]:
    """Positions of `images` (uint8 (H, W)) in batches of at most batch_size images of like size, within
    PIXEL_BUDGET padded pixels (or the largest image alone)."""
    import numpy as np

    from maskmatch.data.batching import BucketBatchSampler

    if not images:
        return []
    sizes = np.array([image.shape for image in images], dtype=np.int64).reshape(-1, 2)  # (N, 2)
    budget = max(PIXEL_BUDGET, int((sizes[:, 0] * sizes[:, 1]).max()))
    return BucketBatchSampler(sizes, budget, max_batch_size=batch_size, shuffle=False).plan(0)


# ---------------------------------------------------------------- evaluate


def _prenormalized(folder: Path, render) -> bool:
    """True if the split was built with this RenderConfig (its cache/meta.json says so): img/ is model-ready."""
    from maskmatch.data.render import RenderConfig

    try:
        meta = json.loads((folder / "cache" / "meta.json").read_text("utf-8"))
        return RenderConfig(**meta["render"]) == render
    except Exception:  # noqa: BLE001 - no cache, an old or odd one: normalize the images instead
        return False


def evaluate_split(rec, folder: Path, beam: int, batch_size: int,
                   read_scales: tuple[float, ...] = (1.0,)) -> tuple[dict, list[dict]]:
    """One offline split -> (scores as in the JSON file, per-expression rows). Unreadable images are
    reported on stderr and count as wrong (empty prediction). Several read_scales: each image is read at each
    (`Recognizer.read`) and scored by the answer most reads give (`agreed`)."""
    from maskmatch.data.images import load_image
    from maskmatch.recognizer import agreed_per_input

    start = time.perf_counter()
    if not (folder / "caption.txt").is_file():
        raise UserError(f"{folder}: not an offline split (no caption.txt)")
    split = offline_split(folder)
    for file, reason in split.problems:
        print(f"{folder / file}: {reason}; not counted", file=sys.stderr)
    as_is = _prenormalized(folder, rec.render)
    if as_is and len(read_scales) > 1:
        raise UserError(f"{folder}: a built split, its images already at the model's scale; --scales reads pictures "
                        "(a folder of images without cache/)")
    images = {}  # item index -> its normalized uint8 (H, W) reads, one per scale
    for i, item in enumerate(split.items):
        try:
            image = load_image(item.path)
            images[i] = [image] if as_is else rec.read(image, read_scales)[0]
        except Exception as e:  # noqa: BLE001 - counted as wrong, not a crash
            print(f"{item.path}: {_reason(e)}; counted as wrong", file=sys.stderr)
    reads = decode_batched(rec, [r for per in images.values() for r in per], beam, batch_size, progress=folder.name)
    predictions = [""] * len(split.items)
    for i, r in zip(images, agreed_per_input(reads, len(read_scales))):
        predictions[i] = r.latex
    references = [item.caption for item in split.items]
    scores = expression_scores(predictions, references)
    seconds = time.perf_counter() - start
    scores.update(seconds=round(seconds, 2), expr_per_s=round(len(references) / max(seconds, 1e-9), 2),
                  decoding=_decoding(beam) + ("" if rec.grammar else ", unconstrained"),
                  unreadable=len(split.items) - len(images), unparsed=sum(not parses(p) for p in predictions))
    rows = [{"name": item.name, "reference": ref, "prediction": pred,
             "distance": edit_distance(canonical(pred), canonical(ref))}
            for item, ref, pred in zip(split.items, references, predictions)]
    return scores, rows


def format_table(results: dict[str, dict]) -> str:
    lines = [f"{'split':<12}{'n':>6}{'ExpRate':>9}{'<=1':>8}{'<=2':>8}{'raw':>8}{'unparsed':>9}{'seconds':>9}"
             f"{'expr/s':>8}  decoding"]
    for name, s in results.items():
        lines.append(f"{name:<12}{s['n']:>6}{s['exprate']:>9.2f}{s['le1']:>8.2f}{s['le2']:>8.2f}{s['raw_exprate']:>8.2f}"
                     f"{s.get('unparsed', 0):>9}{s['seconds']:>9.1f}{s['expr_per_s']:>8.1f}  {s['decoding']}")
    return "\n".join(lines)


def _write_predictions(path: Path, rows: list[dict]) -> None:
    """JSON lines if the name ends in .jsonl, else TSV with a header."""
    if path.suffix == ".jsonl":
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    else:
        keys = ["split", "name", "reference", "prediction", "distance"]
        text = "\t".join(keys) + "\n" + "".join("\t".join(str(r[k]) for k in keys) + "\n" for r in rows)
    path.write_text(text, "utf-8")


def _evaluate(args: argparse.Namespace) -> int:
    folders = [Path(p) for p in args.split_dirs]
    for folder in folders:
        if not (folder / "caption.txt").is_file():
            raise UserError(f"{folder}: not an offline split (no caption.txt)")
    rec, beam = _recognizer(args), _beam(args)
    results, rows = {}, []
    for folder in folders:
        name = folder.resolve().name if folder.resolve().name not in results else str(folder)
        results[name], split_rows = evaluate_split(rec, folder, beam, args.batch_size, args.scales)
        rows += [{"split": name, **r} for r in split_rows]
    print(format_table(results))
    for path, write in ((args.json, lambda p: p.write_text(json.dumps(results, indent=1) + "\n", "utf-8")),
                        (args.predictions, lambda p: _write_predictions(p, rows))):
        if path:
            write(Path(path))
            print(f"wrote {path}")
    return 0


# ---------------------------------------------------------------- registration


def _model_options(parser: argparse.ArgumentParser, batch_size: int) -> None:
    parser.add_argument("--model", metavar="PATH", action="append",
                        help="weights (.safetensors with its .json manifest); default: the weights shipped in the "
                        "package; given twice or more: their ensemble (log-probs averaged; the cost of each added up)")
    decoding = parser.add_mutually_exclusive_group()
    decoding.add_argument("--beam", type=positive_int, default=10, metavar="N", help="beam size (default 10)")
    decoding.add_argument("--greedy", action="store_true", help="greedy decoding (fastest; same as --beam 1)")
    parser.add_argument("--batch-size", type=positive_int, default=batch_size, metavar="N",
                        help=f"images decoded together (default {batch_size})")
    parser.add_argument("--scales", type=scales, default=(1.0,), metavar="S,S,...",
                        help="read each picture or strokes at these shares of the model's symbol size and keep the "
                        "answer most reads give, a tie to the first (e.g. 1,1.12,1.25: surer, each scale costs a "
                        "read; default 1)")
    parser.add_argument("--device", help="torch device, e.g. cpu or cuda (default: cuda if available)")
    parser.add_argument("--runtime", choices=("torch", "onnx"),
                        help="onnx: onnxruntime over a folder of `maskmatch export --onnx` given as --model "
                        "(the default for such a folder; torch otherwise)")


def model_data(model: str | Path | None) -> str:
    """The default --data of a command that reads a model: the built data it trained on (the root of
    `weights.training_data`; an ensemble file's: its first member's; None: the shipped model's), else DEFAULT_DATA.
    A model that cannot be read gives DEFAULT_DATA: loading it reports why."""
    from maskmatch.ensemble_file import is_ensemble_file, read_ensemble
    from maskmatch.recognizer import shipped_model
    from maskmatch.weights import read_manifest, training_data

    try:
        path = Path(model) if model is not None else shipped_model()
        if is_ensemble_file(path):
            path = read_ensemble(path)[0][0]
        return str(training_data(read_manifest(path)).get("root") or DEFAULT_DATA)
    except (OSError, ValueError):
        return DEFAULT_DATA


def register(commands: argparse._SubParsersAction) -> None:
    recognize = commands.add_parser("recognize", help="images (any polarity, size), InkML files or folders -> LaTeX")
    recognize.add_argument("paths", nargs="+", metavar="PATH",
                           help="image, .inkml file or folder (searched recursively); - reads one from standard input")
    # 4, not 8: recognize --json over 200 CROHME 2014 images with the shipped ensemble peaked at 426-502 MB against
    # 540-565 MB, at the same median time within this machine's noise (three paired runs each)
    _model_options(recognize, batch_size=4)
    recognize.add_argument("--json", action="store_true",
                           help="one JSON object per line: path, latex, score, confidence, ms (and alternatives, warnings)")
    recognize.add_argument("--format", choices=FORMATS, default="tokens",
                           help="tokens: canonical, space-separated (default); latex: compact (x^{2}+1); mathml")
    recognize.add_argument("--n-best", type=positive_int, default=1, metavar="K",
                           help="also print the beam's next best answers, up to K in all (tab-separated, or "
                           "'alternatives' with --json; default 1)")
    recognize.set_defaults(run=_recognize)

    evaluate = commands.add_parser("evaluate", help="ExpRate, <=1, <=2 errors and speed on offline-layout splits")
    evaluate.add_argument("split_dirs", nargs="+", metavar="SPLIT_DIR", help="folder with caption.txt and img/")
    _model_options(evaluate, batch_size=16)
    evaluate.add_argument("--json", metavar="FILE", help="write the scores: {split: {n, exprate, le1, ...}}")
    evaluate.add_argument("--unconstrained", action="store_true",
                          help="decode without the LaTeX grammar (outputs may not parse; for comparison)")
    evaluate.add_argument("--predictions", metavar="FILE",
                          help="write each expression's name, reference, prediction, distance (.jsonl, else TSV)")
    evaluate.set_defaults(run=_evaluate)
