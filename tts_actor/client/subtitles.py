"""WebVTT subtitles from a reply's word timings: what a player shows while the audio plays.

Cues never cross a segment (a sentence, or part of a long one); within a segment words are gathered
while the cue's text stays within two lines of :data:`LINE_CHARS`. A segment whose engine gave no word
times (``timings_unavailable``) is one cue over the segment's own time, which the service always knows.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterator
from typing import Any

LINE_CHARS = 42  # the usual subtitle line
MAX_LINES = 2
_SPACE = re.compile(r"\s+")


def webvtt(text: str, timings: list[dict[str, Any]]) -> str:
    """The WebVTT file for ``text`` spoken with these ``timings`` (``TtsClient`` replies' ``.timings``)."""
    lines = ["WEBVTT", ""]
    for number, (start_ms, end_ms, cue) in enumerate(_cues(text, timings), start=1):
        lines += [str(number), f"{_clock(start_ms)} --> {_clock(max(end_ms, start_ms + 1))}"]
        lines += textwrap.wrap(_escape(cue), LINE_CHARS, break_long_words=False, break_on_hyphens=False)
        lines.append("")
    return "\n".join(lines)


def _cues(text: str, timings: list[dict[str, Any]]) -> Iterator[tuple[int, int, str]]:
    for entry in timings:
        words = entry.get("words")
        if not words:  # no word times (or nothing spoken): the segment as one cue
            spoken = _plain(text[entry["text_start"] : entry["text_end"]])
            if spoken:
                yield entry["start_ms"], entry["end_ms"], spoken
            continue
        group: list[dict[str, int]] = []
        for word in words:
            if group and len(_plain(text[group[0]["text_start"] : word["text_end"]])) > LINE_CHARS * MAX_LINES:
                yield _cue(text, group, entry)
                group = []
            group.append(word)
        yield _cue(text, group, entry)


def _cue(text: str, words: list[dict[str, int]], segment: dict[str, Any]) -> tuple[int, int, str]:
    """The words' time; their text with the punctuation around it (a word's span leaves out ``.`` and quotes)."""
    start, end = words[0]["text_start"], words[-1]["text_end"]
    while start > segment["text_start"] and not text[start - 1].isspace():
        start -= 1
    while end < segment["text_end"] and not text[end].isspace():
        end += 1
    return words[0]["start_ms"], words[-1]["end_ms"], _plain(text[start:end])


def _plain(text: str) -> str:
    return _SPACE.sub(" ", text).strip()


def _escape(text: str) -> str:
    """WebVTT cue text: ``&`` and ``<`` start markup, and ``-->`` would end the timing line."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clock(ms: int) -> str:
    hours, rest = divmod(int(ms), 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}.{millis:03d}"
