"""``docs/configuration.md``, generated from :class:`~sentiment_api.core.settings.Settings`.

Every field, by its group: the variable, the ``serve`` option, the type, the default and the
description, then the table of the defaults that depend on the device. ``python -m
sentiment_api.core.settings_doc > docs/configuration.md`` writes the page; a test fails when the page
and the settings differ.
"""

from __future__ import annotations

import dataclasses
import sys
import types
from typing import Any, Literal, Union, get_args, get_origin

from pydantic.fields import FieldInfo

from sentiment_api.core.settings import (
    DEVICE_DEFAULTS,
    ENV_PREFIX,
    ENVIRONMENT_ONLY,
    GROUPS,
    SHOWN_DEFAULTS,
    DeviceDefaults,
    Settings,
)

COMMAND = ".venv/bin/python -m sentiment_api.core.settings_doc > docs/configuration.md"
BY_DEVICE = {field.name for field in dataclasses.fields(DeviceDefaults)} & set(Settings.model_fields)
INTRODUCTION = f"""# Configuration

Every setting of `sentiment-api serve` is an environment variable `{ENV_PREFIX}<NAME>` and, but for
the API keys (set only in the environment or a file, so that they never show in a process list), an
option of the same name: `{ENV_PREFIX}MAX_BATCH_SIZE` is `--max-batch-size`. An option given on the
command line wins over the environment. A value that cannot work is refused at start with one line
naming the variable, and so is a `{ENV_PREFIX}*` variable that names no setting.

Settings whose default is *by device* take the default of the device the model runs on
([Defaults by device](#defaults-by-device)). The *advanced* ones are for a process that may use fewer
cores than the machine shows (a container's CPU limit).

Generated from `src/sentiment_api/core/settings.py`; do not edit by hand, run `{COMMAND}`.
"""


def settings_markdown() -> str:
    """The configuration page: one table per group of settings, then the defaults by device."""
    parts = [INTRODUCTION]
    for group in GROUPS:
        names = [name for name, field in Settings.model_fields.items() if group_of(field) == group]
        rows = [_row(name, Settings.model_fields[name]) for name in names]
        table = ["| Variable | Option | Type | Default | Description |", "|---|---|---|---|---|", *rows]
        parts.append(f"## {group[0].upper()}{group[1:]}\n\n" + "\n".join(table) + "\n")
    parts.append(_device_table())
    return "\n".join(parts)


def group_of(field: FieldInfo) -> str | None:
    """The group a settings field is shown in (its ``json_schema_extra``), or ``None``."""
    extra = field.json_schema_extra
    group = extra.get("group") if isinstance(extra, dict) else None
    return group if isinstance(group, str) else None


def _row(name: str, field: FieldInfo) -> str:
    flag = "--" + name.replace("_", "-")
    option = f"`{flag}`" if field.annotation is not bool else f"`{flag}`, `--no-{flag[2:]}`"
    if name in ENVIRONMENT_ONLY:
        option = "none (environment only)"
    cells = [f"`{ENV_PREFIX}{name.upper()}`", option, _type(field), _default(name, field), field.description]
    return "| " + " | ".join(str(cell or "").replace("|", "\\|") for cell in cells) + " |"


def _type(field: FieldInfo) -> str:
    annotation: Any = field.annotation
    if get_origin(annotation) in (Union, types.UnionType):
        annotation = next(arg for arg in get_args(annotation) if arg is not type(None))
    if get_origin(annotation) is Literal:
        return "one of " + ", ".join(f"`{value}`" for value in get_args(annotation))
    if get_origin(annotation) is list:
        secret = "secret" in getattr(get_args(annotation)[0], "__name__", "").lower()
        return "comma-separated list" + (" of secrets" if secret else "")
    kind = {bool: "true or false", int: "integer", float: "number", str: "text"}.get(annotation, "path")
    return f"{kind}, {_bounds(field)}" if _bounds(field) else kind


def _bounds(field: FieldInfo) -> str:
    low = high = None
    for constraint in field.metadata:
        if getattr(constraint, "ge", None) is not None:
            low = _number(constraint.ge)
        if getattr(constraint, "gt", None) is not None:
            low = f"over {_number(constraint.gt)}"
        if getattr(constraint, "le", None) is not None:
            high = _number(constraint.le)
    if low and high:
        return f"{low}, up to {high}" if low.startswith("over") else f"{low} to {high}"
    if low:
        return low if low.startswith("over") else f"at least {low}"
    return f"at most {high}" if high else ""


def _number(value: float) -> str:
    return f"{int(value):,}" if float(value).is_integer() else f"{value:g}"


def _default(name: str, field: FieldInfo) -> str:
    if name in SHOWN_DEFAULTS:
        return SHOWN_DEFAULTS[name]
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "by device" if name in BY_DEVICE else "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, list):
        return ", ".join(f"`{item}`" for item in value) or "none"
    return f"`{value}`"


def _device_table() -> str:
    devices = list(DEVICE_DEFAULTS)
    lines = [
        "## Defaults by device",
        "",
        "What the settings whose default is *by device* default to on each device, and how many threads "
        "tokenise requests off the event loop there (not a setting; 0: on the event loop).",
        "",
        "| Setting | " + " | ".join(f"`{device}`" for device in devices) + " |",
        "|---|" + "---|" * len(devices),
    ]
    for spec in dataclasses.fields(DeviceDefaults):
        name = f"`{ENV_PREFIX}{spec.name.upper()}`" if spec.name in BY_DEVICE else spec.name.replace("_", " ")
        values = [getattr(DEVICE_DEFAULTS[device], spec.name) for device in devices]
        shown = ["one per core (per `THREADS` cores)" if value is None else f"`{value}`" for value in values]
        lines.append(f"| {name} | " + " | ".join(shown) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(settings_markdown())
