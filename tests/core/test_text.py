"""Tweet normalisation: the earlier service's cleaning to the letter, and any Unicode taken safely."""

import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sentiment_api.core.errors import ConfigError
from sentiment_api.core.text import DEFAULT_NORMALISER, get_normaliser


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("I LOVE my #iPad!", "i love my #ipad!"),
        ("@mention Great app http://t.co/x {link}", "great app"),
        ("RT .@Apple. store &amp; line www.apple.com", "rt  store & line"),
        ("Caf\u00e9 \U0001f600 emoji \u2014 dash", "caf  emoji  dash"),
        ("&quot;quoted&quot; &lt;3", '"quoted" 3'),
        ("   ", ""),
    ],
)
def test_legacy_normaliser_reproduces_the_earlier_cleaning(raw: str, clean: str) -> None:
    assert get_normaliser("legacy@1")(raw) == clean


def test_default_normaliser_is_the_legacy_one() -> None:
    assert DEFAULT_NORMALISER == "legacy@1"
    assert get_normaliser("legacy").key == "legacy@1"


def test_unknown_normaliser_names_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="legacy@1"):
        get_normaliser("fancy@2")


ALLOWED = re.compile(r"[A-Za-z0-9\s.,!?'\";:()&\-#]*")
ANY_TEXT = st.text(st.characters(codec="utf-8"), max_size=2000)  # what JSON can carry
FOUR_SECONDS_WORTH = 100_000  # far beyond any text the server accepts (max_text_chars: 1000)


@given(ANY_TEXT)
@settings(deadline=None, max_examples=300)  # time is bounded by the adversarial tests below
def test_legacy_normaliser_takes_any_unicode_and_never_grows_it(text: str) -> None:
    clean = get_normaliser("legacy@1")(text)

    assert len(clean) <= len(text)
    assert ALLOWED.fullmatch(clean)
    assert clean == clean.strip()


@given(ANY_TEXT)
@settings(deadline=None)  # a pause of the machine is not a failure
def test_the_identity_normaliser_keeps_any_unicode_as_it_is(text: str) -> None:
    assert get_normaliser("none@1")(text) == text


@pytest.mark.parametrize(
    "text",
    [
        "@" * FOUR_SECONDS_WORTH,
        "http://" * 15_000,
        "&amp;" * 20_000,
        ".@a." * 25_000,
        "İ" * FOUR_SECONDS_WORTH,
    ],
    ids=["ats", "urls", "entities", "mentions", "dotted-i"],
)
def test_legacy_normaliser_is_linear_on_adversarial_text(text: str) -> None:
    started = time.perf_counter()
    clean = get_normaliser("legacy@1")(text)

    assert time.perf_counter() - started < 1.0
    assert len(clean) <= len(text)
