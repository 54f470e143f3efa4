"""The spoken form and its cost: numbers and symbols written out, and segments cut by what is said."""

from __future__ import annotations

import functools

from hypothesis import given, settings
from hypothesis import strategies as st

from tts_actor.audio.segmenter import segment_text
from tts_actor.audio.spoken import MAX_NUMBER_DIGITS, number_words, spoken_cost, spoken_form, text_cost


def test_numbers_are_costed_as_they_are_said() -> None:
    assert number_words("0") == "zero"
    assert number_words("1234") == "one thousand two hundred thirty four"
    assert number_words("9999999999") == (
        "nine billion nine hundred ninety nine million nine hundred ninety nine thousand nine hundred ninety nine"
    )
    assert number_words("1000000") == "one million"
    assert number_words("007") == "zero zero seven"  # a leading zero: read digit by digit
    assert number_words("1" * (MAX_NUMBER_DIGITS + 1)) == " ".join(["one"] * (MAX_NUMBER_DIGITS + 1))
    assert spoken_form("3.14").split() == ["three", "point", "one", "four"]
    assert spoken_form("100% fun & games").split() == ["one", "hundred", "percent", "fun", "and", "games"]


def test_a_digit_run_costs_ten_times_its_characters_and_words_cost_their_length() -> None:
    """198 characters of '9999999999 ' became 78 s of Piper audio: the spoken form says so, len() did not."""
    digits = "9999999999 " * 18
    assert spoken_cost(digits) > 9 * len(digits)
    words = "The translator sent this sentence so that the speech service could read it aloud."
    assert spoken_cost(words) == len(words)
    assert spoken_cost("你好", "en") == text_cost("你好", "en") == 50  # the script weights still apply


def test_segments_of_digits_are_cut_by_their_spoken_cost() -> None:
    digits = ("9999999999 " * 18).strip()
    parts = segment_text(digits, 200)
    assert len(parts) >= 9 and all(spoken_cost(p.text) <= 200 for p in parts)
    assert " ".join(p.text for p in parts) == digits
    (one,) = segment_text("Call me at 5.", 200)  # short numbers stay in their sentence
    assert one.text == "Call me at 5."


def test_an_adapter_cost_in_its_own_units_drives_the_cut() -> None:
    calls: list[str] = []

    def vowels(text: str) -> int:  # a stand-in unit: what matters is that the segmenter uses it
        calls.append(text)
        return sum(ch in "aeiou" for ch in text)

    text = "aaaa bbbb aaaa bbbb aaaa"
    parts = segment_text(text, 5, cost=vowels)
    assert [p.text for p in parts] == ["aaaa bbbb", "aaaa bbbb", "aaaa"] and calls
    unspaced = "a" * 1000  # bisection: a long token costs few calls, not one per character
    calls.clear()
    parts = segment_text(unspaced, 100, cost=vowels)
    assert [len(p.text) for p in parts] == [100] * 10 and len(calls) < 150


TOKENS = st.one_of(
    st.sampled_from(["word", "alpha,", "end.", "e.g.", "3.14", "100%", "&", "Straße", "你好", "…", "«", "»"]),
    st.from_regex(r"[0-9]{1,25}", fullmatch=True),
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=12),
)


@settings(max_examples=300, deadline=None)
@given(
    tokens=st.lists(TOKENS, min_size=1, max_size=60), limit=st.integers(8, 300), language=st.sampled_from(["en", "zh"])
)
def test_no_segment_costs_more_than_the_limit_but_a_single_character(
    tokens: list[str], limit: int, language: str
) -> None:
    """Whatever the text: every segment fits, or is one character that alone is over the limit (bounded)."""
    text = " ".join(tokens)
    cost = functools.partial(spoken_cost, language=language)
    parts = segment_text(text, limit, language=language)
    for part in parts:
        assert cost(part.text) <= limit or len(part.text) == 1, (part.text, cost(part.text), limit)
        assert cost(part.text) <= max(limit, 30)  # one character: a symbol said as words, a foreign letter
        assert text[part.start : part.end] == part.text
    assert "".join("".join(p.text for p in parts).split()) == "".join(text.split())  # every character, in order
