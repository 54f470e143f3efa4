"""Word timings in pieces: the text's words, matching phoneme words back to them (with the real espeak-ng
phonemizer of the joe voice), the encoder's timings, the request field, the timings parts and WebVTT."""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
from typing import Any

import pytest

from tts_actor.audio.encoding import FormatRequest, SpeechEncoder, word_timings_json
from tts_actor.audio.pcm import Audio
from tts_actor.audio.segmenter import Segment
from tts_actor.audio.words import (
    ENGINE_REPORTS_NONE,
    Phone,
    WordSpan,
    align_words,
    phoneme_words,
    phones_from_alignments,
    text_words,
)
from tts_actor.backends.piper import PiperBackend
from tts_actor.client.subtitles import webvtt
from tts_actor.config import load_settings
from tts_actor.errors import ErrorCode, TtsError
from tts_actor.wire.framing import HEADER_SLACK, Framer, headers_size
from tts_actor.wire.messages import SynthesisRequest, Timings
from tts_actor.wire.replies import ReplyKind, TimingParts, classify
from tts_actor.wire.request_parsing import parse_synthesis_request


def words(text: str) -> list[str]:
    return [text[a:b] for a, b in text_words(text)]


def test_words_leave_out_silent_punctuation_and_keep_what_is_spoken() -> None:
    assert words('"Hello," she said — at 9:30... (really)!') == ["Hello", "she", "said", "at", "9:30", "really"]
    assert words("U.S. $40 12.5% well-known it's & AT&T") == ["U.S", "$40", "12.5%", "well-known", "it's", "&", "AT&T"]
    assert words(" ... — ") == []


@pytest.fixture(scope="module")
def phonemize() -> Any:
    """The joe voice's own phonemizer (espeak-ng in the piper-tts wheel), as the adapter uses it."""
    backend = PiperBackend(load_settings({}))
    voice = backend.voices()[0]
    return functools.partial(backend._word_phonemes, voice.id), backend._phonemizer(voice.id)


def spoken_phones(phonemizer: Any, text: str) -> list[Phone]:
    """The sentence as the engine phonemizes it, ten samples a symbol (Piper's BOS and EOS around it)."""
    sentence = " ".join("".join(s) for s in phonemizer.phonemize(text))
    phones, _ = phones_from_alignments([("^", 50), *((symbol, 10) for symbol in sentence), ("$", 30)])
    return phones


def test_numbers_become_several_phoneme_words_and_still_map_to_one_word_each(phonemize: Any) -> None:
    by_word, phonemizer = phonemize
    text = "Meet me at 9:30 on 3 May."
    assert len(by_word("9:30")) == 2, "espeak-ng reads 9:30 as two words"
    found = align_words(text, spoken_phones(phonemizer, text), by_word)
    assert found is not None
    assert [text[w.text_start : w.text_end] for w in found] == ["Meet", "me", "at", "9:30", "on", "3", "May"]
    assert all(w.end_sample > w.start_sample for w in found) and found[0].start_sample == 50
    assert all(a.end_sample <= b.start_sample for a, b in itertools.pairwise(found))


def test_words_the_engine_ran_together_share_their_phoneme_word(phonemize: Any) -> None:
    by_word, phonemizer = phonemize
    text = "Some of the people went out of the house, paying 12.5% less."
    phones = spoken_phones(phonemizer, text)
    alone = sum(len(by_word(text[a:b])) for a, b in text_words(text))
    assert len({p.word for p in phones}) < alone, "espeak-ng runs 'of the' together in a sentence"
    found = align_words(text, phones, by_word)
    assert found is not None
    assert [text[w.text_start : w.text_end] for w in found] == text.rstrip(".").replace(",", "").split()
    assert all(w.end_sample > w.start_sample for w in found), found
    assert all(a.end_sample <= b.start_sample for a, b in itertools.pairwise(found))
    of, the = found[1], found[2]
    assert of.end_sample == the.start_sample, "one phoneme word, shared"


def test_no_words_is_an_empty_list_and_words_without_phones_cannot_be_timed(phonemize: Any) -> None:
    by_word, _ = phonemize
    assert align_words("— ...", [], by_word) == []
    assert align_words("Hello there.", [], by_word) is None
    assert phoneme_words("həlˈoʊ, wˈɜːld!") == ["həlˈoʊ", "wˈɜːld"]  # noqa: RUF001 (IPA)


def encoded(words_asked: bool, audios: list[Audio]) -> SpeechEncoder:
    encoder = SpeechEncoder(FormatRequest("pcm"), 100, len(audios), "piper", False, word_timings=words_asked)
    text_at = 0
    for index, audio in enumerate(audios):
        encoder.pieces(Segment(index, "Hello there.", text_at, text_at + 12), audio)
        text_at += 13
    return encoder


def test_the_encoder_moves_words_into_the_request_text_and_the_file() -> None:
    rate = 1000
    spoken = (WordSpan(0, 5, 100, 400), WordSpan(6, 11, 450, 900))
    first, second = Audio(bytes(2000), rate, spoken), Audio(bytes(2000), rate, spoken)
    timings = [t.to_full_dict() for t in encoded(True, [first, second]).timings]
    assert timings[1]["start_ms"] == 1100  # a second of audio and the pause
    assert timings[1]["words"] == [
        {"text_start": 13, "text_end": 18, "start_ms": 1200, "end_ms": 1500},
        {"text_start": 19, "text_end": 24, "start_ms": 1550, "end_ms": 2000},
    ]
    header = json.loads(json.dumps([t.to_dict() for t in encoded(True, [first]).timings]))
    assert "words" not in header[0], "Tts-Timings stays per segment"


def test_an_engine_without_word_times_is_said_so_per_segment_never_made_up() -> None:
    unknown = Audio(bytes(2000), 1000)  # what MMS, XTTS, Chatterbox and Higgs return
    body = json.loads(word_timings_json(encoded(True, [unknown]).timings))
    assert body[0]["timings_unavailable"] == ENGINE_REPORTS_NONE and "words" not in body[0]
    assert encoded(False, [unknown]).timings[0].to_full_dict()["timings_unavailable"]  # not asked: not sent


def test_the_timings_field_is_segment_or_word() -> None:
    settings = load_settings({})
    assert parse_synthesis_request(b'{"text": "hi"}', settings).timings is Timings.SEGMENT
    assert parse_synthesis_request(b'{"text": "hi", "timings": "word"}', settings).timings is Timings.WORD
    for bad in ('"words"', "true", '["word"]', "null"):
        with pytest.raises(TtsError) as refused:
            parse_synthesis_request(f'{{"text": "hi", "timings": {bad}}}'.encode(), settings)
        assert refused.value.code is ErrorCode.INVALID_REQUEST and "'timings'" in refused.value.message
    assert b'"timings"' not in SynthesisRequest(text="hi").to_json()
    assert json.loads(SynthesisRequest(text="hi", timings=Timings.WORD).to_json())["timings"] == "word"


def test_long_timings_go_in_parts_that_fit_max_payload_and_come_back_whole() -> None:
    sent: list[tuple[bytes, dict[str, str]]] = []

    async def publish(data: bytes, headers: dict[str, str]) -> None:
        sent.append((data, headers))

    entries = [{"index": 0, "words": [{"text_start": i, "text_end": i + 1} for i in range(3000)]}]
    body = json.dumps(entries).encode()
    asyncio.run(Framer(publish, 16 * 1024, "req-1").timings(body))
    assert len(sent) > 4 and all(len(data) + headers_size(h) + HEADER_SLACK <= 16 * 1024 for data, h in sent)
    parts = TimingParts()
    for data, headers in reversed(sent):  # in any order
        assert classify(headers, data) is ReplyKind.STATUS and headers["Tts-Request-Id"] == "req-1"
        assert parts.take(headers, data)
    assert parts.result() == entries
    incomplete = TimingParts()
    incomplete.take(sent[0][1], sent[0][0])
    assert incomplete.result() is None and not incomplete.take({"Tts-Status": "working"}, b"")


def test_webvtt_cues_follow_the_words_and_a_segment_without_them_is_one_cue() -> None:
    text = (
        "Fish & <chips> are here. Then more words follow until the cue is too long for two lines of text, "
        "surely, as this one goes on and on."
    )
    second = text.index("Then")
    spans = text_words(text)
    timings = [
        {
            "index": 0,
            "text_start": 0,
            "text_end": second - 1,
            "start_ms": 0,
            "end_ms": 1500,
            "timings_unavailable": "-",
        },
        {
            "index": 1,
            "text_start": second,
            "text_end": len(text),
            "start_ms": 1600,
            "end_ms": 9000,
            "words": [
                {"text_start": a, "text_end": b, "start_ms": 1600 + 300 * i, "end_ms": 1850 + 300 * i}
                for i, (a, b) in enumerate(s for s in spans if s[0] >= second)
            ],
        },
    ]
    vtt = webvtt(text, timings)
    blocks = vtt.split("\n\n")
    assert blocks[0] == "WEBVTT"
    assert blocks[1] == "1\n00:00:00.000 --> 00:00:01.500\nFish &amp; &lt;chips&gt; are here."
    cues = [block.strip().split("\n") for block in blocks[2:] if block]
    assert len(cues) == 2 and all(len(line) <= 42 for cue in cues for line in cue[2:])
    assert " ".join(" ".join(cue[2:]) for cue in cues) == text[second:]
    assert cues[0][1].startswith("00:00:01.600 --> ") and cues[1][1].endswith(" --> 00:00:08.450")


def test_a_voice_loaded_without_alignments_says_so_and_speaks_the_same_length() -> None:
    """What a Piper install without the onnx package answers: the audio, and why it has no word times."""
    from piper import SynthesisConfig

    backend = PiperBackend(load_settings({}))
    backend.load({})
    voice = backend.voices()[0]
    assert voice.id in backend._aligned, "the onnx package is installed here: the model is patched at load"
    piper_voice = backend._loaded[voice.id].get()
    config = SynthesisConfig()
    without = backend._with_words(piper_voice, voice.id, [(0, "Hello there.")], config, aligned=False)
    assert without.words is None and without.words_missing == "alignment_unavailable"
    timed = backend._with_words(piper_voice, voice.id, [(0, "Hello there.")], config, aligned=True)
    assert [w.text_end for w in timed.words or ()] == [5, 11] and timed.words_missing is None
    assert abs(len(without.pcm) - len(timed.pcm)) < 0.3 * len(timed.pcm)
