"""The recognizer run by onnxruntime (`--runtime onnx`): the graphs `maskmatch export --onnx` writes, behind
the interface of `HMERModel`, so that `Recognizer`, the searches of model/search.py and the benchmark use
them unchanged.

An export folder holds `encoder.onnx`, `decoder.onnx`, `decoder_step.onnx` and `model.json` (the weights'
manifest). The encoder graph maps images (B, 1, H, W) and their padding mask (B, H, W) to the decoder's
memory: each layer's cross-attention keys and values (B, layers, 2, heads, S, head_dim), and where it may
be attended (B, S). The decoder graph maps a token prefix from the start token (N, T) and the memory of
each row to the logits of every position (N, T, V) and the prefix's self-attention keys and values; the
step graph takes one more token and those keys and values, and returns its logits and the keys and values
grown by one, so a step costs what torch's cached step costs (`maskmatch benchmark --model FOLDER`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from maskmatch.model import search
from maskmatch.model.config import ModelConfig
from maskmatch.model.decoder import DecoderCache, entry_runs
from maskmatch.model.grammar import LatexGrammar
from maskmatch.model.search import Hypothesis
from maskmatch.weights import model_config

ENCODER, DECODER, STEP, MANIFEST = "encoder.onnx", "decoder.onnx", "decoder_step.onnx", "model.json"


class EncoderGraph(nn.Module):
    """images (B, 1, H, W), mask (B, H, W) True on padding -> memory (B, layers, 2, heads, S, head_dim), attend (B, S)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features, feature_mask = self.model.encode(images, mask)  # (B, h, w, d), (B, h, w)
        memory = features.flatten(1, 2)  # (B, S, d)
        kv = [torch.stack(layer.cross_attn.keys_values(memory), 1) for layer in self.model.decoder.layers]
        return torch.stack(kv, 1), ~feature_mask.flatten(1)  # (B, layers, 2, nh, S, hd), (B, S)


def _cache(tokens: torch.Tensor, memory: torch.Tensor, attend: torch.Tensor,
           past: torch.Tensor | None = None) -> DecoderCache:
    """The decoder's cache over the graph's inputs: N token rows read E memory entries, N / E rows each (the
    beams of one image attend together, as in torch's search)."""
    layers = range(memory.shape[1])
    cache = DecoderCache([(memory[:, i, 0], memory[:, i, 1]) for i in layers], attend[:, None, None, :],
                         [None if past is None else (past[:, i, 0], past[:, i, 1]) for i in layers],
                         group=tokens.shape[0] // memory.shape[0])
    cache.length = 0 if past is None else past.shape[4]
    return cache


def _stacked(cache: DecoderCache) -> torch.Tensor:
    return torch.stack([torch.stack(kv, 1) for kv in cache.self_kv], 1)  # (N, layers, 2, nh, t, hd)


class DecoderGraph(nn.Module):
    """A prefix from the start token: tokens (N, T), memory (E, layers, 2, heads, S, head_dim), attend (E, S),
    each memory entry read by N / E rows in a run -> logits (N, T, V) and the prefix's self-attention keys and
    values (N, layers, 2, heads, T, head_dim)."""

    def __init__(self, decoder):
        super().__init__()
        self.decoder = decoder

    def forward(self, tokens: torch.Tensor, memory: torch.Tensor, attend: torch.Tensor):
        cache = _cache(tokens, memory, attend)
        return self.decoder.decode(tokens, cache), _stacked(cache)


class StepGraph(DecoderGraph):
    """One more token: tokens (N, 1), past (N, layers, 2, heads, t, head_dim), memory, attend -> logits (N, 1, V)
    and the keys and values with it (N, layers, 2, heads, t + 1, head_dim)."""

    def forward(self, tokens: torch.Tensor, past: torch.Tensor, memory: torch.Tensor, attend: torch.Tensor):
        cache = _cache(tokens, memory, attend, past)
        return self.decoder.decode(tokens, cache), _stacked(cache)


def is_export(path: str | Path | None) -> bool:
    """True for a folder that `maskmatch export --onnx` wrote."""
    return path is not None and (Path(path) / ENCODER).is_file()


class OnnxCache:
    """`DecoderCache`'s interface over the graphs' tensors: rows n*group .. n*group + group-1 read memory entry n."""

    def __init__(self, memory: torch.Tensor, attend: torch.Tensor, past: torch.Tensor | None, group: int = 1):
        self.memory, self.attend = memory, attend  # (E, layers, 2, heads, S, head_dim), (E, S) bool
        self.past, self.group = past, group  # (N, layers, 2, heads, t, head_dim) or None (t = 0), N = E * group

    @property
    def length(self) -> int:
        return 0 if self.past is None else self.past.shape[4]

    @property
    def device(self) -> torch.device:
        return self.memory.device

    def reorder(self, rows: torch.Tensor, group: int | None = None) -> None:
        self.past = None if self.past is None else self.past.index_select(0, rows)  # faster than [rows] on the CPU
        self.group = group or self.group

    def repeat_interleave(self, k: int) -> "OnnxCache":
        past = None if self.past is None else self.past.repeat_interleave(k, dim=0)
        return OnnxCache(self.memory, self.attend, past, self.group * k)

    def select(self, entries: torch.Tensor) -> "OnnxCache":
        rows = (entries[:, None] * self.group + torch.arange(self.group)).flatten()
        return OnnxCache(self.memory.index_select(0, entries), self.attend.index_select(0, entries),
                         None if self.past is None else self.past.index_select(0, rows), self.group)

    def for_entries(self, owners: list[int]) -> "OnnxCache":
        entries, group = entry_runs(owners)
        index = torch.tensor(entries, dtype=torch.long)
        return OnnxCache(self.memory.index_select(0, index), self.attend.index_select(0, index), None, group)


class OnnxDecoder:
    """`Decoder`'s decoding interface (init_cache, decode, step) over the decoder graphs: a prefix from an empty
    cache (the first step, or a teacher-forced rescoring), then one token at a time with the cached keys and values."""

    def __init__(self, prefix, step):
        self.prefix, self.one = prefix, step

    def init_cache(self, memory: torch.Tensor, attend: torch.Tensor) -> OnnxCache:
        return OnnxCache(memory, attend, None)

    def decode(self, tokens: torch.Tensor, cache: OnnxCache, capture: list | None = None) -> torch.Tensor:
        """tokens (N, T) following the cache's -> logits (N, T, V); the cache takes them in."""
        if capture is not None:
            raise ValueError("attention maps need the torch runtime (--runtime torch)")
        inputs = {"tokens": tokens.numpy(), "memory": cache.memory.numpy(), "attend": cache.attend.numpy()}
        if cache.past is None:
            logits, present = self.prefix.run(None, inputs)
        elif tokens.shape[1] == 1:
            logits, present = self.one.run(None, {**inputs, "past": cache.past.numpy()})
        else:
            raise ValueError("the onnx decoder takes a prefix from the start, then one token at a time")
        cache.past = torch.from_numpy(present)
        return torch.from_numpy(logits)

    def step(self, tokens: torch.Tensor, cache: OnnxCache) -> torch.Tensor:
        return self.decode(tokens[:, None], cache)[:, 0]


class OnnxModel:
    """`HMERModel`'s inference interface (config, encode, greedy, beam_search) over an export folder; CPU only."""

    def __init__(self, folder: str | Path, config: ModelConfig, threads: int | None = None):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        # no spinning between runs: torch's own threads do the search's work between two steps on the same cores
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        folder = Path(folder)
        session = lambda name: onnxruntime.InferenceSession(str(folder / name), options,  # noqa: E731
                                                             providers=["CPUExecutionProvider"])
        self.config, self.encoder = config, session(ENCODER)
        self.decoder = OnnxDecoder(session(DECODER), session(STEP))
        self.attention = None

    def to(self, device: str | torch.device) -> "OnnxModel":
        if torch.device(device).type != "cpu":
            raise ValueError(f"the onnx runtime runs on the cpu here, not {device}")
        return self

    def eval(self) -> "OnnxModel":
        return self

    def encode(self, images: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images (B, 1, H, W), mask (B, H, W) -> memory (B, layers, 2, heads, S, head_dim), attend (B, S)."""
        memory, attend = self.encoder.run(None, {"images": images.numpy(), "mask": mask.numpy()})
        return torch.from_numpy(memory), torch.from_numpy(attend)

    def greedy(self, images: torch.Tensor, mask: torch.Tensor, max_len: int | None = None,
               grammar: LatexGrammar | None = None) -> list[Hypothesis]:
        return search.greedy(self.decoder, *self.encode(images, mask), max_len or self.config.max_len, grammar)

    def beam_search(self, images: torch.Tensor, mask: torch.Tensor, beam_size: int = 10, max_len: int | None = None,
                    length_penalty: float = 1.0, rescore: bool = True, grammar: LatexGrammar | None = None,
                    n_best: bool = False) -> list[Hypothesis] | list[list[Hypothesis]]:
        if beam_size < 1:
            raise ValueError(f"beam_size must be positive, got {beam_size}")
        return search.beam_search(self.decoder, *self.encode(images, mask), beam_size,
                                  max_len or self.config.max_len, length_penalty, rescore, grammar, n_best)


def load_onnx(folder: str | Path, threads: int | None = None) -> tuple[OnnxModel, dict]:
    """An export folder -> (model, manifest); ValueError (one line) if it is not one or onnxruntime is missing."""
    folder = Path(folder)
    missing = [name for name in (ENCODER, DECODER, STEP, MANIFEST) if not (folder / name).is_file()]
    if missing:
        raise ValueError(f"{folder}: not an onnx export (no {', '.join(missing)}; maskmatch export --onnx)")
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise ValueError("the onnx runtime needs onnxruntime: pip install 'maskmatch[onnx]'") from None
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{folder / MANIFEST}: unreadable manifest ({e})") from None
    config = model_config(manifest)
    try:
        return OnnxModel(folder, config, threads), manifest
    except Exception as e:  # noqa: BLE001 - onnxruntime's own errors (InvalidProtobuf, Fail, ...): one line
        raise ValueError(f"{folder}: onnxruntime cannot load the graphs ({' '.join(str(e).split())[:200]})") from None
