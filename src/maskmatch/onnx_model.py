"""The recognizer run by onnxruntime (`--runtime onnx`): the graphs `maskmatch export --onnx` writes, behind
the interface of `HMERModel`, so that `Recognizer`, the searches of model/search.py and the benchmark use
them unchanged.

An export folder holds `encoder.onnx`, `decoder.onnx` and `model.json` (the weights' manifest). The encoder
graph maps images (B, 1, H, W) and their padding mask (B, H, W) to the decoder's memory: each layer's
cross-attention keys and values (B, layers, 2, heads, S, head_dim), and where it may be attended (B, S).
The decoder graph maps a whole token prefix (N, T) and the memory of each row to the logits of every
position (N, T, V): it keeps no state, so `OnnxCache` holds the token history, and each step decodes the
prefix again (a sequence of CROHME's length costs a few times more than torch's cached keys and values;
`maskmatch benchmark --model FOLDER` measures it).
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

ENCODER, DECODER, MANIFEST = "encoder.onnx", "decoder.onnx", "model.json"


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


class DecoderGraph(nn.Module):
    """tokens (N, T) from the start token, memory (N, layers, 2, heads, S, head_dim), attend (N, S) -> logits (N, T, V)."""

    def __init__(self, decoder):
        super().__init__()
        self.decoder = decoder

    def forward(self, tokens: torch.Tensor, memory: torch.Tensor, attend: torch.Tensor) -> torch.Tensor:
        kv = [(memory[:, i, 0], memory[:, i, 1]) for i in range(memory.shape[1])]
        cache = DecoderCache(kv, attend[:, None, None, :], [None] * len(kv))
        return self.decoder.decode(tokens, cache)


def is_export(path: str | Path | None) -> bool:
    """True for a folder that `maskmatch export --onnx` wrote."""
    return path is not None and (Path(path) / ENCODER).is_file()


class OnnxCache:
    """`DecoderCache`'s interface over a token history: rows n*group .. n*group + group-1 read memory entry n."""

    def __init__(self, memory: torch.Tensor, attend: torch.Tensor, history: torch.Tensor, group: int = 1):
        self.memory, self.attend = memory, attend  # (E, layers, 2, heads, S, head_dim), (E, S) bool
        self.history, self.group = history, group  # (N, t) tokens taken in so far, N = E * group

    @property
    def length(self) -> int:
        return self.history.shape[1]

    @property
    def device(self) -> torch.device:
        return self.history.device

    def reorder(self, rows: torch.Tensor, group: int | None = None) -> None:
        self.history, self.group = self.history[rows], group or self.group

    def repeat_interleave(self, k: int) -> "OnnxCache":
        return OnnxCache(self.memory, self.attend, self.history.repeat_interleave(k, dim=0), self.group * k)

    def select(self, entries: torch.Tensor) -> "OnnxCache":
        rows = (entries[:, None] * self.group + torch.arange(self.group)).flatten()
        return OnnxCache(self.memory[entries], self.attend[entries], self.history[rows], self.group)

    def for_entries(self, owners: list[int]) -> "OnnxCache":
        entries, group = entry_runs(owners)
        index = torch.tensor(entries, dtype=torch.long)
        return OnnxCache(self.memory[index], self.attend[index], torch.empty((len(owners), 0), dtype=torch.long),
                         group)


class OnnxDecoder:
    """`Decoder`'s decoding interface (init_cache, decode, step) over the decoder graph."""

    def __init__(self, session):
        self.session = session

    def init_cache(self, memory: torch.Tensor, attend: torch.Tensor) -> OnnxCache:
        return OnnxCache(memory, attend, torch.empty((len(memory), 0), dtype=torch.long))

    def decode(self, tokens: torch.Tensor, cache: OnnxCache, capture: list | None = None) -> torch.Tensor:
        """tokens (N, T) following the cache's -> logits (N, T, V); the cache takes them in."""
        if capture is not None:
            raise ValueError("attention maps need the torch runtime (--runtime torch)")
        history = torch.cat((cache.history, tokens), 1)  # (N, t+T)
        memory, attend = cache.memory, cache.attend
        if cache.group > 1:
            memory, attend = memory.repeat_interleave(cache.group, 0), attend.repeat_interleave(cache.group, 0)
        (logits,) = self.session.run(None, {"tokens": history.numpy(), "memory": memory.numpy(),
                                            "attend": attend.numpy()})  # (N, t+T, V)
        cache.history = history
        return torch.from_numpy(logits[:, -tokens.shape[1]:])

    def step(self, tokens: torch.Tensor, cache: OnnxCache) -> torch.Tensor:
        return self.decode(tokens[:, None], cache)[:, 0]


class OnnxModel:
    """`HMERModel`'s inference interface (config, encode, greedy, beam_search) over an export folder; CPU only."""

    def __init__(self, folder: str | Path, config: ModelConfig, threads: int | None = None):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        folder = Path(folder)
        session = lambda name: onnxruntime.InferenceSession(str(folder / name), options,  # noqa: E731
                                                             providers=["CPUExecutionProvider"])
        self.config, self.encoder, self.decoder = config, session(ENCODER), OnnxDecoder(session(DECODER))
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
    missing = [name for name in (ENCODER, DECODER, MANIFEST) if not (folder / name).is_file()]
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
    return OnnxModel(folder, model_config(manifest), threads), manifest
