"""docs/configuration.md is generated from the settings, and says what the command line does."""

from __future__ import annotations

from pathlib import Path

from sentiment_api.cli.options import env_var, option_name
from sentiment_api.core.settings import ENVIRONMENT_ONLY, Settings
from sentiment_api.core.settings_doc import COMMAND, group_of, settings_markdown

PAGE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_the_configuration_page_is_what_the_settings_generate() -> None:
    assert PAGE.read_text(encoding="utf-8") == settings_markdown(), (
        f"docs/configuration.md is out of date with core/settings.py: run `{COMMAND}`"
    )


def test_every_setting_is_on_the_page_with_its_variable_and_option_under_its_group() -> None:
    group, rows = None, {}
    for line in settings_markdown().splitlines():
        if line.startswith("## "):
            group = line[3:].lower()
        elif line.startswith("| `SENTIMENT_") and group != "defaults by device":
            rows[line.split("`")[1]] = (group, line)

    for name, field in Settings.model_fields.items():
        group, row = rows.pop(env_var(Settings, name))
        assert group == str(group_of(field)).lower(), name
        assert (f"`{option_name(name)}`" in row) == (name not in ENVIRONMENT_ONLY), name
    assert rows == {}
