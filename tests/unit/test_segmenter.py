"""The segmenter over English, French, German, Chinese and Arabic, and its limits."""

from __future__ import annotations

import itertools
import random
import re

import pytest

from tts_actor.audio.segmenter import segment_text, split_sentences, text_cost


def sentences(text: str) -> list[str]:
    return [text[a:b] for a, b in split_sentences(text)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            'Dr. Smith paid $3.50 for it. "Really?" she asked. Wait... what? Then it ended… Next one!',
            ["Dr. Smith paid $3.50 for it.", '"Really?" she asked.', "Wait... what?", "Then it ended…", "Next one!"],
        ),
        (
            "J. R. R. Tolkien wrote it, e.g. the Hobbit, in 1937. Mrs. Brown read it at 9 a.m. today. Fine.",
            ["J. R. R. Tolkien wrote it, e.g. the Hobbit, in 1937.", "Mrs. Brown read it at 9 a.m. today.", "Fine."],
        ),
        (
            "He said “Stop.” Then he left.\nNew line without a stop",
            ["He said “Stop.”", "Then he left.", "New line without a stop"],
        ),
    ],
)
def test_english(text: str, expected: list[str]) -> None:
    assert sentences(text) == expected


def test_french() -> None:
    text = "M. Dupont est arrivé. Il a dit : « Bonjour ! » Puis il est parti… Le prix : 3,50 €, env. dix."
    assert sentences(text) == [
        "M. Dupont est arrivé.",
        "Il a dit : « Bonjour ! »",
        "Puis il est parti…",
        "Le prix : 3,50 €, env. dix.",
    ]


def test_german() -> None:
    text = "Am 3. Oktober kam er, z.B. mit dem Zug. Das kostet 2,50 Euro bzw. etwas mehr. Dr. Müller bleibt. Ende!"
    assert sentences(text) == [
        "Am 3. Oktober kam er, z.B. mit dem Zug.",
        "Das kostet 2,50 Euro bzw. etwas mehr.",
        "Dr. Müller bleibt.",
        "Ende!",
    ]


def test_chinese() -> None:
    text = "今天天气很好。我们去公园吧！你觉得怎么样？「好的。」他说"  # noqa: RUF001
    assert sentences(text) == ["今天天气很好。", "我们去公园吧！", "你觉得怎么样？", "「好的。」", "他说"]  # noqa: RUF001


def test_arabic() -> None:
    text = "مرحبا بكم. كيف حالك؟ أنا بخير، شكرا."
    assert sentences(text) == ["مرحبا بكم.", "كيف حالك؟", "أنا بخير، شكرا."]


def test_over_long_sentences_split_at_commas_then_words_then_anywhere() -> None:
    text = "First clause here, second clause is a little longer, third one ends it."
    assert [s.text for s in segment_text(text, 40)] == [
        "First clause here,",
        "second clause is a little longer,",
        "third one ends it.",
    ]
    words = " ".join(["word"] * 30)
    parts = segment_text(words, 24)
    assert all(len(p.text) <= 24 for p in parts) and " ".join(p.text for p in parts) == words
    chinese = "我们今天去公园散步然后回家吃饭" * 4  # no punctuation, no spaces
    parts = segment_text(chinese, 30, language="zh")
    assert "".join(p.text for p in parts) == chinese
    assert all(text_cost(p.text, "zh") <= 30 for p in parts)


def test_a_script_the_language_does_not_use_weighs_more() -> None:
    """Piper in English reads each Chinese character as 'chinese letter': a short text is long for it."""
    assert text_cost("你好", "zh") == 6
    assert text_cost("你好", "en") == 50
    assert text_cost("hello", "en") == 5
    assert text_cost("مرحبا", "ar") == 5
    assert len(segment_text("你好世界" * 25, 250, language="en")) == 10  # 100 characters at 25 each


def test_spans_point_into_the_original_text() -> None:
    text = "  One sentence.  Two, with a comma; and more.\n\nThree!  "
    for segment in segment_text(text, 12):
        assert text[segment.start : segment.end] == segment.text


def test_short_segments_join_a_neighbour_and_a_short_text_is_padded_with_a_pause() -> None:
    parts = segment_text("Hi. Ok. This is a longer sentence. Yes.", 100, min_chars=10)
    assert all(len(p.text) >= 10 for p in parts)
    assert parts[0].text.startswith("Hi. Ok.")
    (only,) = segment_text("Hi.", 100, min_chars=10)
    assert only.text.startswith("Hi.") and len(only.text) >= 10 and re.fullmatch(r"Hi\.( …)+", only.text)
    assert (only.start, only.end) == (0, 3)


def test_random_texts_keep_every_word_in_order_and_never_exceed_the_limit() -> None:
    rng = random.Random(3)
    vocabulary = ["alpha", "beta,", "gamma.", "delta?", "e.g.", "3.14", "«", "»", "…", "très", "Straße", "word!"]
    for _ in range(200):
        text = " ".join(rng.choice(vocabulary) for _ in range(rng.randint(1, 80)))
        limit = rng.randint(8, 60)
        parts = segment_text(text, limit)
        assert all(text_cost(p.text) <= limit for p in parts)
        assert "".join(p.text for p in parts).replace(" ", "") == text.replace(" ", "")
        assert all(a.end <= b.start for a, b in itertools.pairwise(parts))
