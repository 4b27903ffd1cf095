"""The LaTeX token grammar of decoding: it allows every real caption, and whatever it allows parses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import SHARED
from maskmatch.data.latex import normalize_latex
from maskmatch.data.vocab import EOS, Vocabulary
from maskmatch.metrics import parses
from maskmatch.model import HMERModel, LatexGrammar, ModelConfig

CAPTIONS = SHARED / "data" / "crohme" / "captions-2016.txt"
VOCAB = Vocabulary.load()


def accepts(grammar: LatexGrammar, tokens: list[str], max_len: int = 200) -> bool:
    """Whether decoding with the grammar could write these tokens, then EOS, within max_len steps."""
    state = grammar.start()
    for t, i in enumerate([*VOCAB.encode(tokens), EOS]):
        if not grammar.masks([state], max_len - t - 1, torch.device("cpu"))[0, i]:
            return False
        state = grammar.advance(state, i)
    return True


def test_every_2016_caption_is_allowed():
    if not CAPTIONS.is_file():
        pytest.skip(f"captions not found at {CAPTIONS}")
    grammar = LatexGrammar(VOCAB.symbols)
    refused = []
    for line in CAPTIONS.read_text("utf-8").splitlines():
        tokens = normalize_latex(line.split("\t", 1)[1])
        if not VOCAB.oov(tokens) and not accepts(grammar, tokens):
            refused.append(" ".join(tokens))
    assert not refused, refused[:5]


@pytest.mark.parametrize("text", [
    "x ^ { 2 } _ { i }", "x _ { i } ^ { 2 }", "f ^ { \\prime } ( x )", "f \\prime \\prime", "\\prime x",
    "\\sqrt [ 3 ] { x }", "\\sqrt { [ } a ]", "[ 0 , 1 ]", "\\frac { a } { \\sqrt [ n ] { b ] } }", "_ { 2 } x", ""])
def test_allowed_cases_parse(text):
    tokens = text.split()
    assert accepts(LatexGrammar(VOCAB.symbols), tokens) and parses(text)


@pytest.mark.parametrize("text", [
    "x ^ { 2 } ^ { 3 }", "x _ { 1 } _ { 2 }", "x ^ { 2 } \\prime", "x ^ { }", "\\sqrt [ ] { x }", "{ x }",
    "\\frac { a }", "x }", "\\sqrt x", "x ^", "\\sum \\limits _ { i }", "\\sqrt [ 3 } x"])
def test_refused_cases(text):
    assert not accepts(LatexGrammar(VOCAB.symbols), text.split())


def test_nothing_is_allowed_that_cannot_end_in_time():
    grammar = LatexGrammar(VOCAB.symbols)
    assert not accepts(grammar, "\\frac { a } { b }".split(), max_len=7)  # 7 tokens and EOS need 8 steps
    assert accepts(grammar, "\\frac { a } { b }".split(), max_len=8)


def test_random_walks_of_the_grammar_parse():
    """Any path the masks allow ends within max_len and parses: random allowed tokens, weighted to structure."""
    grammar, rng = LatexGrammar(VOCAB.symbols), np.random.default_rng(0)
    weights = np.array([20.0 if s in ("{", "}", "^", "_", "\\frac", "\\sqrt", "[", "]", "\\prime") else 1.0
                        for s in VOCAB.symbols])
    for walk in range(300):
        max_len, state, ids = int(rng.integers(1, 60)), grammar.start(), []
        for t in range(max_len):
            allowed = grammar.masks([state], max_len - t - 1, torch.device("cpu"))[0].numpy()
            p = weights * allowed
            token = int(rng.choice(len(p), p=p / p.sum()))
            if token == EOS:
                break
            ids.append(token)
            state = grammar.advance(state, token)
        else:
            pytest.fail(f"walk {walk} ran past max_len {max_len} without EOS")
        assert parses(" ".join(VOCAB.decode(ids))), VOCAB.decode(ids)


def structure_biased_model(seed: int) -> HMERModel:
    """A random tiny model whose decoder favours braces, scripts, fractions and roots: unconstrained, it writes
    LaTeX that does not parse."""
    torch.manual_seed(seed)
    config = ModelConfig(growth_rate=8, block_layers=2, d_model=32, nhead=2, num_decoder_layers=1,
                         dim_feedforward=64, max_len=40, vocab_size=len(VOCAB))
    model = HMERModel(config).eval()
    structure = VOCAB.encode(["{", "}", "^", "_", "\\frac", "\\sqrt", "[", "]"])
    with torch.no_grad():
        model.decoder.head.bias[structure] += 3.0
    return model


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_constrained_decoding_of_random_models_parses(seed):
    model, grammar = structure_biased_model(seed), LatexGrammar(VOCAB.symbols)
    images = torch.rand(3, 1, 32, 96, generator=torch.Generator().manual_seed(seed))
    mask = torch.zeros(3, 32, 96, dtype=torch.bool)
    free = model.greedy(images, mask) + model.beam_search(images, mask, beam_size=3)
    assert not all(parses(" ".join(VOCAB.decode(h.ids))) for h in free)  # the bare model would write invalid LaTeX
    for h in model.greedy(images, mask, grammar=grammar) + model.beam_search(images, mask, 3, grammar=grammar):
        assert parses(" ".join(VOCAB.decode(h.ids))) and len(h.ids) < model.config.max_len
