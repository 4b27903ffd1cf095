"""`Recognizer`: handwritten math (an image, pen strokes or an InkML file) to LaTeX, loaded once, used many times.

The CLI, the web page and users' scripts are thin shells around it. It has no side effects: it reads the
files it is given and returns results; it never prints or writes.

    from maskmatch import Recognizer
    rec = Recognizer.load("model.safetensors")
    rec.recognize("photo.jpg").latex            # also a PIL image, a numpy array, strokes, an .inkml path
    rec.recognize(strokes, beam_size=1)         # beam_size=1 is greedy decoding: fastest
    rec.recognize("photo.jpg", scales=READ_SCALES)  # read at three sizes, keep the answer most reads give
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from maskmatch.calibration import confidence
from maskmatch.data.batching import collate
from maskmatch.data.images import load_image
from maskmatch.data.inkml import Ink, read_inkml
from maskmatch.data.bitmap import THICK_PEN, read_bitmap_at
from maskmatch.data.render import RenderConfig, render_strokes
from maskmatch.data.vocab import PAD, SOS, Vocabulary
from maskmatch.devices import resolve_device
from maskmatch.ensemble_file import (NAME as SHIPPED_ENSEMBLE, RESERVED as ENSEMBLE_KEYS, is_ensemble_file,
                                     read_ensemble)
from maskmatch.model import HMERModel, LatexGrammar
from maskmatch.model.encoder import fold_batchnorms
from maskmatch.model.ensemble import Ensemble
from maskmatch.onnx_model import OnnxModel, is_export, load_onnx
from maskmatch.weights import load_weights, manifest_vocabulary, render_config

SHIPPED = "model.safetensors"  # in maskmatch/assets/, beside model.json; with ensemble.json when the package ships
# an ensemble (ensemble_file.py), of which it is the first member
RUNTIMES = ("torch", "onnx")
# Sizes to read an input at, as shares of the model's symbol size, for `scales` (off by default: each is drawn and
# decoded again).
# Chosen on the held-out slice's expressions drawn in `maskmatch foreign`'s styles, among 0.8-1.25; the shipped
# model, greedy, keeping the answer most reads give (`agreed`), CROHME 2014 drawn thin / marker / scan and our
# renders read as files: 33.98 / 28.99 / 37.64 / 37.23% against 32.35 / 27.57 / 34.59 / 34.59% at 1 alone
# (README, "Recognize and evaluate")
READ_SCALES = (1.0, 1.12, 1.25)
MAX_SCALE = 2.0  # scales lie within [1 / MAX_SCALE, MAX_SCALE]: far beyond the sizes trained on (0.8-1.2 of the symbol)


@dataclass
class Alternative:
    latex: str
    tokens: list[str]
    score: float  # as Recognition.score
    confidence: float | None  # as Recognition.confidence


@dataclass
class Recognition:
    latex: str  # canonical CROHME tokens joined by spaces, e.g. "x ^ { 2 }"
    tokens: list[str]
    score: float  # length-normalized log-prob (model/search.py), higher is surer; beam adds r2l: another scale
    ms: float  # wall time spent on this input: its preprocessing plus its share of the batch's decoding
    attention: np.ndarray | None = None  # (T, h, w) float32 when asked for: where the decoder looked to write each
    # token (cross-attention averaged over heads and layers); cell (i, j) covers pixels [16i, 16i+16) x [16j, 16j+16)
    # of the normalized image (`preprocess`), h = ceil(H / 16), w = ceil(W / 16)
    confidence: float | None = None  # 0-1: the share of answers with this score that were right on the model's
    # held-out slice (`maskmatch calibrate`, calibration.py); None when the model has not been calibrated
    alternatives: list[Alternative] = field(default_factory=list)  # the n best (n_best), best first: this one first
    warnings: list[str] = field(default_factory=list)  # what in the input makes this answer less sure (`prepare`)


class Recognizer:
    """A model with its vocabulary and preprocessing. Inputs (see `preprocess`):

    - a path (str or Path) to an image (PNG, JPEG, BMP, ...) or an .inkml file;
    - image file bytes, or InkML bytes;
    - a PIL image, or a numpy array (H, W) / (H, W, 1|3|4) of any dtype: any polarity, size, pen;
    - pen strokes: a list of (n, 2) arrays or lists of (x, y) points, y pointing down, any scale;
    - an `Ink` from `maskmatch.data.inkml.read_inkml`.
    Bad input raises ValueError with a one-line reason.
    """

    def __init__(self, model: HMERModel | Ensemble | OnnxModel, vocabulary: Vocabulary, render: RenderConfig,
                 manifest: dict | None = None, device: str | torch.device = "cpu", constrained: bool = True):
        if len(vocabulary) != model.config.vocab_size:
            raise ValueError(f"vocabulary of {len(vocabulary)} symbols for a model of vocab_size {model.config.vocab_size}")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.vocabulary, self.render, self.manifest = vocabulary, render, manifest or {}
        # decoding follows the LaTeX token grammar (model/grammar.py), so every output parses; False: the bare model
        self.grammar = LatexGrammar(vocabulary.symbols) if constrained else None

    @classmethod
    def load(cls, path: str | Path | list | None = None, device: str | torch.device | None = None,
             constrained: bool = True, runtime: str | None = None, threads: int | None = None,
             handoff: bool = False) -> "Recognizer":
        """Weights written by `maskmatch.weights.save_weights`; a list of several: their ensemble (model/ensemble.py:
        log-probs averaged, one vocabulary and render scale); an ensemble file (`maskmatch ensemble`, .json): the
        ensemble it names; None: what the package ships (`shipped_model`).
        device None: CUDA if this torch has it, else the CPU (`devices.resolve_device`, as the CLI's).
        constrained=False decodes without the LaTeX grammar (for measuring what it changes).
        runtime "onnx" runs a folder of `maskmatch export --onnx` with onnxruntime (CPU; no attention maps;
        `threads`: its intra-op threads, None: onnxruntime's choice); None: onnx for such a folder, torch otherwise.
        handoff=True also loads a stage hand-off file, its other modules as initialized (`weights.load_weights`):
        for drawing a stage-2 model's attention maps, not for reading. A torch model's ResNet BatchNorms are folded
        into its convolutions (`fold_batchnorms`): to train or save weights, take them from `load_weights`."""
        if isinstance(path, (list, tuple)):
            if any(is_ensemble_file(p) for p in path) and len(path) > 1:
                raise ValueError("an ensemble file cannot be a member of an ensemble: give its members' weights")
            if len(path) > 1:
                return cls._ensemble(list(path), device, constrained, runtime)
            path = path[0] if path else None
        if path is None and runtime != "onnx":
            path = shipped_model()
        if is_ensemble_file(path):
            members, record = read_ensemble(path)
            return cls._ensemble(members, device, constrained, runtime, record)
        runtime = runtime or ("onnx" if is_export(path) else "torch")
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime {runtime!r}: choose one of {', '.join(RUNTIMES)}")
        if runtime == "onnx":
            if not is_export(path):
                raise ValueError("the onnx runtime reads an export folder: maskmatch export --onnx --out DIR, "
                                 "then --model DIR")
            model, manifest = load_onnx(path, threads)
            return cls(model, manifest_vocabulary(manifest), render_config(manifest), manifest,
                       "cpu" if device is None else device, constrained)
        if is_export(path):
            raise ValueError(f"{path}: an onnx export; run it with the onnx runtime (--runtime onnx)")
        device = resolve_device(device)
        model, manifest = load_weights(path, device, handoff)
        return cls(fold_batchnorms(model), manifest_vocabulary(manifest), render_config(manifest), manifest, device,
                   constrained)

    @classmethod
    def _ensemble(cls, paths: list, device, constrained: bool, runtime: str | None,
                  record: dict | None = None) -> "Recognizer":
        if runtime not in (None, "torch") or any(is_export(p) for p in paths):
            raise ValueError("an ensemble runs on the torch runtime: give .safetensors weights, not onnx exports")
        device = resolve_device(device)
        loaded = [(fold_batchnorms(model), manifest) for model, manifest in (load_weights(p, device) for p in paths)]
        manifest = loaded[0][1]
        for p, (_, other) in zip(paths[1:], loaded[1:]):
            if manifest_vocabulary(other).symbols != manifest_vocabulary(manifest).symbols:
                raise ValueError(f"{p}: its vocabulary is not {paths[0]}'s; an ensemble needs one vocabulary")
            if render_config(other) != render_config(manifest):
                raise ValueError(f"{p}: rendered at another scale than {paths[0]}; an ensemble needs one scale")
        # the first member's manifest (config, preprocessing, training and its command) less what describes its
        # weights alone (their file, scores and calibration), then the ensemble file's scores and calibration
        manifest = {k: v for k, v in manifest.items() if k not in ("calibration", "metrics", "results_command")}
        record = {k: v for k, v in (record or {}).items() if k not in ENSEMBLE_KEYS}
        if "command" in record:
            record["ensemble_command"] = record.pop("command")
        manifest.update(record, ensemble=[str(p) for p in paths],
                        weights={"parameters": sum(m["weights"].get("parameters", 0) for _, m in loaded),
                                 "members": [m["weights"] for _, m in loaded]})
        return cls(Ensemble([m for m, _ in loaded]), manifest_vocabulary(manifest), render_config(manifest),
                   manifest, device, constrained)

    @property
    def members(self) -> int:
        """How many models decode as one: 1, or an ensemble's size."""
        return len(self.model.members) if isinstance(self.model, Ensemble) else 1

    # ------------------------------------------------------------ inputs

    def preprocess(self, x: Any) -> np.ndarray:
        """Any supported input -> normalized uint8 image (H, W), ink 255 on 0, as the model was trained on."""
        return self.prepare(x)[0]

    def prepare(self, x: Any) -> tuple[np.ndarray, list[str]]:
        """`preprocess`, and warnings about the input (a picture's pen thick for its writing: THICK_PEN)."""
        images, warnings = self.read(x, (1.0,))
        return images[0], warnings

    def read(self, x: Any, scales: tuple[float, ...]) -> tuple[list[np.ndarray], list[str]]:
        """`prepare` at each of scales (shares of the model's symbol size, `check_scales`): one image per scale."""
        check_scales(scales)
        if isinstance(x, (str, Path)) and Path(x).suffix.lower() == ".inkml":
            x = read_inkml(x)
        elif isinstance(x, (bytes, bytearray)) and bytes(x[:256]).lstrip().startswith(b"<"):  # XML: InkML
            x = read_inkml(bytes(x))
        if isinstance(x, (Ink, list, tuple)):
            strokes = x.strokes if isinstance(x, Ink) else _strokes(x)
            return [render_strokes(strokes, self._at(s)) for s in scales], []
        if isinstance(x, (str, Path, bytes, bytearray)):
            x = load_image(x if isinstance(x, (str, Path)) else bytes(x))
        if not isinstance(x, (Image.Image, np.ndarray)):
            raise ValueError(f"cannot recognize a {type(x).__name__}: pass a path, an image, an array or strokes")
        images, pen = read_bitmap_at(x, [self._at(s) for s in scales])  # the ink found once for every scale
        if pen < THICK_PEN:
            return images, []
        return images, [f"the pen is thick for the writing's size ({pen:.2f} of a symbol): neighbouring strokes may "
                        "merge; write larger or with a thinner pen"]

    def _at(self, scale: float) -> RenderConfig:
        """The model's render config with symbols `scale` times its size."""
        return self.render if scale == 1 else replace(self.render, symbol_size=self.render.symbol_size * scale)

    # ------------------------------------------------------------ recognition

    def recognize(self, x: Any, beam_size: int = 10, attention: bool = False, n_best: int = 1,
                  scales: tuple[float, ...] = (1.0,)) -> Recognition:
        """One input -> its Recognition. beam_size 1 decodes greedily (the ids equal beam search's with one beam);
        attention=True fills Recognition.attention (the decoded tokens are the same either way); n_best > 1 fills
        Recognition.alternatives with up to that many of the beam's answers (at most beam_size). Several scales
        (e.g. READ_SCALES) read the input at each of those sizes and keep the answer most reads give (`agreed`):
        each scale costs a read."""
        return self.recognize_batch([x], beam_size, attention, n_best, scales)[0]

    def recognize_batch(self, xs: list[Any], beam_size: int = 10, attention: bool = False,
                        n_best: int = 1, scales: tuple[float, ...] = (1.0,)) -> list[Recognition]:
        """Inputs -> Recognitions in order, decoded as one padded batch; the first bad input raises ValueError."""
        images, warnings, spent = [], [], []
        for x in xs:
            start = time.perf_counter()
            read, warned = self.read(x, scales)
            images += read
            warnings.append(warned)
            spent.append(time.perf_counter() - start)
        results = agreed_per_input(self.decode(images, beam_size, attention, n_best), len(scales))
        for r, w, s in zip(results, warnings, spent):
            r.ms, r.warnings = round(r.ms + 1000 * s, 2), w
        return results

    def decode(self, images: list[np.ndarray], beam_size: int = 10, attention: bool = False,
               n_best: int = 1) -> list[Recognition]:
        """Normalized uint8 images (H_i, W_i), ink bright (from `preprocess`, or a built split) -> Recognitions.

        Decodes all of them as one batch, padded to the largest: group images of like size for speed.
        attention=True adds each result's per-token attention maps (see `attention_maps`); n_best > 1 ranks
        every candidate of the beam (each rescored right to left) and keeps up to n_best as alternatives.
        """
        if beam_size < 1:
            raise ValueError(f"beam_size must be at least 1 (1 is greedy), got {beam_size}")
        if n_best < 1:
            raise ValueError(f"n_best must be at least 1, got {n_best}")
        if attention and isinstance(self.model, OnnxModel):
            raise ValueError("attention maps need the torch runtime (--runtime torch)")
        if not images:
            return []
        start = time.perf_counter()
        batch = collate([(i, image, np.zeros(0, np.int64)) for i, image in enumerate(images)])
        images_t, mask = batch.images.to(self.device), batch.mask.to(self.device)  # (B, 1, H, W), (B, H, W)
        with torch.inference_mode():
            if beam_size == 1:
                ranked = [[h] for h in self.model.greedy(images_t, mask, grammar=self.grammar)]
            elif n_best == 1:
                ranked = [[h] for h in self.model.beam_search(images_t, mask, beam_size=beam_size, grammar=self.grammar)]
            else:
                ranked = self.model.beam_search(images_t, mask, beam_size=beam_size, grammar=self.grammar, n_best=True)
            hyps = [r[0] for r in ranked]
            maps = self.attention_maps(images_t, mask, [h.ids for h in hyps]) if attention else [None] * len(hyps)
        share = 1000 * (time.perf_counter() - start) / len(images)
        decoding = "greedy" if beam_size == 1 else "beam"
        out = []
        for r, m in zip(ranked, maps):
            alternatives = []
            for h in r[:n_best]:
                tokens = self.vocabulary.decode(h.ids)
                alternatives.append(Alternative(" ".join(tokens), tokens, float(h.score),
                                                confidence(self.manifest, decoding, float(h.score))))
            best = alternatives[0]
            out.append(Recognition(best.latex, best.tokens, best.score, round(share, 2), m, best.confidence,
                                   alternatives))
        return out

    def attention_maps(self, images: torch.Tensor, mask: torch.Tensor, ids: list[list[int]]) -> list[np.ndarray]:
        """Where the decoder looks to write each token of ids[b]: images (B, 1, H, W), mask (B, H, W) ->
        B arrays (T_b, h_b, w_b) float32, h_b x w_b the cells of image b (ceil(H_b / 16) x ceil(W_b / 16)).

        A separate teacher-forced pass over [SOS, ids] (decoding itself is untouched): the decoder's
        cross-attention averaged over heads and over all layers. Each token's map sums to 1 over the memory;
        with token fusion, the share that goes to the K extra memory tokens is left out of the map.
        """
        features, feature_mask = self.model.encode(images, mask)  # (B, h', w, d), (B, h', w)
        L = max((len(s) for s in ids), default=0)
        tokens = torch.full((len(ids), L + 1), PAD, dtype=torch.long, device=images.device)  # (B, L+1)
        tokens[:, 0] = SOS
        for b, s in enumerate(ids):
            tokens[b, 1 : len(s) + 1] = torch.as_tensor(s, dtype=torch.long)
        weights = self.model.decoder.cross_attention(features, feature_mask, tokens).float().cpu()  # (B, L+1, h', w)
        stride = self.model.config.stride
        heights, widths = (~mask).sum(1).amax(1).tolist(), (~mask).sum(2).amax(1).tolist()  # (B,) valid pixels
        out = []
        for b, s in enumerate(ids):
            h, w = -(-heights[b] // stride), -(-widths[b] // stride)  # ceil
            out.append(weights[b, : len(s), :h, :w].numpy().copy())
        return out


def check_scales(scales: tuple[float, ...]) -> None:
    """ValueError unless scales is one or more sizes within [1 / MAX_SCALE, MAX_SCALE]."""
    if not scales or not all(1 / MAX_SCALE <= s <= MAX_SCALE for s in scales):
        raise ValueError(f"scales {list(scales)}: give one or more sizes between {1 / MAX_SCALE} and {MAX_SCALE} "
                         "(shares of the model's symbol size)")


def agreed(reads: list[Recognition]) -> Recognition:
    """Of one input's reads at several scales, the answer most of them give; a tie goes to the earlier scale.
    Its ms is that of all the reads."""
    counts = Counter(r.latex for r in reads)
    best = max(range(len(reads)), key=lambda i: (counts[reads[i].latex], -i))
    winner = reads[best]
    winner.ms = round(sum(r.ms for r in reads), 2)
    return winner


def agreed_per_input(reads: list[Recognition], k: int) -> list[Recognition]:
    """Reads of inputs in order, k for each (one per scale, in the scales' order) -> each input's `agreed` answer."""
    return [agreed(reads[i : i + k]) for i in range(0, len(reads), k)]


def shipped_model() -> Path:
    """What `Recognizer.load()` loads: the package's ensemble file if it ships one, else its weights."""
    assets = resources.files("maskmatch").joinpath("assets")
    if assets.joinpath(SHIPPED_ENSEMBLE).is_file():
        return Path(str(assets.joinpath(SHIPPED_ENSEMBLE)))
    if not assets.joinpath(SHIPPED).is_file():
        raise ValueError("no shipped weights in this version; pass a model path (--model)")
    return Path(str(assets.joinpath(SHIPPED)))


def _strokes(strokes: list | tuple) -> list[np.ndarray]:
    """A list of strokes -> (n_i, 2) float64 arrays; ValueError naming the first malformed stroke."""
    out = []
    for i, s in enumerate(strokes):
        try:
            a = np.asarray(s, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"stroke {i} is not a list of numeric (x, y) points") from None
        if a.size == 0:
            continue
        if a.ndim != 2 or a.shape[1] != 2:
            raise ValueError(f"stroke {i} has shape {a.shape}; expected (n, 2) points (x, y)")
        out.append(a)
    return out
