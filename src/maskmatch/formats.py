"""Output forms of a recognition: the canonical tokens, compact LaTeX, MathML.

- tokens: the canonical CROHME tokens joined by spaces (`x ^ { 2 } + 1`), what the model writes and the
  metrics compare; it is valid LaTeX as it stands;
- latex: the same without the spaces (`x^{2}+1`), keeping one only where TeX needs it (after a command
  name, before a letter or digit: `\\alpha x`);
- mathml: MathML from the compact LaTeX, by latex2mathml (a pure-Python converter).
"""

from __future__ import annotations

import re

from latex2mathml.converter import convert

FORMATS = ("tokens", "latex", "mathml")
_COMMAND = re.compile(r"\\[A-Za-z]+")


def compact_latex(tokens: list[str]) -> str:
    """Canonical tokens -> LaTeX without spaces but where a command name would run into the next token."""
    out: list[str] = []
    for t in tokens:
        if out and _COMMAND.fullmatch(out[-1]) and t[:1].isalnum():
            out.append(" ")
        out.append(t)
    return "".join(out)


def mathml(tokens: list[str]) -> str:
    """Canonical tokens -> a MathML <math> element (display block)."""
    return convert(compact_latex(tokens), display="block")


def formatted(tokens: list[str], form: str) -> str:
    """The tokens in one of FORMATS."""
    if form == "tokens":
        return " ".join(tokens)
    if form == "latex":
        return compact_latex(tokens)
    if form == "mathml":
        return mathml(tokens)
    raise ValueError(f"unknown format {form!r}; expected one of {', '.join(FORMATS)}")
