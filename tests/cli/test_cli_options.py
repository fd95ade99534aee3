"""Options generated from the models they fill: complete plain help, values that reach the model."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from pydantic import BaseModel

from sentiment_api.cli.commands import SECRET_SETTINGS, app
from sentiment_api.core.recipe import TrainingConfig
from sentiment_api.core.records import DataSpec, GateThresholds
from sentiment_api.core.settings import Settings
from sentiment_api.data.corpora import CorpusOptions

# The option names the README, the Makefile and scripts use, where they are not the field's name
DATA_NAMES = {"labels": "--label", "drop_labels": "--drop-label", "seed": "--split-seed"}
RECIPE_NAMES = {"teachers": "--teacher", "distil_corpora": "--distil-corpus"}
# (command, model, renamed fields, fields without an option)
COMMANDS = [
    (["train"], TrainingConfig, RECIPE_NAMES, ("corpora",)),
    (["train"], CorpusOptions, {}, ()),
    (["train"], DataSpec, DATA_NAMES, ()),
    (["crossval"], TrainingConfig, RECIPE_NAMES, ("corpora",)),
    (["crossval"], CorpusOptions, {}, ()),
    (["crossval"], DataSpec, DATA_NAMES, ()),
    (["data", "split"], DataSpec, DATA_NAMES, ()),
    (["export"], GateThresholds, {}, ()),
    (["serve"], Settings, {}, SECRET_SETTINGS),
]
SHOWN_INSTEAD = {(Settings, "model"): "(the model shipped with the package)"}  # not a long site-packages path
KEY = "0123456789abcdef-secret-key"


def run(*args: object, **env: str) -> subprocess.CompletedProcess[str]:
    """The real command; its output is a pipe, as in CI logs."""
    return subprocess.run(
        [sys.executable, "-m", "sentiment_api", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )


def help_text(command: list[str]) -> str:
    result = run(*command, "--help", COLUMNS="80")
    assert result.returncode == 0, result.stderr
    return result.stdout


def option_of(field: str, renamed: dict[str, str]) -> str:
    return renamed.get(field, "--" + field.replace("_", "-"))


def shown_default(model: type[BaseModel], field: str, option: str) -> str | None:
    """The default as help must show it in full; None where there is none to show."""
    if (model, field) in SHOWN_INSTEAD:
        return SHOWN_INSTEAD[model, field]
    default = model.model_fields[field].get_default(call_default_factory=True)
    if default is None or default == [] or default == {}:
        return None
    if isinstance(default, bool):
        return option[2:] if default else f"no-{option[2:]}"
    if isinstance(default, list):
        return ", ".join(map(str, default))
    if isinstance(default, dict):
        return ", ".join(f"{key}={value}" for key, value in default.items())
    return str(default)


@pytest.mark.parametrize(
    ("command", "model", "renamed", "excluded"),
    COMMANDS,
    ids=[f"{' '.join(c[0])} {c[1].__name__}" for c in COMMANDS],
)
def test_help_at_80_columns_in_a_pipe_shows_every_option_and_default_in_full(
    command, model, renamed, excluded
) -> None:
    text = help_text(command)
    unwrapped = re.sub(r"\s+", "", text)  # a word longer than the column may wrap, but nothing is lost

    assert "…" not in text and "╭" not in text
    assert max(map(len, text.splitlines())) <= 80
    for field in model.model_fields.keys() - set(excluded):
        option = option_of(field, renamed)
        assert re.search(rf"^\s+{re.escape(option)}[ /\n]", text, re.MULTILINE), f"{option} missing"
        default = shown_default(model, field, option)
        if default is not None:
            shown = re.escape("[default:" + re.sub(r"\s+", "", default)) + r"[;\]]"
            assert re.search(shown, unwrapped), f"{option}: default {default!r} not shown in full"


def test_every_option_of_every_command_has_help_and_a_name_of_its_own() -> None:
    import typer.main

    def commands(group, path):
        for name, command in group.commands.items():
            if hasattr(command, "commands"):
                yield from commands(command, [*path, name])
            else:
                yield [*path, name], command

    for path, command in commands(typer.main.get_command(app), []):
        options = [p for p in command.params if p.param_type_name == "option"]
        names = [name for option in options for name in option.opts + option.secondary_opts]
        assert len(names) == len(set(names)), f"{' '.join(path)}: an option name is used twice"
        assert all(option.help for option in options), f"{' '.join(path)}: an option without help"


def test_serve_help_names_every_sentiment_variable_and_never_a_key() -> None:
    result = run("serve", "--help", COLUMNS="80", SENTIMENT_API_KEYS=KEY)
    text = " ".join(result.stdout.split())

    for field in Settings.model_fields:
        assert re.search(rf"\bSENTIMENT_{field.upper()}\b", text), f"SENTIMENT_{field.upper()} missing"
    assert KEY not in result.stdout + result.stderr
    assert "--api-keys " not in text  # keys come from the environment or a file, never from argv


def test_options_reach_the_model(tiny_csv) -> None:
    result = run("data", "split", tiny_csv, "--holdout", "0.5", "--split-seed", "1")

    assert result.returncode == 0, result.stderr
    sizes = {name: split["rows"] for name, split in json.loads(result.stdout)["splits"].items()}
    assert sizes == {"train": 30, "validation": 15, "test": 15}


def test_repeated_options_fill_a_list(tiny_csv) -> None:
    result = run("data", "split", tiny_csv, "--label", "Positive emotion", "--label", "Negative emotion")

    assert result.returncode == 1
    assert "not one of ['Positive emotion', 'Negative emotion']" in result.stderr


def test_a_value_the_model_refuses_is_a_usage_error_naming_the_option(tiny_csv, tmp_path) -> None:
    result = run("train", tiny_csv, "--out", tmp_path / "model", "--learning-rate", "0")

    assert result.returncode == 2
    assert "Invalid value for '--learning-rate': Input should be greater than 0" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "model").exists()


def test_serve_reads_the_environment_and_an_option_wins_over_it(tmp_path) -> None:
    missing = tmp_path / "nothing"

    from_environment = run("serve", "--model", missing, SENTIMENT_QUEUE_SIZE="4")
    overridden = run("serve", "--model", missing, "--queue-size", "512", SENTIMENT_QUEUE_SIZE="4")

    assert from_environment.returncode == 1
    assert (
        from_environment.stderr.startswith("error: invalid settings:")
        and "queue_size (4)" in from_environment.stderr
    )
    assert overridden.returncode == 1
    assert "not a model directory" in overridden.stderr
