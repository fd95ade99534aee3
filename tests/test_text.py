import pytest

from sentiment_api.errors import ConfigError
from sentiment_api.text import DEFAULT_NORMALISER, get_normaliser


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
