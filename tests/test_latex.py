"""The LaTeX normalizer: its rules, idempotence, hostile input, and agreement with the 2016 captions."""

import re
import tarfile
import time
from pathlib import Path

import pytest

from maskmatch.data.latex import LatexError, normalize_latex, tokens_to_latex

SHARED = Path(__file__).resolve().parents[2] / "shared"
ARCHIVE = SHARED / "data" / "crohme" / "crohme-inkml.tar.gz"
CAPTIONS = SHARED / "data" / "crohme" / "captions-2016.txt"

CASES = [
    # the example; $ and whitespace
    (r"$x^2=\sum_{a=1}^3x_a^2$", r"x ^ { 2 } = \sum _ { a = 1 } ^ { 3 } x _ { a } ^ { 2 }"),
    (r"  $ a  +b $ ", "a + b"),
    # numbers split into digits
    ("12", "1 2"),
    ("3.14", "3 . 1 4"),
    # grouping braces dissolved, argument braces kept once
    ("{a+b}=c", "a + b = c"),
    (r"\frac{{x}}{{{y}}}", r"\frac { x } { y }"),
    ("x^{{2}}", "x ^ { 2 }"),
    (r"{v_1}^2", "v _ { 1 } ^ { 2 }"),
    ("{}^{2}x", "^ { 2 } x"),
    # arguments always braced
    (r"\frac12", r"\frac { 1 } { 2 }"),
    (r"\frac 1 {\sqrt 2}", r"\frac { 1 } { \sqrt { 2 } }"),
    ("x^2", "x ^ { 2 }"),
    ("x^23", "x ^ { 2 } 3"),
    (r"e^\phi", r"e ^ { \phi }"),
    (r"(a+b)^\frac{1}{4}", r"( a + b ) ^ { \frac { 1 } { 4 } }"),
    (r"\sqrt[3]x", r"\sqrt [ 3 ] { x }"),
    (r"\sqrt{x}", r"\sqrt { x }"),
    # caption and RIT_2014 spellings of the same structures
    (r"\sqrt { [ } 4 ] { - g }", r"\sqrt [ 4 ] { - g }"),
    (r"2 ^ { \frac } { p } { p + 1 }", r"2 ^ { \frac { p } { p + 1 } }"),
    (r"\sqrt {648 + 648} ABOVE {4}", r"\sqrt [ 4 ] { 6 4 8 + 6 4 8 }"),
    # subscript before superscript
    ("x^2_i", "x _ { i } ^ { 2 }"),
    (r"\sum^{n}_{i=1} i", r"\sum _ { i = 1 } ^ { n } i"),
    (r"\int^b_a f", r"\int _ { a } ^ { b } f"),
    (r"\lim_{x\to0}", r"\lim _ { x \rightarrow 0 }"),
    # wrappers unwrapped
    (r"\mbox{S}^3", "S ^ { 3 }"),
    (r"I_\mathrm{S}", "I _ { S }"),
    (r"\text{ab} + \mathit{c} + \operatorname{d}", "a b + c + d"),
    (r"\mathrm{R^0_0}", "R _ { 0 } ^ { 0 }"),
    # layout dropped
    (r"\left( x \right)", "( x )"),
    (r"\left\{ x \right.", r"\{ x"),
    (r"\Bigg( a \Bigg) \big[ b \bigr] \Bigl| c \biggr|", "( a ) [ b ] | c |"),
    (r"\sum\limits_{i=1}^{n} i", r"\sum _ { i = 1 } ^ { n } i"),
    (r"\displaystyle a\,b\;c\:d\!e\ f~g\quad h\qquad i", "a b c d e f g h i"),
    # aliases
    (r"a \lt b \gt c", "a < b > c"),
    (r"x \to y", r"x \rightarrow y"),
    (r"\lbrack a \rbrack \lbrace b \rbrace", r"[ a ] \{ b \}"),
    (r"a \ge b \le c \ne d", r"a \geq b \leq c \neq d"),
    (r"1, \dots, n", r"1 , \ldots , n"),
    ("a ≤ b × c", r"a \leq b \times c"),
    # primes are superscripts, as the 2016 captions write them
    ("f'(x)", r"f ^ { \prime } ( x )"),
    ("f^{'}", r"f ^ { \prime }"),
    (r"y \prime", r"y ^ { \prime }"),
    (r"x^\prime", r"x ^ { \prime }"),
    ("f''", r"f ^ { \prime \prime }"),
    ("f'^2", r"f ^ { \prime 2 }"),
    ("x_1'", r"x _ { 1 } ^ { \prime }"),
    # function names written in letters
    ("sin x", r"\sin x"),
    (r"\mbox{cos}^2\theta", r"\cos ^ { 2 } \theta"),
    ("l o g ( x )", r"\log ( x )"),
    ("logx + tan y", r"\log x + \tan y"),
    (r"\mbox{lim}_{n}", r"\lim _ { n }"),
    (r"\mbox { erf }", "e r f"),
    # out-of-vocabulary tokens are kept
    (r"x \parallel y", r"x \parallel y"),
    (r"\hat{a}", r"\hat a"),
    # already canonical captions are fixed points
    (r"\frac { 1 } { 2 } x _ { i } ^ { 2 }", r"\frac { 1 } { 2 } x _ { i } ^ { 2 }"),
    (r"\sqrt [ 3 ] { x }", r"\sqrt [ 3 ] { x }"),
    ("", ""),
]


@pytest.mark.parametrize("raw,expected", CASES)
def test_normalize(raw, expected):
    assert tokens_to_latex(normalize_latex(raw)) == expected


@pytest.mark.parametrize("raw", [raw for raw, _ in CASES])
def test_idempotent(raw):
    once = normalize_latex(raw)
    assert normalize_latex(tokens_to_latex(once)) == once


@pytest.mark.parametrize(
    "raw,problem",
    [
        ("{a+b", "missing '}'"),
        ("a+b}", "unexpected '}'"),
        (r"\lim _ {z \rightarrow 1}} f", "unexpected '}'"),  # RIT_2014_191 has this
        (r"\sqrt[3{x}", "missing ']'"),
        (r"\frac{a}", r"missing argument for \frac"),
        ("x^", "missing argument for ^"),
        ("x^2^3", "double superscript"),
        ("x_1_2", "double subscript"),
        ("a\\", "lone backslash"),
    ],
)
def test_errors(raw, problem):
    with pytest.raises(LatexError, match=re.escape(problem)) as info:
        normalize_latex(raw)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "raw",
    ["{" * 10_000 + "x" + "}" * 10_000, r"\sqrt" * 10_000 + "x", "x^" * 10_000 + "2", "{" * 10_000, "}" * 10_000],
)
def test_hostile_input_is_quick(raw):
    start = time.perf_counter()
    with pytest.raises(LatexError):
        normalize_latex(raw)
    assert time.perf_counter() - start < 1.0


def test_long_flat_input():
    tokens = normalize_latex("x^1+" * 20_000 + "1")
    assert len(tokens) == 20_000 * 6 + 1


def _truths_2016() -> dict[str, str | None]:
    from maskmatch.data.inkml import read_inkml

    truths = {}
    with tarfile.open(ARCHIVE) as archive:
        for member in archive:
            if member.isfile() and member.name.startswith("crohme/2016/") and member.name.endswith(".inkml"):
                truths[Path(member.name).stem] = read_inkml(archive.extractfile(member).read()).truth
    return truths


def _canonical(text: str | None) -> str:
    try:
        return tokens_to_latex(normalize_latex(text or ""))
    except LatexError as e:
        return f"<LatexError: {e}>"


@pytest.mark.skipif(not ARCHIVE.exists() or not CAPTIONS.exists(), reason=f"CROHME data not found under {SHARED}")
def test_2016_captions_agree_with_inkml_truth():
    captions = dict(line.rstrip("\n").split("\t", 1) for line in CAPTIONS.read_text("utf-8").splitlines())
    truths = _truths_2016()
    assert set(truths) == set(captions)
    disagreements = []
    for name in sorted(captions):
        caption, truth = _canonical(captions[name]), _canonical(truths[name])
        if caption != truth:
            disagreements.append(name)
            print(f"{name}\n  caption: {caption}\n  truth:   {truth}")
    agreement = 1 - len(disagreements) / len(captions)
    print(f"2016 agreement: {len(captions) - len(disagreements)}/{len(captions)} = {agreement:.2%}")
    assert agreement >= 0.995
