"""Word timings: an engine's phoneme durations mapped back onto the words of the text it was given.

An engine that knows how long each phoneme took (Piper's alignments) knows where each *phoneme word* is,
not where each word of the text is: espeak-ng reads ``9:30`` as two words (nine thirty), ``12.5%`` as
four, and runs ``of the`` into one. So each word of the text is phonemized alone as well, and the
two are matched: word for word when the counts agree (the usual case), else phoneme by phoneme
(:class:`difflib.SequenceMatcher`), so a word is never lost, split off or invented. Spans are character
offsets into the text the engine was given; times are samples of its audio. Pure: no engine, no I/O.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass

# why a segment has no word times (``timings_unavailable``): the engine reports none; the engine could not align
ENGINE_REPORTS_NONE = "engine_reports_none"
ALIGNMENT_UNAVAILABLE = "alignment_unavailable"  # Piper without the onnx package, or a model that cannot be patched
ALIGNMENT_FAILED = "alignment_failed"  # the engine's durations did not match its phonemes
# what a word of the text may start or end with that is not spoken (``$``, ``%``, ``&``, ``#`` are)
_SILENT_EDGES = ".,;:!?…\"'“”‘’„«»‹›()[]{}¡¿—–-/*_~"  # noqa: RUF001 (typographic quotes and dashes)
_TOKEN = re.compile(r"\S+")
_BOUNDARY_PHONEMES = frozenset("^$_")  # Piper's BOS, EOS and pad: silence around a sentence


@dataclass(frozen=True)
class WordSpan:
    """One word: ``[text_start, text_end)`` in the engine's text, ``[start_sample, end_sample)`` in its audio."""

    text_start: int
    text_end: int
    start_sample: int
    end_sample: int

    def shifted(self, chars: int, samples: int) -> WordSpan:
        return WordSpan(
            self.text_start + chars, self.text_end + chars, self.start_sample + samples, self.end_sample + samples
        )


@dataclass(frozen=True)
class Phone:
    """One sounding phoneme of the engine's output and its samples; ``word``: which phoneme word it is in."""

    symbol: str
    word: int
    start: int
    end: int


def text_words(text: str) -> list[tuple[int, int]]:
    """The words of ``text`` as ``[start, end)``: runs without white space, silent punctuation trimmed off.

    A run of punctuation alone (``—``, ``...``) is no word: nothing of it is spoken.
    """
    words = []
    for match in _TOKEN.finditer(text):
        start, end = match.span()
        while start < end and text[start] in _SILENT_EDGES:
            start += 1
        while end > start and text[end - 1] in _SILENT_EDGES:
            end -= 1
        if start < end:
            words.append((start, end))
    return words


def _sounding(symbol: str) -> bool:
    """A phoneme that is heard: not a space, not punctuation (espeak-ng keeps ``,`` ``.`` ``?`` in its output)."""
    return not symbol.isspace() and unicodedata.category(symbol)[0] not in "PZ" and symbol not in _BOUNDARY_PHONEMES


def phones_from_alignments(
    alignments: Sequence[tuple[str, int]], first_word: int = 0, offset: int = 0
) -> tuple[list[Phone], int]:
    """Piper's ``(phoneme, samples)`` of one sentence as sounding phones; phoneme words counted from ``first_word``.

    Returns the phones and the number of the next phoneme word. Samples count from ``offset``, where the
    sentence starts in the audio.
    """
    phones: list[Phone] = []
    position = offset
    word = first_word
    in_word = False
    for symbol, samples in alignments:
        if symbol.isspace():
            word += in_word
            in_word = False
        elif _sounding(symbol):
            phones.append(Phone(symbol, word, position, position + samples))
            in_word = True
        position += samples
    return phones, word + in_word


def phoneme_words(phonemes: str) -> list[str]:
    """A text's phonemes (as a phonemizer writes them) as phoneme words of sounding symbols only."""
    words = ["".join(s for s in word if _sounding(s)) for word in phonemes.split()]
    return [w for w in words if w]


def align_words(
    text: str, phones: Sequence[Phone], phonemize_word: Callable[[str], list[str]]
) -> list[WordSpan] | None:
    """Each word of ``text`` with the samples of its phonemes; None when the phones cannot carry the words.

    No words (punctuation alone) is an empty list; words but no phones to give them is None.

    ``phonemize_word(word)`` is the word's phoneme words alone (:func:`phoneme_words` of the phonemizer's output).
    A word that the engine ran into its neighbour gets its share of the joined phoneme word; a word whose
    phonemes the match finds nowhere gets an empty span where it would be (never a made-up length).
    """
    words = text_words(text)
    if not words:
        return []
    if not phones:
        return None
    expected = [phonemize_word(text[start:end]) for start, end in words]
    spoken = sorted({p.word for p in phones})
    if sum(len(e) for e in expected) == len(spoken):
        owner = _word_for_word(expected, spoken, phones)
    else:
        owner = _phone_by_phone(expected, phones)
    return _spans(words, owner, phones)


def _word_for_word(expected: list[list[str]], spoken: list[int], phones: Sequence[Phone]) -> list[int]:
    """Text word ``i`` owns the next ``len(expected[i])`` phoneme words, in order."""
    word_owner: dict[int, int] = {}
    cursor = 0
    for index, phoneme_list in enumerate(expected):
        for spoken_word in spoken[cursor : cursor + len(phoneme_list)]:
            word_owner[spoken_word] = index
        cursor += len(phoneme_list)
    return [word_owner[p.word] for p in phones]


def _phone_by_phone(expected: list[list[str]], phones: Sequence[Phone]) -> list[int]:
    """The text words' own phonemes matched against the engine's, symbol by symbol: who owns each phone."""
    reference = [(symbol, index) for index, words in enumerate(expected) for word in words for symbol in word]
    if not reference:
        return [0] * len(phones)
    matcher = difflib.SequenceMatcher(None, [s for s, _ in reference], [p.symbol for p in phones], autojunk=False)
    owner = [0] * len(phones)
    for _tag, i1, i2, j1, j2 in matcher.get_opcodes():
        for j in range(j1, j2):
            if i2 > i1:  # equal or replaced: the proportional reference symbol
                i = i1 + (j - j1) * (i2 - i1) // (j2 - j1)
            else:  # inserted by the engine: the word of the reference symbol before it (or after, at the start)
                i = max(0, i1 - 1)
            owner[j] = reference[min(i, len(reference) - 1)][1]
    for j in range(1, len(owner)):  # in order, whatever the match did at the edges
        owner[j] = max(owner[j], owner[j - 1])
    return owner


def _spans(words: list[tuple[int, int]], owner: list[int], phones: Sequence[Phone]) -> list[WordSpan]:
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for j, index in enumerate(owner):
        first.setdefault(index, phones[j].start)
        last[index] = phones[j].end
    spans = []
    position = phones[0].start
    for index, (start, end) in enumerate(words):
        begin = max(first.get(index, position), position)
        finish = max(last.get(index, begin), begin)
        spans.append(WordSpan(start, end, begin, finish))
        position = finish
    return spans
