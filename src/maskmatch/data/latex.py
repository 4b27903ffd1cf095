"""LaTeX truth -> the canonical CROHME token sequence.

Raw truths (``$\\frac12 x^2_i$``) and already tokenized captions (``\\frac { 1 } { 2 } x _ { i } ^ { 2 }``) both map
to one token list, so two spellings of the same formula compare equal. The canonical form:

* one token per symbol: single characters (``1 2`` for ``12``), ``\\name`` commands, ``{ } ^ _``; ``$`` and
  whitespace carry nothing;
* braces appear only around the arguments of ``\\frac``, ``\\sqrt``, ``^`` and ``_``, and always there:
  ``\\frac { 1 } { 2 }``, ``x ^ { 2 }``, ``\\sqrt [ 3 ] { x }``; grouping braces are dissolved (``{a+b}=c`` ->
  ``a + b = c``, ``{v_1}^2`` -> ``v _ { 1 } ^ { 2 }``);
* a subscript comes before its superscript: ``x _ { i } ^ { 2 }``;
* primes are superscripts: ``f'`` and ``f \\prime`` -> ``f ^ { \\prime }``;
* font and text wrappers (``\\mbox{..}``, ``\\mathrm{..}``...) are unwrapped; sizing (``\\left``, ``\\big``...),
  ``\\limits``, ``\\displaystyle`` and spacing are dropped; aliases become the dictionary's spelling (``\\le`` ->
  ``\\leq``); letters spelling sin, cos, tan, log or lim become ``\\sin`` etc.;
* odd spellings found in the data are read as what they stand for: the 2016 captions' ``\\sqrt { [ } 3 ] { x }``
  and the RIT_2014 truths' ``\\sqrt {x} ABOVE {3}`` are ``\\sqrt [ 3 ] { x }``; the captions'
  ``x ^ { \\frac } { 1 } { 2 }`` is ``x ^ { \\frac { 1 } { 2 } }``;
* anything else, known to the dictionary or not, is kept as it is.

``normalize_latex`` is idempotent. Input that cannot be parsed (unbalanced braces, a missing argument, a double
sub- or superscript such as ``x^2^3`` or ``{x^2}^3``, nesting deeper than ``MAX_DEPTH``) raises ``LatexError``
with a one-line message.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_DEPTH = 100  # nesting of groups and arguments; far beyond any real formula

# Commands that only change layout or size, dropped with no trace. ``\limits`` is in the dictionary, but the 2016
# captions never write it and 229 truths of other years do; kept, it would make ``\sum\limits_i`` and ``\sum_i``
# differ.
_DROP = {"\\limits", "\\nolimits", "\\displaystyle", "\\textstyle", "\\scriptstyle",
         "\\,", "\\;", "\\:", "\\!", "\\ ", "~", "\\quad", "\\qquad", "\\\\"}
# Delimiter sizing: dropped, and the null delimiter ``.`` after one with it.
_SIZING = {"\\left", "\\right"} | {f"\\{size}{side}" for size in ("big", "Big", "bigg", "Bigg")
                                   for side in ("", "l", "r", "m")}
# Wrappers whose argument is plain math once unwrapped.
_UNWRAP = {"\\mbox", "\\hbox", "\\text", "\\textrm", "\\textit", "\\textbf", "\\mathrm", "\\mathit", "\\mathbf",
           "\\mathsf", "\\mathnormal", "\\operatorname"}
_ALIASES = {
    "\\lt": "<", "\\gt": ">", "\\to": "\\rightarrow", "\\lbrack": "[", "\\rbrack": "]", "\\lbrace": "\\{",
    "\\rbrace": "\\}", "\\ge": "\\geq", "\\geqslant": "\\geq", "\\le": "\\leq", "\\leqslant": "\\leq",
    "\\ne": "\\neq", "\\dots": "\\ldots", "\\dotsc": "\\ldots", "\\vert": "|", "\\lvert": "|", "\\rvert": "|",
    "\\mid": "|", "'": "\\prime",
    # unicode spellings of dictionary symbols
    "≤": "\\leq", "≥": "\\geq", "≠": "\\neq", "×": "\\times", "÷": "\\div", "±": "\\pm",
    "→": "\\rightarrow", "∞": "\\infty", "…": "\\ldots", "⋯": "\\cdots", "·": "\\cdot",
    "′": "\\prime", "∑": "\\sum", "∫": "\\int", "√": "\\sqrt", "−": "-",
}
_TAKES_ARGUMENTS = {"\\frac", "\\sqrt"} | _UNWRAP
# Function names the dictionary has as commands, recognized when spelled in letters.
_FUNCTIONS = {"sin", "cos", "tan", "log", "lim"}


class LatexError(ValueError):
    """LaTeX that cannot be parsed; the message is one line naming the problem."""


@dataclass
class Group:  # a braced argument
    items: list


@dataclass
class Frac:
    num: Group
    den: Group


@dataclass
class Sqrt:
    index: Group | None
    body: Group


@dataclass
class Script:  # base with subscript and/or superscript; base None when there is none
    base: object
    sub: Group | None = None
    sup: Group | None = None


def normalize_latex(text: str) -> list[str]:
    """Raw LaTeX truth (or an already tokenized, space-separated caption) -> canonical token list."""
    out: list[str] = []
    _emit(_Parser(_tokenize(text)).parse(), out)
    return out


def tokens_to_latex(tokens: list[str]) -> str:
    """Canonical tokens -> the space-separated caption string."""
    return " ".join(tokens)


def _tokenize(text: str) -> list[str]:
    """Characters -> tokens, with dropped commands removed and aliases resolved."""
    raw: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace() or c == "$":
            i += 1
        elif c == "\\":
            j = i + 1
            while j < n and text[j].isascii() and text[j].isalpha():
                j += 1
            if j == i + 1:  # a control symbol: \{ \, \! ...
                if j == n:
                    raise LatexError("LaTeX ends with a lone backslash")
                j += 1
            raw.append("\\ " if text[i + 1].isspace() else text[i:j])  # "\<newline>" is "\ "
            i = j
        else:
            raw.append(c)
            i += 1
    tokens: list[str] = []
    for k, tok in enumerate(raw):
        if tok in _DROP:
            continue
        if tok == "." and k > 0 and raw[k - 1] in _SIZING:
            continue  # \left. and \right. stand for no delimiter
        if tok in _SIZING:
            continue
        tokens.append(_ALIASES.get(tok, tok))
    return tokens


class _Parser:
    def __init__(self, tokens: list[str]):
        self.tokens = tokens
        self.pos = 0

    def parse(self) -> list:
        items = self._list(0, None)
        if self.pos < len(self.tokens):  # only a stray "}" stops the top level early
            raise LatexError(f"unbalanced braces: unexpected '}}' at token {self.pos + 1}")
        return items

    def _next(self) -> str | None:
        if self.pos >= len(self.tokens):
            return None
        self.pos += 1
        return self.tokens[self.pos - 1]

    def _peek(self, n: int) -> list[str]:
        return self.tokens[self.pos : self.pos + n]

    def _caption_sqrt_index(self) -> bool:
        """Whether "{ [ } 3 ] {" follows: the 2016 captions spell \\sqrt[3]{x} "\\sqrt { [ } 3 ] { x }"."""
        if self._peek(3) != ["{", "[", "}"]:
            return False
        for i in range(self.pos + 3, len(self.tokens) - 1):
            if self.tokens[i] in ("{", "}", "["):
                return False
            if self.tokens[i] == "]":
                return self.tokens[i + 1] == "{"
        return False

    def _list(self, depth: int, close: str | None) -> list:
        """Items up to and including ``close`` (None: up to the end or a stray '}')."""
        _check_depth(depth)
        items: list = []
        while True:
            tok = self._next()
            if tok is None:
                if close is None:
                    return items
                what = "braces" if close == "}" else "brackets"
                raise LatexError(f"unbalanced {what}: missing {close!r}")
            if tok == close:
                return items
            if tok == "}":
                if close is None:
                    self.pos -= 1
                    return items
                raise LatexError(f"unbalanced brackets: '}}' before {close!r}")
            if tok == "{":  # grouping braces carry no structure: splice the contents
                for node in self._list(depth + 1, "}"):
                    _add(items, node)
            elif tok in ("^", "_"):
                _attach(items, tok, self._argument(tok, depth))
            else:
                for node in self._command(tok, depth):
                    _add(items, node)

    def _command(self, tok: str, depth: int) -> list:
        """The nodes one token and the arguments it takes stand for."""
        if tok == "\\frac":
            return [Frac(self._argument(tok, depth), self._argument(tok, depth))]
        if tok == "\\sqrt":
            index = None
            if self._peek(1) == ["["] or self._caption_sqrt_index():
                self.pos += 1 if self._peek(1) == ["["] else 3
                index = Group(self._list(depth + 1, "]"))
                if "]" in index.items:
                    raise LatexError("']' inside the index of \\sqrt")
            body = self._argument(tok, depth)
            if index is None and self._peek(6) == [*"ABOVE", "{"]:
                # RIT_2014 truths write \sqrt[q]{x} as "\sqrt {x} ABOVE {q}" (an mroot)
                self.pos += 6
                index = Group(self._list(depth + 1, "}"))
            return [Sqrt(index, body)]
        if tok in _UNWRAP:
            return self._argument(tok, depth).items
        return [tok]

    def _argument(self, command: str, depth: int) -> Group:
        """The argument of ``command``: a braced group or the next single token."""
        _check_depth(depth)
        tok = self._next()
        if tok is None or tok in ("}", "^", "_"):
            raise LatexError(f"missing argument for {command}")
        if tok == "{":
            ahead = self._peek(2)
            if command in ("^", "_") and ahead[1:] == ["}"] and ahead[0] in _TAKES_ARGUMENTS:
                # the 2016 captions spell x^\frac{1}{2} "x ^ { \frac } { 1 } { 2 }"
                self.pos += 2
                return Group(self._command(ahead[0], depth + 1))
            return Group(self._list(depth + 1, "}"))
        items: list = []
        for node in self._command(tok, depth + 1):
            _add(items, node)
        return Group(items)


def _check_depth(depth: int) -> None:
    if depth > MAX_DEPTH:
        raise LatexError(f"LaTeX nested deeper than {MAX_DEPTH} levels")


def _add(items: list, node) -> None:
    """Appends ``node`` as its tokens would be: a prime after an item becomes its superscript,
    letters completing sin, cos, tan, log or lim become the command, and the scripts of a
    node spliced out of braces attach as if written here (``{x}{^2}`` is ``x^2``)."""
    if isinstance(node, Script):
        if node.base is not None:
            _add(items, node.base)
        for mark, group in (("_", node.sub), ("^", node.sup)):
            if group is not None:
                _attach(items, mark, group)
        return
    if node == "\\prime" and items and items[-1] != "\\prime":
        _attach(items, "^", Group(["\\prime"]))
        return
    letters = [*items[-2:], node]
    if all(isinstance(x, str) and len(x) == 1 for x in letters) and "".join(letters) in _FUNCTIONS:
        items[-2:] = ["\\" + "".join(letters)]
    else:
        items.append(node)


def _attach(items: list, kind: str, arg: Group) -> None:
    """Hangs a sub- or superscript on the last item (on nothing at the start of a list)."""
    slot = "sub" if kind == "_" else "sup"
    last = items[-1] if items else None
    if isinstance(last, Script):
        taken = getattr(last, slot)
        if taken is None:
            setattr(last, slot, arg)
        elif slot == "sup" and all(x == "\\prime" for x in taken.items):
            taken.items.extend(arg.items)  # f'' and f'^2 are f^{\prime\prime} and f^{\prime 2}, as in TeX
        else:
            raise LatexError(f"double {'subscript' if slot == 'sub' else 'superscript'}")
    else:
        base = items.pop() if items else None
        items.append(Script(base, **{slot: arg}))


def _emit(items: list, out: list[str]) -> None:
    for node in items:
        if isinstance(node, str):
            out.append(node)
        elif isinstance(node, Frac):
            out.append("\\frac")
            _emit_group(node.num, out)
            _emit_group(node.den, out)
        elif isinstance(node, Sqrt):
            out.append("\\sqrt")
            if node.index is not None:
                out.append("[")
                _emit(node.index.items, out)
                out.append("]")
            _emit_group(node.body, out)
        else:  # Script
            if node.base is not None:
                _emit([node.base], out)
            for mark, group in (("_", node.sub), ("^", node.sup)):
                if group is not None:
                    out.append(mark)
                    _emit_group(group, out)


def _emit_group(group: Group, out: list[str]) -> None:
    out.append("{")
    _emit(group.items, out)
    out.append("}")
