"""Command-line options declared once: generated from the fields of the pydantic model they fill.

``@model_options(TrainingConfig, into="config")`` replaces a command's ``config: TrainingConfig``
parameter by one option per field of the model:

- the name from the field (``learning_rate`` -> ``--learning-rate``), unless ``rename`` says otherwise;
- the help from the field's description (and, for settings, the environment variable that sets it);
- the default shown from the field's default; ``ge`` and ``le`` as the option's min and max;
- a bool as ``--flag/--no-flag``, a ``list[...]`` as a repeatable option, a ``dict[str, ...]`` as a
  repeatable ``KEY=VALUE`` option, ``X | None`` as an optional one, a ``Literal`` of strings as a choice.

The command receives the model built from the options given on the command line, and from those
only: the model's own defaults and validators apply (and, for settings, the environment still does).
A field added to the model is an option at once; one that must not be is excluded by name. A value
the model refuses is a usage error naming the option, never a traceback.
"""

from __future__ import annotations

import enum
import functools
import inspect
import types
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

import typer
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

Model = TypeVar("Model", bound=BaseModel)
Result = TypeVar("Result")

SCALARS: tuple[type, ...] = (bool, int, float, str, Path)
_CONTEXT = "_model_options_context"
_NOT_GIVEN = ("DEFAULT", "DEFAULT_MAP")  # click's ParameterSource names for "the user did not say"


@dataclass(frozen=True)
class _Option:
    """One generated option: the field it fills, its command parameter and its flag."""

    field: str
    parameter: inspect.Parameter
    flag: str
    choices: type[enum.Enum] | None
    mapping: type | None = None  # the value type of a dict field, given as KEY=VALUE

    def value(self, raw: Any) -> Any:
        """The option's value as the model expects it (a choice becomes its string, KEY=VALUE pairs
        a dict)."""
        if self.choices is not None and isinstance(raw, enum.Enum):
            return raw.value
        if self.mapping is not None:
            pairs: dict[str, Any] = {}
            for item in raw or ():
                key, equals, value = str(item).partition("=")
                if not equals or not key.strip():
                    raise typer.BadParameter(f"{item!r} is not KEY=VALUE", param_hint=f"'{self.flag}'")
                try:
                    pairs[key.strip()] = self.mapping(value.strip())
                except ValueError:
                    raise typer.BadParameter(
                        f"{value!r} is not a {self.mapping.__name__}", param_hint=f"'{self.flag}'"
                    ) from None
            return pairs
        return raw


def option_name(field: str, rename: Mapping[str, str] | None = None) -> str:
    """The option for ``field``: ``learning_rate`` -> ``--learning-rate`` (or its new name)."""
    return "--" + (rename or {}).get(field, field).replace("_", "-")


def env_var(model: type[BaseModel], field: str) -> str | None:
    """The environment variable of a settings field (``SENTIMENT_PORT``); None for a plain model."""
    prefix = dict(model.model_config).get("env_prefix")
    return f"{prefix}{field}".upper() if isinstance(prefix, str) and prefix else None


def model_options(
    model: type[Model],
    *,
    into: str,
    exclude: Collection[str] = (),
    rename: Mapping[str, str] | None = None,
    shown: Mapping[str, str] | None = None,
    build: Callable[..., Model] | None = None,
) -> Callable[[Callable[..., Result]], Callable[..., Result]]:
    """Replace the command parameter ``into`` by one option per field of ``model``.

    ``exclude``: fields that get no option. ``rename``: field -> option name without dashes, to keep
    an established name (``seed`` -> ``split-seed``). ``shown``: field -> text shown as the default
    where the value itself would not help (a path inside the installed package). ``build``: what
    turns the given values into the model (default: the model class).
    """
    unknown = (set(exclude) | set(rename or {}) | set(shown or {})) - set(model.model_fields)
    if unknown:
        raise TypeError(f"{model.__name__} has no field(s) {sorted(unknown)}")
    make = build or model

    def decorate(command: Callable[..., Result]) -> Callable[..., Result]:
        signature = inspect.signature(command, eval_str=True)
        target = signature.parameters.get(into)
        if target is None:
            raise TypeError(f"{command.__name__} has no parameter {into!r} to fill with {model.__name__}")
        options = [
            _option(model, name, field, f"{into}__{name}", target.kind, rename, shown)
            for name, field in model.model_fields.items()
            if name not in exclude
        ]
        parameters: list[inspect.Parameter] = []
        for parameter in signature.parameters.values():
            if parameter.name == into:
                parameters.extend(option.parameter for option in options)
            else:
                parameters.append(parameter)
        # Typer hands the click context to the parameter annotated with it; reuse one if there is
        context = next((p.name for p in parameters if p.annotation is typer.Context), None)
        if context is None:
            parameters.append(
                inspect.Parameter(_CONTEXT, inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)
            )

        @functools.wraps(command)
        def run(**values: Any) -> Result:
            ctx: typer.Context = values[context] if context else values.pop(_CONTEXT)
            given: dict[str, Any] = {}
            for option in options:
                raw = values.pop(option.parameter.name)
                source = ctx.get_parameter_source(option.parameter.name)
                if source is not None and source.name not in _NOT_GIVEN:
                    given[option.field] = option.value(raw)
            values[into] = _build(make, given, options, ctx)
            return command(**values)

        # Typer reads the signature and the type hints of what it is given: show it the options
        run.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in parameters}
        return run

    return decorate


def _option(
    model: type[BaseModel],
    name: str,
    field: FieldInfo,
    parameter: str,
    kind: inspect._ParameterKind,
    rename: Mapping[str, str] | None,
    shown: Mapping[str, str] | None,
) -> _Option:
    kind_of_value, optional, choices = _option_type(model, name, field.annotation)
    mapping = None
    if get_origin(kind_of_value) is dict:
        mapping = get_args(kind_of_value)[1]
        kind_of_value = list[str]
    flag = option_name(name, rename)
    declaration = f"{flag}/--no-{flag[2:]}" if kind_of_value is bool else flag
    help_text = field.description or ""
    if mapping is not None or get_origin(kind_of_value) is list:
        help_text += " Repeat the option for several."
    variable = env_var(model, name)
    if variable:
        help_text += f" [env var: {variable}]"
    settings: dict[str, Any] = {"help": help_text.strip()}
    if mapping is not None:
        settings["metavar"] = "KEY=VALUE"
    if kind_of_value in (int, float):
        for constraint in field.metadata:
            if getattr(constraint, "ge", None) is not None:
                settings["min"] = constraint.ge
            if getattr(constraint, "le", None) is not None:
                settings["max"] = constraint.le
    if shown and name in shown:
        settings["show_default"] = shown[name]
    default: Any = inspect.Parameter.empty
    if not field.is_required():
        default = field.get_default(call_default_factory=True)
        if choices is not None and default is not None:
            default = choices(default)
        if mapping is not None:
            default = [f"{key}={value}" for key, value in default.items()]
    value_type: Any = kind_of_value | None if optional else kind_of_value
    annotation: Any = Annotated[value_type, typer.Option(declaration, **settings)]
    return _Option(
        name,
        inspect.Parameter(parameter, kind, default=default, annotation=annotation),
        flag,
        choices,
        mapping,
    )


def _option_type(
    model: type[BaseModel], name: str, annotation: Any
) -> tuple[Any, bool, type[enum.Enum] | None]:
    """What Typer is told a field holds, whether it may be None, and the choices of a Literal."""
    optional = False
    if get_origin(annotation) in (Union, types.UnionType):
        rest = [arg for arg in get_args(annotation) if arg is not type(None)]
        if len(rest) == 1:
            annotation, optional = rest[0], True
    if annotation in SCALARS:
        return annotation, optional, None
    if get_origin(annotation) is list and get_args(annotation)[0] in SCALARS:
        return annotation, optional, None
    if (
        get_origin(annotation) is dict
        and get_args(annotation)[0] is str
        and get_args(annotation)[1] in SCALARS
    ):
        return annotation, optional, None
    values = get_args(annotation) if get_origin(annotation) is Literal else ()
    if values and all(isinstance(value, str) for value in values):
        # an Enum, which every Typer release turns into a choice (Literal support is recent)
        choices = enum.Enum(f"{model.__name__}_{name}", {value: value for value in values})  # type: ignore[misc]
        return choices, optional, choices
    raise TypeError(
        f"{model.__name__}.{name} ({annotation!r}) cannot be a command-line option; "
        "exclude it or give it a simpler type"
    )


def _build(
    make: Callable[..., Model], values: dict[str, Any], options: list[_Option], ctx: typer.Context
) -> Model:
    """The model from the given values; a value it refuses is a usage error naming the option."""
    try:
        return make(**values)
    except ValidationError as exc:
        flags = {option.field: option.flag for option in options}
        problems = [
            (flags.get(str(error["loc"][0])) if error["loc"] else None, error["msg"])
            for error in exc.errors()
        ]
        if len(problems) == 1 and problems[0][0]:
            raise typer.BadParameter(problems[0][1], ctx=ctx, param_hint=f"'{problems[0][0]}'") from None
        message = "; ".join(f"{flag}: {msg}" if flag else msg for flag, msg in problems)
        raise typer.BadParameter(message, ctx=ctx) from None
