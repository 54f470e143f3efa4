"""Which writing system a text is in, and whether the chosen language reads it.

An engine given text in a script its language does not use does not fail: it spells
it out ("chinese letter" a character in English Piper), minutes of noise for the
caller. So such a text is refused up front, naming a language that fits, unless the
caller says the mix is intended. Scripts are told by code point ranges (Python's
``unicodedata`` has no script property); only letters are counted. Latin is read,
badly or well, by every engine (names, brands, romanisation), so it never counts as a
mismatch.
"""

from __future__ import annotations

import bisect
import unicodedata
from dataclasses import dataclass

# (first, last, script): sorted, non-overlapping ranges of the scripts an engine may be handed
_RANGES: tuple[tuple[int, int, str], ...] = (
    (0x0370, 0x03FF, "Greek"),
    (0x0400, 0x052F, "Cyrillic"),
    (0x0530, 0x058F, "Armenian"),
    (0x0590, 0x05FF, "Hebrew"),
    (0x0600, 0x06FF, "Arabic"),
    (0x0750, 0x077F, "Arabic"),
    (0x0900, 0x097F, "Devanagari"),
    (0x0980, 0x09FF, "Bengali"),
    (0x0A00, 0x0A7F, "Gurmukhi"),
    (0x0A80, 0x0AFF, "Gujarati"),
    (0x0B80, 0x0BFF, "Tamil"),
    (0x0C00, 0x0C7F, "Telugu"),
    (0x0C80, 0x0CFF, "Kannada"),
    (0x0D00, 0x0D7F, "Malayalam"),
    (0x0D80, 0x0DFF, "Sinhala"),
    (0x0E00, 0x0E7F, "Thai"),
    (0x0E80, 0x0EFF, "Lao"),
    (0x0F00, 0x0FFF, "Tibetan"),
    (0x1000, 0x109F, "Myanmar"),
    (0x10A0, 0x10FF, "Georgian"),
    (0x1100, 0x11FF, "Hangul"),
    (0x1200, 0x139F, "Ethiopic"),
    (0x1780, 0x17FF, "Khmer"),
    (0x3040, 0x309F, "Hiragana"),
    (0x30A0, 0x30FF, "Katakana"),
    (0x3130, 0x318F, "Hangul"),
    (0x3400, 0x4DBF, "Han"),
    (0x4E00, 0x9FFF, "Han"),
    (0xAC00, 0xD7AF, "Hangul"),
    (0xF900, 0xFAFF, "Han"),
    (0xFB50, 0xFDFF, "Arabic"),
    (0xFE70, 0xFEFF, "Arabic"),
    (0x20000, 0x2FA1F, "Han"),
)
_STARTS = [first for first, _, _ in _RANGES]

# the language to suggest for text in each script
SCRIPT_LANGUAGE: dict[str, str] = {
    "Greek": "el",
    "Cyrillic": "ru",
    "Armenian": "hy",
    "Hebrew": "he",
    "Arabic": "ar",
    "Devanagari": "hi",
    "Bengali": "bn",
    "Gurmukhi": "pa",
    "Gujarati": "gu",
    "Tamil": "ta",
    "Telugu": "te",
    "Kannada": "kn",
    "Malayalam": "ml",
    "Sinhala": "si",
    "Thai": "th",
    "Lao": "lo",
    "Tibetan": "bo",
    "Myanmar": "my",
    "Georgian": "ka",
    "Hangul": "ko",
    "Ethiopic": "am",
    "Khmer": "km",
    "Hiragana": "ja",
    "Katakana": "ja",
    "Han": "zh",
}
# the non-Latin scripts each language reads; a language not named here reads Latin only
LANGUAGE_SCRIPTS: dict[str, frozenset[str]] = {
    "zh": frozenset({"Han"}),
    "ja": frozenset({"Han", "Hiragana", "Katakana"}),
    "ko": frozenset({"Hangul", "Han"}),
    "fa": frozenset({"Arabic"}),
    "ur": frozenset({"Arabic"}),
    "ps": frozenset({"Arabic"}),
    "sd": frozenset({"Arabic"}),
    "yi": frozenset({"Hebrew"}),
    "uk": frozenset({"Cyrillic"}),
    "bg": frozenset({"Cyrillic"}),
    "sr": frozenset({"Cyrillic"}),
    "be": frozenset({"Cyrillic"}),
    "kk": frozenset({"Cyrillic"}),
    "mk": frozenset({"Cyrillic"}),
    "mn": frozenset({"Cyrillic"}),
    "ky": frozenset({"Cyrillic"}),
    "tg": frozenset({"Cyrillic"}),
    "mr": frozenset({"Devanagari"}),
    "ne": frozenset({"Devanagari"}),
    "sa": frozenset({"Devanagari"}),
    "as": frozenset({"Bengali"}),
    "ti": frozenset({"Ethiopic"}),
    **{lang: frozenset({script}) for script, lang in SCRIPT_LANGUAGE.items() if lang not in ("ja", "zh", "ko")},
}


def script_of(char: str) -> str:
    """The script of one character: a name from the table, else "Latin" for a letter, else "Common"."""
    code = ord(char)
    at = bisect.bisect_right(_STARTS, code) - 1
    if at >= 0 and code <= _RANGES[at][1]:
        return _RANGES[at][2]
    return "Latin" if unicodedata.category(char).startswith("L") else "Common"


def letter_scripts(text: str) -> dict[str, int]:
    """How many letters (and combining marks) of ``text`` are in each script."""
    if text.isascii():  # every request in English: its letters are Latin, counted without a lookup each
        letters = sum(map(str.isalpha, text))
        return {"Latin": letters} if letters else {}
    counts: dict[str, int] = {}
    for char in text:
        if unicodedata.category(char)[0] in "LM":
            script = script_of(char)
            if script != "Common":
                counts[script] = counts.get(script, 0) + 1
    return counts


@dataclass(frozen=True)
class ScriptMismatch:
    """Most of the text is in ``script``, which ``language`` does not read; ``suggested`` does."""

    script: str
    share: float
    language: str
    suggested: str


def script_mismatch(text: str, language: str, most: float = 0.5) -> ScriptMismatch | None:
    """A mismatch when more than ``most`` of the letters are in scripts ``language`` does not read; else None."""
    counts = letter_scripts(text)
    letters = sum(counts.values())
    if not letters:
        return None
    readable = LANGUAGE_SCRIPTS.get(language, frozenset()) | {"Latin"}
    foreign = {script: n for script, n in counts.items() if script not in readable}
    share = sum(foreign.values()) / letters
    if share <= most:
        return None
    script = max(foreign, key=lambda s: foreign[s])
    if script == "Han" and ("Hiragana" in counts or "Katakana" in counts):
        suggested = "ja"  # kanji with kana is Japanese
    elif script == "Han" and "Hangul" in counts:
        suggested = "ko"
    else:
        suggested = SCRIPT_LANGUAGE[script]
    return ScriptMismatch(script, round(share, 3), language, suggested)
