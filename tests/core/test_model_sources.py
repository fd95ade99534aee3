"""Which packages a service holds: ``--model DIR`` and ``--model NAME=DIR`` entries, and the default."""

from pathlib import Path

import pytest

from sentiment_api.core.errors import ConfigError
from sentiment_api.core.model_sources import parse_entries, parse_entry
from sentiment_api.core.settings import load_settings


def test_a_plain_directory_is_the_default_model_and_name_equals_dir_a_named_one() -> None:
    assert parse_entry("/models/brand") == ("default", Path("/models/brand"))
    assert parse_entry("general=/models/general") == ("general", Path("/models/general"))
    assert parse_entry("./odd=dir/x") == ("default", Path("./odd=dir/x"))  # a path, not a name
    assert list(parse_entries(["b=/x", "a=/y"])) == ["b", "a"]  # the order given


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        (["/a", "/b"], "'default' is given twice"),
        (["x=/a", "x=/b"], "'x' is given twice"),
        (["bad name=/a"], "must be 1 to 64 letters"),
        (["x="], "no package directory"),
        ([], "at least one"),
    ],
)
def test_bad_entries_are_refused_naming_the_problem(entries: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_entries(entries)


def test_settings_list_the_packages_default_first(monkeypatch) -> None:
    settings = load_settings(model=["brand=/m/brand", "general=/m/general"], default_model="general")
    assert list(settings.packages) == ["general", "brand"] and settings.default_name == "general"
    assert load_settings(model=["brand=/m/brand", "/m/x"]).default_name == "brand"  # the first given
    monkeypatch.setenv("SENTIMENT_MODEL", "/m/plain, other=/m/other")
    assert load_settings().packages == {"default": Path("/m/plain"), "other": Path("/m/other")}


def test_a_default_model_that_is_not_served_is_refused_naming_the_served_ones() -> None:
    with pytest.raises(ConfigError, match=r"'nope' is none of the models given \(brand, general\)"):
        load_settings(model=["brand=/m/brand", "general=/m/general"], default_model="nope")
