"""Expression-level metrics: ExpRate and token edit distance at most 1 and 2, on canonical forms.

Prediction and reference both pass through the same LaTeX normalizer (`canonical`), so spelling
differences that carry no meaning (`x^2` and `x^{2}`) are not errors. A string the normalizer
cannot parse keeps its raw whitespace tokens: it is then simply (almost surely) wrong.
"""

from __future__ import annotations

from maskmatch.data.latex import LatexError, normalize_latex


def canonical(latex: str | list[str]) -> list[str]:
    """LaTeX (a string, or tokens) -> canonical tokens; unparsable input -> its whitespace tokens."""
    text = latex if isinstance(latex, str) else " ".join(latex)
    try:
        return normalize_latex(text)
    except LatexError:
        return text.split()


def parses(latex: str) -> bool:
    """Whether the normalizer parses this LaTeX (empty counts as parsed: it is a valid, if wrong, answer)."""
    try:
        normalize_latex(latex)
    except LatexError:
        return False
    return True


def edit_distance(a: list[str], b: list[str]) -> int:
    """Levenshtein distance between token lists (insert, delete, substitute each cost 1)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def expression_scores(predictions: list[str | list[str]], references: list[str | list[str]]) -> dict:
    """{"n", "exprate", "le1", "le2", "raw_exprate"} in percent over paired expressions.

    exprate, le1, le2: share with canonical token edit distance 0, <= 1, <= 2.
    raw_exprate: share whose whitespace-split raw strings are identical, before normalizing.
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    n = len(references)
    if n == 0:
        return {"n": 0, "exprate": 0.0, "le1": 0.0, "le2": 0.0, "raw_exprate": 0.0}
    distances = [edit_distance(canonical(p), canonical(r)) for p, r in zip(predictions, references)]
    raw = sum(_raw(p) == _raw(r) for p, r in zip(predictions, references))
    share = lambda count: round(100.0 * count / n, 2)  # noqa: E731
    return {
        "n": n,
        "exprate": share(sum(d == 0 for d in distances)),
        "le1": share(sum(d <= 1 for d in distances)),
        "le2": share(sum(d <= 2 for d in distances)),
        "raw_exprate": share(raw),
    }


def _raw(latex: str | list[str]) -> list[str]:
    return latex.split() if isinstance(latex, str) else list(latex)
