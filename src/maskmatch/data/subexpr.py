"""Sub-expressions of a training expression (issue 12): crops at its top-level operators, their LaTeX cut from
the same canonical tokens, kept only where the cut is unambiguous.

The rule, on the canonical tokens and the InkML symbol segmentation (`Ink.symbols`, CROHME's traceGroups):

1. A *binary operator* is a token of OPERATORS outside every brace and bracket (`{ } ( ) [ ] \\{ \\}`) that
   follows a token ending a term (not the first token, not after another operator, `^`, `_` or an opening)
   and is not the last token. The operators split the top level into terms: T0 op1 T1 op2 ... opm Tm. An
   expression whose brackets do not pair up (`[ 0 , 1 )`), or with a `|` (opening or closing?), has none.
2. With m >= 2, window k (1..m) is T(k-1) opk Tk: `a + b = c` gives `a + b` and `b = c`. (With one operator
   the window is the whole expression: nothing new.)
3. The operators are found in the ink by label (`\\lt`, `\\gt` read as `<`, `>`): every label used by a binary
   operator must occur in the tokens only as binary operators (for `-`, fraction bars count too: CROHME
   labels them `-`) and label exactly as many symbols. The symbols of one label, left to right, are then
   that label's operators in token order, and all operators, left to right, must follow token order.
   Otherwise the expression gives no windows.
4. Window k keeps the strokes lying wholly between the right edge of op(k-1) and the left edge of op(k+1)
   (open ends at the expression's ends). A window is dropped if a stroke crosses one of those two edges, if a
   symbol lies partly inside, if a stroke inside belongs to no symbol, or if the symbols inside are not as
   many as its tokens that draw one (all but `{ } ^ _ \\limits` and the brackets of `\\sqrt [ n ]`;
   `\\frac` draws its bar).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from maskmatch.data.inkml import Ink

OPERATORS = frozenset({"+", "-", "=", "<", ">", "\\leq", "\\geq", "\\neq", "\\times", "\\div", "\\pm",
                       "\\rightarrow"})
ALIASES = {"\\lt": "<", "\\gt": ">"}  # CROHME's symbol labels for the tokens
SILENT = frozenset({"{", "}", "^", "_", "\\limits"})  # tokens that no symbol of their own draws
PAIRS = {"}": "{", ")": "(", "]": "[", "\\}": "\\{"}  # closing -> opening
NO_TERM_END = OPERATORS | set(PAIRS.values()) | {"^", "_"}


@dataclass(frozen=True)
class Subexpression:
    tokens: tuple[str, ...]  # canonical tokens, a slice of the expression's
    strokes: tuple[int, ...]  # indices into Ink.strokes, sorted


def binary_operators(tokens: list[str]) -> list[int]:
    """Positions of the top-level binary operators (rule 1)."""
    opened, found = [], []
    if "|" in tokens:
        return []
    for i, token in enumerate(tokens):
        if token in PAIRS.values():
            opened.append(token)
        elif token in PAIRS:
            if not opened or opened.pop() != PAIRS[token]:
                return []
        elif not opened and token in OPERATORS and 0 < i < len(tokens) - 1 and tokens[i - 1] not in NO_TERM_END:
            found.append(i)
    return [] if opened else found


def drawn(tokens: list[str]) -> int:
    """How many symbols draw these tokens: all but SILENT ones and the brackets of a root's index (`\\sqrt [ 3 ]`)."""
    count, index_open = 0, []
    for i, token in enumerate(tokens):
        if token == "[" and i > 0 and tokens[i - 1] == "\\sqrt":
            index_open.append(True)
        elif token == "[":
            index_open.append(False)
            count += 1
        elif token == "]":
            count += not (index_open.pop() if index_open else False)
        else:
            count += token not in SILENT
    return count


def subexpressions(tokens: list[str], ink: Ink) -> list[Subexpression]:
    """The unambiguous windows of rule 2 with their strokes (rules 3 and 4); [] when there are none."""
    ops = binary_operators(tokens)
    if len(ops) < 2 or not ink.symbols:
        return []
    labels = [ALIASES.get(s.label, s.label) for s in ink.symbols]
    extent = [(float(s[:, 0].min()), float(s[:, 0].max())) for s in ink.strokes]
    left = lambda g: min(extent[i][0] for i in ink.symbols[g].strokes)  # noqa: E731
    right = lambda g: max(extent[i][1] for i in ink.symbols[g].strokes)  # noqa: E731
    group_of_op: dict[int, int] = {}
    for label in {tokens[i] for i in ops}:
        positions = [i for i in ops if tokens[i] == label]
        uses = tokens.count(label) + (tokens.count("\\frac") if label == "-" else 0)
        groups = sorted((g for g, lab in enumerate(labels) if lab == label), key=left)
        if uses != len(positions) or len(groups) != len(positions):
            return []
        group_of_op.update(zip(positions, groups))
    order = [group_of_op[i] for i in ops]
    if sorted(order, key=left) != order:
        return []
    owner = {s: g for g, symbol in enumerate(ink.symbols) for s in symbol.strokes}
    out = []
    for k in range(len(ops)):
        start = ops[k - 1] + 1 if k > 0 else 0
        stop = ops[k + 1] if k + 1 < len(ops) else len(tokens)
        lo = right(order[k - 1]) if k > 0 else -np.inf
        hi = left(order[k + 1]) if k + 1 < len(ops) else np.inf
        window = _window(tokens[start:stop], extent, owner, ink, lo, hi)
        if window is not None:
            out.append(window)
    return out


def _window(tokens: list[str], extent: list[tuple[float, float]], owner: dict[int, int], ink: Ink,
            lo: float, hi: float) -> Subexpression | None:
    """Rule 4 for the strokes between x = lo and x = hi; None if the cut there is ambiguous."""
    inside = []
    for s, (a, b) in enumerate(extent):
        if a < lo < b or a < hi < b:
            return None  # a stroke crosses the cut
        if lo < a and b < hi:
            inside.append(s)
    groups = {owner.get(s) for s in inside}
    if None in groups or any(not set(ink.symbols[g].strokes) <= set(inside) for g in groups):
        return None
    if len(groups) != drawn(tokens):
        return None
    return Subexpression(tuple(tokens), tuple(inside))
