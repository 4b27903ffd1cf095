"""`maskmatch data build`: CROHME (InkML or offline images) -> offline layout + training cache.

For each split it writes `<out>/<split>/caption.txt` (`name<TAB>tokens`), `<out>/<split>/img/<name>.png`
and `<out>/<split>/cache/` (see cache.py), and `<out>/summary.json` with, per split: files seen,
built, skipped with the reason for each, out-of-vocabulary tokens with counts. Expressions with
out-of-vocabulary tokens are written to caption.txt (evaluation must count them) but kept out of the
cache (training cannot encode them). Work is spread over processes, one item at a time. With
variants (variants.py), the train split also gets `<out>/train/variants/`: K distorted renders of each
cached expression, made in the same pass; with sub-expressions (subexpr.py), `<out>/train/subexpressions/`:
the renders of each cached expression's unambiguous sub-expressions, entry NAME~k for window k of NAME.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from maskmatch.data.cache import CacheWriter
from maskmatch.data.images import load_image
from maskmatch.data.inkml import InkmlError, read_inkml
from maskmatch.data.latex import LatexError, normalize_latex
from maskmatch.data.bitmap import normalize_bitmap
from maskmatch.data.render import RenderConfig, render_strokes
from maskmatch.data.source import Item, Split, list_splits, open_source
from maskmatch.data.swap import SymbolBank
from maskmatch.data.subexpr import subexpressions
from maskmatch.data.variants import FOLDER, SUBEXPRESSIONS, VariantConfig, render_variant, variant_seed
from maskmatch.data.vocab import Vocabulary


@dataclass
class SplitSummary:
    layout: str
    files: int = 0  # items seen (InkML files, or caption lines)
    built: int = 0  # written to caption.txt and img/
    cached: int = 0  # of those, in the training cache (all tokens in the vocabulary)
    skipped: list[dict] = field(default_factory=list)  # {"file", "reason"}
    oov_tokens: dict[str, int] = field(default_factory=dict)  # token -> occurrences
    oov_expressions: list[str] = field(default_factory=list)  # names of built expressions with OOV tokens
    seconds: float = 0.0
    variants: int = 0  # distorted renders per cached expression (train only)
    subexpressions: int = 0  # sub-expression renders in <split>/subexpressions/ (train only, with --subexpressions)
    subexpression_sources: int = 0  # cached expressions that gave at least one
    cache_mb: float = 0.0  # size of the cache's images, variants included


@dataclass(frozen=True)
class _Result:
    name: str
    file: str
    tokens: list[str] | None = None
    image: np.ndarray | None = None
    reason: str | None = None
    variants: list[np.ndarray] = field(default_factory=list)
    subexpressions: list[tuple[tuple[str, ...], np.ndarray]] = field(default_factory=list)  # (tokens, image)


TRAIN = "train"  # the split that gets variants
_BANK: SymbolBank | None = None  # symbol drawings of the train split for swaps, set before the workers fork


def build(source: str | Path, out: str | Path, splits: list[str] | None = None,
          workers: int | None = None, render: RenderConfig = RenderConfig(),
          progress: bool = True, variants: VariantConfig = VariantConfig()) -> dict[str, SplitSummary]:
    """Builds every split of source (or those named) under out; returns the summaries."""
    global _BANK
    out = Path(out)
    vocab = Vocabulary.load()
    workers = workers or os.cpu_count() or 1
    summaries: dict[str, SplitSummary] = {}
    with open_source(source) as root:
        found = list_splits(root)
        if splits:
            missing = sorted(set(splits) - {s.name for s in found})
            if missing:
                raise ValueError(f"split(s) {', '.join(missing)} not in {source} (found {', '.join(s.name for s in found)})")
            found = [s for s in found if s.name in splits]
        train = next((s for s in found if s.name == TRAIN), None)
        if variants.needs_ink and (train is None or train.layout != "inkml"):
            raise ValueError("--variants and --subexpressions need the train split as InkML (its strokes)")
        _BANK = _symbol_bank(train) if variants.count and variants.swap_share > 0 else None
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            for split in found:
                split_variants = variants if split.name == TRAIN else VariantConfig()
                summaries[split.name] = _build_split(split, out / split.name, vocab, render, pool, progress,
                                                     split_variants)
        _BANK = None
    out.mkdir(parents=True, exist_ok=True)
    summary_json = {name: asdict(s) for name, s in summaries.items()}
    (out / "summary.json").write_text(json.dumps(summary_json, indent=1, ensure_ascii=False) + "\n", "utf-8")
    return summaries


def _symbol_bank(split: Split) -> SymbolBank:
    """The drawings of each symbol class in the split's InkML files (unreadable files are skipped)."""
    bank = SymbolBank()
    for item in split.items:
        try:
            bank.add(read_inkml(item.path))
        except (InkmlError, ValueError):
            continue
    return bank


def _build_split(split: Split, out: Path, vocab: Vocabulary, render: RenderConfig,
                 pool, progress: bool, variants: VariantConfig) -> SplitSummary:
    start = time.perf_counter()
    (out / "img").mkdir(parents=True, exist_ok=True)
    summary = SplitSummary(layout=split.layout, files=len(split.items) + len(split.problems),
                           variants=variants.count)
    summary.skipped = [{"file": f"{split.name}/{f}", "reason": r} for f, r in split.problems]
    writer = CacheWriter(out / "cache", vocab.symbols, asdict(render))
    extra = CacheWriter(out / FOLDER, vocab.symbols, asdict(render), variants.meta()) if variants.count else None
    parts = CacheWriter(out / SUBEXPRESSIONS, vocab.symbols, asdict(render)) if variants.subexpressions else None
    oov = Counter()
    captions = []
    jobs = [(item, split.layout, out / "img", render, variants) for item in split.items]
    results = pool.imap(_build_item, jobs, chunksize=16)
    for result in tqdm(results, total=len(jobs), desc=f"{split.name:>6}", unit="expr", disable=not progress):
        if result.reason is not None:
            where = Path(result.file).relative_to(split.folder)
            summary.skipped.append({"file": f"{split.name}/{where}", "reason": result.reason})
            continue
        summary.built += 1
        captions.append(f"{result.name}\t{' '.join(result.tokens)}\n")
        missing = vocab.oov(result.tokens)
        if missing:
            oov.update(missing)
            summary.oov_expressions.append(result.name)
        else:
            ids = vocab.encode(result.tokens)
            writer.add(result.name, result.image, ids)
            for v, image in enumerate(result.variants, 1):
                extra.add(f"{result.name}#{v}", image, ids)
            for k, (tokens, image) in enumerate(result.subexpressions, 1):
                parts.add(f"{result.name}~{k}", image, vocab.encode(list(tokens)))
            summary.subexpressions += len(result.subexpressions)
            summary.subexpression_sources += bool(result.subexpressions)
            summary.cached += 1
    for w in (writer, extra, parts):
        if w is not None:
            w.close()
    summary.cache_mb = round(sum(f.stat().st_size for d in ("cache", FOLDER, SUBEXPRESSIONS) if (out / d).is_dir()
                                 for f in (out / d).glob("images.u8")) / 2**20, 1)
    tmp = out / "caption.txt.tmp"
    tmp.write_text("".join(captions), "utf-8")
    os.replace(tmp, out / "caption.txt")
    summary.oov_tokens = dict(oov.most_common())
    summary.seconds = round(time.perf_counter() - start, 2)
    return summary


def _build_item(job: tuple[Item, str, Path, RenderConfig, VariantConfig]) -> _Result:
    """Runs in a worker: read, normalize the label, render (and the variants), write the PNG. Never raises for
    bad data."""
    item, layout, img_dir, render, variants = job
    extra, parts = [], []
    try:
        if layout == "inkml":
            ink = read_inkml(item.path)
            if ink.truth is None:
                return _Result(item.name, str(item.path), reason="no truth annotation")
            raw, image = ink.truth, render_strokes(ink.strokes, render)
        else:
            raw, image = item.caption, normalize_bitmap(load_image(item.path), render)
        tokens = normalize_latex(raw)
        if not tokens:
            return _Result(item.name, str(item.path), reason="empty truth")
        extra = [render_variant(ink, render, variants, _BANK, variant_seed(item.name, v))
                 for v in range(1, variants.count + 1)]
        parts = _subexpression_renders(tokens, ink, render) if variants.subexpressions else []
    except (InkmlError, LatexError, ValueError) as e:
        return _Result(item.name, str(item.path), reason=str(e))
    except Exception as e:  # a bug on one odd file must not cost the whole build; it is listed
        return _Result(item.name, str(item.path), reason=f"unexpected {type(e).__name__}: {e}")
    Image.fromarray(image).save(img_dir / f"{item.name}.png", compress_level=1)
    return _Result(item.name, str(item.path), tokens=tokens, image=image, variants=extra, subexpressions=parts)


def _subexpression_renders(tokens: list[str], ink, render: RenderConfig) -> list[tuple[tuple[str, ...], np.ndarray]]:
    """(tokens, image) of each unambiguous sub-expression; one that cannot be rendered is left out, the
    expression itself is kept whatever happens here."""
    out = []
    for part in subexpressions(tokens, ink):
        try:
            out.append((part.tokens, render_strokes([ink.strokes[i] for i in part.strokes], render)))
        except ValueError:
            continue
    return out


def format_summary(summaries: dict[str, SplitSummary]) -> str:
    """A table for the terminal, then each skip and the out-of-vocabulary tokens."""
    lines = [f"{'split':<8}{'layout':<9}{'files':>7}{'built':>7}{'cached':>8}{'skipped':>9}{'oov expr':>10}"
             f"{'variants':>9}{'subexpr':>9}{'cache MB':>9}{'seconds':>9}"]
    for name, s in summaries.items():
        lines.append(f"{name:<8}{s.layout:<9}{s.files:>7}{s.built:>7}{s.cached:>8}{len(s.skipped):>9}"
                     f"{len(s.oov_expressions):>10}{s.variants:>9}{s.subexpressions:>9}{s.cache_mb:>9.1f}"
                     f"{s.seconds:>9.1f}")
    for name, s in summaries.items():
        for skip in s.skipped:
            lines.append(f"skipped {skip['file']}: {skip['reason']}")
        if s.oov_tokens:
            counts = ", ".join(f"{t} x{c}" for t, c in s.oov_tokens.items())
            lines.append(f"out-of-vocabulary [{name}]: {counts}")
    return "\n".join(lines)
