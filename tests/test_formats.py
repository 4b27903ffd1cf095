"""Output forms: compact LaTeX keeps the meaning of the tokens; MathML converts every real caption."""

from __future__ import annotations

import pytest

from conftest import SHARED
from maskmatch.data.latex import normalize_latex
from maskmatch.formats import compact_latex, formatted, mathml

CAPTIONS = SHARED / "data" / "crohme" / "captions-2016.txt"


@pytest.mark.parametrize("tokens, compact", [
    ("x ^ { 2 } + 1", "x^{2}+1"),
    ("\\alpha x + \\sin \\theta", "\\alpha x+\\sin\\theta"),
    ("\\frac { 1 } { 2 }", "\\frac{1}{2}"),
    ("\\sqrt [ 3 ] { x } \\leq 2", "\\sqrt[3]{x}\\leq 2"),
    ("\\{ a \\}", "\\{a\\}"),
])
def test_compact_latex_hand_worked(tokens, compact):
    assert compact_latex(tokens.split()) == compact
    assert normalize_latex(compact) == tokens.split()  # the same formula


def test_every_2016_caption_converts_to_mathml():
    if not CAPTIONS.is_file():
        pytest.skip(f"captions not found at {CAPTIONS}")
    for line in CAPTIONS.read_text("utf-8").splitlines():
        tokens = normalize_latex(line.split("\t", 1)[1])
        assert mathml(tokens).startswith("<math"), tokens
        assert normalize_latex(formatted(tokens, "latex")) == tokens


def test_unknown_format():
    with pytest.raises(ValueError, match="unknown format"):
        formatted(["x"], "svg")
