"""What a text costs to speak: its spoken form (numbers, symbols expanded) measured as an engine feels it.

Characters are a poor measure of speech: ``9999999999`` is ten characters and about a
hundred spoken ("nine billion nine hundred ninety nine million ..."), and a Chinese
character read by an English front end becomes "chinese letter". Segments are cut and
requests admitted by this cost, never by ``len``. It is an estimate made without an
engine (pure, cheap); an adapter that can measure better (Piper: phonemes) overrides
``BackendAdapter.spoken_cost``.
"""

from __future__ import annotations

import re

# letters of a script that the language does not use are spelled out one by one by most
# engines' front ends (Piper reads a Chinese character in English as "chinese letter"):
# each counts as this many characters against the limit
FOREIGN_SCRIPT_WEIGHT = 25
CJK_WEIGHT = 3  # a Han, kana or Hangul character carries about a syllable
CHARS_PER_SECOND = 15.0  # spoken-form characters in one second of ordinary speech
_SCRIPTS: tuple[tuple[re.Pattern[str], frozenset[str], int], ...] = (
    (
        re.compile(r"[\u1100-\u11ff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]"),
        frozenset({"zh", "ja", "ko"}),
        CJK_WEIGHT,
    ),
    (re.compile(r"[\u0600-\u06ff\u0750-\u077f]"), frozenset({"ar", "fa", "ur", "ps"}), 1),
    (re.compile(r"[\u0400-\u04ff]"), frozenset({"ru", "uk", "bg", "sr", "be", "kk", "mk", "mn"}), 1),
    (re.compile(r"[\u0590-\u05ff]"), frozenset({"he", "yi"}), 1),
    (re.compile(r"[\u0370-\u03ff]"), frozenset({"el"}), 1),
)

_ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen".split()
_ONES += ["seventeen", "eighteen", "nineteen"]
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ("", " thousand", " million", " billion", " trillion")
# a digit run longer than this is read digit by digit (front ends give up on number names)
MAX_NUMBER_DIGITS = 15
_SYMBOLS = {
    "%": "percent",
    "&": "and",
    "+": "plus",
    "=": "equals",
    "@": "at",
    "#": "number",
    "$": "dollars",
    "€": "euros",
    "£": "pounds",
    "¥": "yen",
    "°": "degrees",
    "§": "section",
    "©": "copyright",
    "®": "registered",
    "™": "trademark",
    "×": "times",  # noqa: RUF001 (the multiplication sign)
    "÷": "divided by",
    "±": "plus or minus",
    "<": "less than",
    ">": "greater than",
    "~": "tilde",
    "^": "caret",
    "|": "bar",
    "*": "star",
    "/": "slash",
    "\\": "backslash",
}
_TOKEN = re.compile(r"\d+(?:[.,]\d+)?|[" + re.escape("".join(_SYMBOLS)) + "]")


def _below_thousand(n: int) -> str:
    hundreds, rest = divmod(n, 100)
    words = [f"{_ONES[hundreds]} hundred"] if hundreds else []
    if rest >= 20:
        words.append(_TENS[rest // 10] + (f" {_ONES[rest % 10]}" if rest % 10 else ""))
    elif rest or not hundreds:
        words.append(_ONES[rest])
    return " ".join(words)


def number_words(digits: str) -> str:
    """A digit run as it is spoken: a number name up to MAX_NUMBER_DIGITS digits, else digit by digit."""
    if len(digits) > MAX_NUMBER_DIGITS or (len(digits) > 1 and digits.startswith("0")):
        return " ".join(_ONES[int(d)] for d in digits)
    n = int(digits)
    if n == 0:
        return _ONES[0]
    groups = []
    scale = 0
    while n:
        n, group = divmod(n, 1000)
        if group:
            groups.append(_below_thousand(group) + _SCALES[scale])
        scale += 1
    return " ".join(reversed(groups))


def _expand(match: re.Match[str]) -> str:
    token = match.group()
    if token in _SYMBOLS:
        return f" {_SYMBOLS[token]} "
    whole, sep, fraction = token.replace(",", ".").partition(".")
    spoken = number_words(whole)
    if sep:
        spoken += " point " + " ".join(_ONES[int(d)] for d in fraction)
    return f" {spoken} "


def spoken_form(text: str) -> str:
    """``text`` with numbers and symbols written out in words (English names: an estimate for any language)."""
    return _TOKEN.sub(_expand, text)


def text_cost(text: str, language: str = "en") -> int:
    """Characters as an engine feels them: see FOREIGN_SCRIPT_WEIGHT and CJK_WEIGHT."""
    cost = len(text)
    for pattern, languages, native_weight in _SCRIPTS:
        count = len(pattern.findall(text))
        if count:
            weight = native_weight if language in languages else FOREIGN_SCRIPT_WEIGHT
            cost += count * (weight - 1)
    return cost


def spoken_cost(text: str, language: str = "en") -> int:
    """The cost of ``text``'s spoken form: numbers and symbols expanded, then :func:`text_cost`."""
    return text_cost(spoken_form(text), language)
