"""The token grammar of canonical CROHME LaTeX, as a mask on decoding: every output parses.

`normalize_latex` (data/latex.py) rejects unbalanced braces, missing arguments and double scripts; a
decoder left alone writes all three (56 of 983 CROHME 2014 outputs of an early model). Decoding with a
`LatexGrammar` allows at each step only the tokens after which the output can still end validly within
max_len steps, so beam search and greedy decoding can only write sequences the normalizer parses.

The grammar is the canonical form's (data/latex.py), slightly wider where the normalizer is:
- braces only as arguments: `^ {..}`, `_ {..}`, `\\frac {..} {..}`, `\\sqrt {..}`, `\\sqrt [..] {..}`; never
  empty, never bare (grouping braces are not canonical);
- `[` after `\\sqrt` opens its index, which the next `]` closes; elsewhere both are plain symbols;
- an item takes at most one subscript and one superscript (either order); `\\prime` after an item is its
  superscript (so `x ^ { 2 } \\prime` is a double superscript, `x \\prime \\prime` is not);
- `\\limits`, which normalization drops, is never written; nesting is at most MAX_FRAMES deep.

State: a stack of frames, as tuples (hashable, so transitions and masks are memoized):
- ("list", kind, after, nonempty, last): a list of items; kind "top", "group" (closed by `}`) or "index"
  (closed by `]`); `after` says what the closed group was ("sub", "sup", "num", "den", "body"); `last`
  describes the list's last item: "none", "prime" (a plain `\\prime`), "item", or ("script", sub, sup)
  with sub a bool and sup 0 (none), 1 (primes only) or 2 (other);
- ("expect", what): the next token must open an argument: `{`, or for what == "sqrt" also `[`.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from maskmatch.data.vocab import EOS, PAD, SOS

MAX_MASKS = 1 << 14  # distinct (state, steps left) masks kept; real decoding meets a few hundred
MAX_FRAMES = 24  # open frames at once; normalize_latex allows MAX_DEPTH = 100 levels, real formulas use < 10

SYM, PRIME, SUB, SUP, FRAC, SQRT, LBRACE, RBRACE, LBRACK, RBRACK, END, NEVER = range(12)
_CLASS_OF = {"\\prime": PRIME, "_": SUB, "^": SUP, "\\frac": FRAC, "\\sqrt": SQRT, "{": LBRACE, "}": RBRACE,
             "[": LBRACK, "]": RBRACK, "\\limits": NEVER}
_START = (("list", "top", None, False, "none"),)
_DEAD = ("dead",)  # a beam extended by a disallowed token (its score is -inf): it may only end
_ARGUMENT_COST = 3  # "{ x }": the fewest tokens that fill an argument


def _token_class(token: str, index: int) -> int:
    if index == EOS:
        return END
    if index in (PAD, SOS):
        return NEVER
    return _CLASS_OF.get(token, SYM)


@lru_cache(maxsize=1 << 16)
def step(stack: tuple, c: int) -> tuple | None:
    """The state after a token of class c, () when the output is complete, None when c is not allowed."""
    top = stack[-1]
    if top[0] == "expect":
        if c == LBRACE:
            return stack[:-1] + (("list", "group", "body" if top[1] == "sqrt" else top[1], False, "none"),)
        if c == LBRACK and top[1] == "sqrt":
            return stack[:-1] + (("list", "index", "body", False, "none"),)
        return None
    _, kind, after, nonempty, last = top
    if c == END:
        return () if kind == "top" else None
    if c == RBRACE:
        return _close(stack[:-1], after) if kind == "group" and nonempty else None
    if c == RBRACK and kind == "index":
        return stack[:-1] + (("expect", "body"),) if nonempty else None
    if c in (SYM, LBRACK, RBRACK):
        return stack[:-1] + (("list", kind, after, True, "item"),)
    if c == PRIME:
        new = _prime(last)
        return None if new is None else stack[:-1] + (("list", kind, after, True, new),)
    if len(stack) >= MAX_FRAMES:
        return None
    script = last if isinstance(last, tuple) else None
    if c == SUB:
        return None if script and script[1] else stack + (("expect", "sub"),)
    if c == SUP:
        return None if script and script[2] == 2 else stack + (("expect", "sup"),)
    if c in (FRAC, SQRT):
        return stack[:-1] + (("list", kind, after, True, "item"), ("expect", "num" if c == FRAC else "sqrt"))
    return None  # a bare "{", or a token never written


def _prime(last) -> object | None:
    """The list's last item after a `\\prime`: plain at the start or after a plain prime, else a superscript."""
    if last in ("none", "prime"):
        return "prime"
    if last == "item":
        return ("script", False, 1)
    _, sub, sup = last
    return None if sup == 2 else ("script", sub, 1)


def _close(stack: tuple, after: str) -> tuple:
    """The state when a group that was `after` closes: the list below it takes its item or script."""
    if after == "num":
        return stack + (("expect", "den"),)
    if after in ("den", "body"):
        return stack  # the \\frac or \\sqrt was recorded as an item when it opened
    _, kind, parent_after, _, last = stack[-1]
    sub, sup = (last[1], last[2]) if isinstance(last, tuple) else (False, 0)
    last = ("script", True, sup) if after == "sub" else ("script", sub, 2)
    return stack[:-1] + (("list", kind, parent_after, True, last),)


@lru_cache(maxsize=1 << 16)
def cost(stack: tuple) -> int:
    """The fewest tokens, end of sequence included, that complete the output from this state."""
    total = 0
    for frame in stack:
        if frame[0] == "expect":
            total += _ARGUMENT_COST + (_ARGUMENT_COST if frame[1] == "num" else 0)
        elif frame[1] == "top":
            total += 1
        else:
            total += (0 if frame[3] else 1) + 1
            total += _ARGUMENT_COST if frame[1] == "index" or frame[2] == "num" else 0
    return total


class LatexGrammar:
    """The grammar over a vocabulary (its symbols in id order, specials first): masks of allowed ids."""

    def __init__(self, symbols: tuple[str, ...]):
        classes = [_token_class(s, i) for i, s in enumerate(symbols)]
        if "{" not in symbols or "}" not in symbols:  # no argument can be written: structure is never allowed
            classes = [NEVER if c in (SUB, SUP, FRAC, SQRT, LBRACE, RBRACE) else c for c in classes]
        self.classes = classes
        self.size = len(symbols)
        self._masks: dict[tuple, int] = {}
        self._rows: list[torch.Tensor] = []
        self._table: torch.Tensor | None = None

    def start(self) -> tuple:
        return _START

    def advance(self, state: tuple, token: int) -> tuple:
        """The state after token id `token` (a disallowed one leads to a dead state)."""
        if state in ((), _DEAD):
            return _DEAD
        return step(state, self.classes[token]) or _DEAD

    def masks(self, states: list[tuple], steps_left: int, device: torch.device) -> torch.Tensor:
        """(len(states), V) bool: the ids allowed next, where `steps_left` more tokens may follow this one."""
        if len(self._rows) + len(states) > MAX_MASKS:  # a long-lived server: start the table afresh
            self._masks, self._rows, self._table = {}, [], None
        ids = [self._mask_id(s, steps_left) for s in states]
        if self._table is None or self._table.shape[0] < len(self._rows) or self._table.device != device:
            self._table = torch.stack(self._rows).to(device)
        return self._table[torch.tensor(ids, device=device)]

    def _mask_id(self, state: tuple, steps_left: int) -> int:
        horizon = 2 * _ARGUMENT_COST + 2  # a token adds at most this much to the cost: beyond it, steps do not matter
        key = (state, min(steps_left, cost(state) + horizon) if state not in ((), _DEAD) else 0)
        found = self._masks.get(key)
        if found is None:
            found = self._masks[key] = len(self._rows)
            self._rows.append(self._allowed(*key))
        return found

    def _allowed(self, state: tuple, steps_left: int) -> torch.Tensor:
        if state in ((), _DEAD):
            allowed = [c == END for c in range(NEVER + 1)]
        else:
            nexts = [step(state, c) for c in range(NEVER + 1)]
            allowed = [c != NEVER and n is not None and cost(n) <= steps_left for c, n in enumerate(nexts)]
        return torch.tensor([allowed[c] for c in self.classes], dtype=torch.bool)
