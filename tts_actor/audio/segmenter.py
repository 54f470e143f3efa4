"""Text -> segments an engine can speak: sentences, capped at the engine's own limit.

Every engine gets its text this way, one segment per engine call, so that a long or
unpunctuated text never reaches an engine whole (Piper's memory grows with the length
of what it is given; XTTS asserts past ~400 tokens; Chatterbox stops at ~40 s). Text
is split into sentences (abbreviations, decimals, initials, ellipses, closing quotes,
CJK and Arabic punctuation handled), an over-long sentence at commas, then between
words, then anywhere (a script without spaces). Lengths are measured as spoken
(:mod:`tts_actor.audio.spoken`: ``9999999999`` is about a hundred characters said, and an
adapter may measure in its own units, Piper in phonemes). Each segment keeps its character
span in the original text, for the reply's timings.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from itertools import pairwise

from tts_actor.audio.spoken import FOREIGN_SCRIPT_WEIGHT, spoken_cost, text_cost

__all__ = ["FOREIGN_SCRIPT_WEIGHT", "PAD", "Segment", "segment_text", "split_sentences", "text_cost"]
Cost = Callable[[str], int]

# words whose trailing period does not end a sentence (lower case, without the period)
ABBREVIATIONS = frozenset(
    """
    mr mrs ms dr prof st sr jr vs etc e.g i.e cf fig figs no nos vol approx ca inc ltd co corp dept est
    jan feb mar apr jun jul aug sep sept oct nov dec mt ft gen col lt sgt rev hon u.s u.k a.m p.m
    m mme mlle mm env p.ex cie
    z.b bzw usw u.a d.h vgl evtl ggf nr str hr fr dipl ing inkl zzgl
    """.split()
)
_SENTENCE_END = re.compile(r"(\.{2,}|…+|[.!?‼⁇؟]+|[。！？]+|۔)((?:[\"'”’»」』）)\]]|\s»)*)")  # noqa: RUF001 (French: « Oui ! »)
_CJK_END = frozenset("。！？")  # noqa: RUF001 (CJK, Arabic and typographic punctuation)
_CLAUSE_END = re.compile(r"[,;:،؛]\s+|[、，；：]")  # noqa: RUF001 (CJK, Arabic and typographic punctuation)
_WORD_BEFORE = re.compile(r"([\w.]+)$")
_SPACE = re.compile(r"\s+")
PAD = " …"  # what pads a too-short text: a pause, never a word


@dataclass(frozen=True)
class Segment:
    """One engine call's text and where it came from."""

    index: int
    text: str  # what the engine is given (padded when the engine needs a minimum)
    start: int  # [start, end) in the request's text
    end: int


def _ends_sentence(text: str, match: re.Match[str]) -> bool:
    punct = match.group(1)
    if punct[0] in _CJK_END:
        return True
    after = text[match.end() : match.end() + 1]
    if after and not after.isspace():  # 3.14, e.g.x, U.S.A., a URL
        return False
    rest = text[match.end() :].lstrip()
    following = rest[:1]
    if following.islower():  # "wait... what", "e.g. this": the sentence goes on
        return False
    if punct == ".":
        word = _WORD_BEFORE.search(text, 0, match.start())
        token = word.group(1).lower() if word else ""
        if token in ABBREVIATIONS or token.rstrip(".") in ABBREVIATIONS:
            return False
        if len(token) == 1 and token.isalpha():  # an initial: J. R. R. Tolkien
            return False
        if token.isdigit() and len(token) <= 2 and following.isalpha():  # German ordinal: am 3. Oktober
            return False
    return True


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Sentence spans [start, end) of ``text``, whitespace trimmed; line breaks end sentences too."""
    spans: list[tuple[int, int]] = []
    for line in re.finditer(r"[^\n]+", text):
        start = line.start()
        for match in _SENTENCE_END.finditer(text, line.start(), line.end()):
            if _ends_sentence(text[: line.end()], match):
                spans.append((start, match.end()))
                start = match.end()
        spans.append((start, line.end()))
    return [trimmed for span in spans if (trimmed := _trim(text, *span))]


def _trim(text: str, start: int, end: int) -> tuple[int, int] | None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return (start, end) if start < end else None


def _pieces(text: str, start: int, end: int, pattern: re.Pattern[str]) -> list[tuple[int, int]]:
    """``text[start:end]`` cut after each match of ``pattern``."""
    cuts = [m.end() for m in pattern.finditer(text, start, end)]
    bounds = [start, *[c for c in cuts if start < c < end], end]
    return [trimmed for a, b in pairwise(bounds) if (trimmed := _trim(text, a, b))]


def _cap(text: str, start: int, end: int, max_cost: int, cost: Cost, level: int = 0) -> list[tuple[int, int]]:
    """Spans of at most ``max_cost``: whole if it fits, else split at clauses, then words, then anywhere."""
    if cost(text[start:end]) <= max_cost:
        return [(start, end)]
    if level == 0:
        pieces = _pieces(text, start, end, _CLAUSE_END)
    elif level == 1:
        pieces = _pieces(text, start, end, _SPACE)
    else:  # no spaces left (CJK, a very long token): cut by cost
        return _cut_anywhere(text, start, end, max_cost, cost)
    if len(pieces) <= 1:
        return _cap(text, start, end, max_cost, cost, level + 1)
    capped = [span for a, b in pieces for span in _cap(text, a, b, max_cost, cost, level + 1)]
    return _pack(text, capped, max_cost, cost)


def _cut_anywhere(text: str, start: int, end: int, max_cost: int, cost: Cost) -> list[tuple[int, int]]:
    """The longest prefixes that fit, found by bisection (a cost may be an engine's phonemizer: few calls)."""
    pieces, a = [], start
    while a < end:
        low, high = a + 1, end  # text[a:low] is kept even when one character alone is over the limit
        while low < high:
            mid = (low + high + 1) // 2
            if cost(text[a:mid]) <= max_cost:
                low = mid
            else:
                high = mid - 1
        pieces.append((a, low))
        a = low
    return pieces


def _pack(text: str, spans: list[tuple[int, int]], max_cost: int, cost: Cost) -> list[tuple[int, int]]:
    """Join neighbouring pieces greedily while they fit."""
    packed: list[tuple[int, int]] = []
    for start, end in spans:
        if packed and cost(text[packed[-1][0] : end]) <= max_cost:
            packed[-1] = (packed[-1][0], end)
        else:
            packed.append((start, end))
    return packed


def _merge_short(text: str, spans: list[tuple[int, int]], min_cost: int, max_cost: int, cost: Cost) -> list:
    """Join spans under ``min_cost`` to a neighbour when the result fits (engines that fail on tiny inputs)."""
    merged: list[tuple[int, int]] = []
    for span in spans:
        if merged and (
            cost(text[span[0] : span[1]]) < min_cost or cost(text[merged[-1][0] : merged[-1][1]]) < min_cost
        ):
            if cost(text[merged[-1][0] : span[1]]) <= max_cost:
                merged[-1] = (merged[-1][0], span[1])
                continue
        merged.append(span)
    return merged


def segment_text(
    text: str, max_chars: int, min_chars: int = 0, language: str = "en", cost: Cost | None = None
) -> list[Segment]:
    """Segments of ``text``, each at most ``max_chars`` by ``cost``, in order.

    ``cost``: the adapter's measure (``BackendAdapter.spoken_cost``, in its own units); by default the
    spoken-form estimate :func:`tts_actor.audio.spoken.spoken_cost` (numbers and symbols written out).
    A piece over the limit remains only where one character alone is over it.
    """
    if max_chars < 1:
        raise ValueError("max_chars must be at least 1")
    measure = cost or partial(spoken_cost, language=language)
    spans = [capped for span in split_sentences(text) for capped in _cap(text, *span, max_chars, measure)]
    if min_chars:
        spans = _merge_short(text, spans, min_chars, max_chars, measure)
    segments = []
    for index, (start, end) in enumerate(spans):
        spoken = text[start:end]
        while min_chars and len(spoken) < min_chars:
            spoken += PAD
        segments.append(Segment(index, spoken, start, end))
    return segments
