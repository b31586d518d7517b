"""Build typer commands from pydantic option models, so a converter's options are its CLI.

Each model field becomes `--kebab-name` with the field's description as help (a command may give a
field another flag, e.g. `--from`, or `--x/--no-x` for a bool that defaults to true, and leave
fields out); a `tuple[X, ...]` field is a repeatable option. Validation stays in pydantic, and its
first error is turned into a one-line ConfigError naming the option.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeGuard

import typer
from pydantic import BaseModel, ValidationError

from cotrain.errors import ConfigError


def _cli_type(annotation: Any) -> Any:
    """Typer-friendly annotation: Literal choices become str (pydantic checks them)."""
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin is typing.Literal:
        return str
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return list[_cli_type(args[0])]  # type: ignore[misc]  # a runtime-built annotation for typer
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)) and len(args) == 1:
        inner = _cli_type(args[0])
        return typing.Optional[inner]  # noqa: UP045  (typer needs Optional, not X | None)
    return annotation


def _help(field: Any, annotation: Any) -> str:
    text = field.description or ""
    if typing.get_origin(annotation) is typing.Literal:
        text += f" One of: {', '.join(map(str, typing.get_args(annotation)))}."
    return text


def model_parameters(models: list[type[BaseModel]], flags: Mapping[str, str] | None = None,
                     exclude: Collection[str] = ()) -> list[inspect.Parameter]:
    """One keyword parameter per model field not in `exclude`; `flags` maps a field to its own flag(s)."""
    params = []
    for model in models:
        for name, field in model.model_fields.items():
            if name in exclude:
                continue
            flag = (flags or {}).get(name, "--" + name.replace("_", "-"))
            required = field.is_required()
            default = ... if required else field.get_default(call_default_factory=True)
            default = list(default) if isinstance(default, tuple) else default
            option = typer.Option(default, flag, help=_help(field, field.annotation),
                                  show_default=not required and default is not None)
            params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY,
                                            default=option, annotation=_cli_type(field.annotation)))
    return params


def build_model(model: type[BaseModel], values: dict[str, Any]) -> Any:
    """Validate CLI values into `model`; the first error names the option, the value and the rule."""
    data = {k: v for k, v in values.items() if k in model.model_fields}
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = str(err["loc"][0]) if err["loc"] else "?"
        value = data.get(name, "<missing>")
        raise ConfigError(f"--{name.replace('_', '-')} {value!r}: {err['msg']}") from None


def command_from_models(
    func: Callable[..., None], positional: list[tuple[str, Any, str]], models: list[type[BaseModel]], *,
    flags: Mapping[str, str] | None = None, exclude: Collection[str] = (), extra: Sequence[inspect.Parameter] = (),
) -> Callable[..., None]:
    """Wrap `func(**kwargs)` with a signature typer understands: positional args, then model options
    (see model_parameters), then the `extra` options, then `--json`."""
    params = [
        inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=typer.Argument(..., help=help_),
                          annotation=ann)
        for name, ann, help_ in positional
    ]
    params += model_parameters(models, flags, exclude)
    params += extra
    params.append(inspect.Parameter("json_output", inspect.Parameter.KEYWORD_ONLY,
                                    default=typer.Option(False, "--json", help="Print the report as JSON."),
                                    annotation=bool))

    def wrapper(**kwargs: Any) -> None:
        func(**kwargs)

    wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]  # typer reads __signature__, which functions do not declare
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    wrapper.__doc__ = func.__doc__
    return wrapper


PathArg = Path


def _is_model(annotation: Any) -> TypeGuard[type[BaseModel]]:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def cli_fields(model: type[BaseModel], prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted path, FieldInfo) of every field of a nested model that names its own option
    (`json_schema_extra={"cli": "--flag"}`), in declaration order."""
    out: list[tuple[str, Any]] = []
    for name, field in model.model_fields.items():
        if _is_model(field.annotation):
            out += cli_fields(field.annotation, f"{prefix}{name}.")
        elif isinstance(field.json_schema_extra, dict) and "cli" in field.json_schema_extra:
            out.append((prefix + name, field))
    return out


def _option_type(field: Any) -> Any:
    """The typer annotation: a mapping or tuple is a repeatable option, a path field shows as a path."""
    path = bool(field.json_schema_extra.get("path"))
    if typing.get_origin(field.annotation) in (dict, tuple):  # dict: KEY=VALUE items, parsed by nested_values
        return list[Path] if path else list[str]
    if path:
        return typing.Optional[Path] if field.default is None else Path  # noqa: UP045  (typer needs typing.Optional here)
    return _cli_type(field.annotation)


def nested_parameters(model: type[BaseModel]) -> list[inspect.Parameter]:
    """Typer options of `cli_fields(model)`; each parameter is named by its dotted path ('.' -> '__')."""
    params = []
    for path, field in cli_fields(model):
        required = field.is_required()
        if required:
            default: Any = ...
        elif typing.get_origin(field.annotation) in (dict, tuple):
            default = []
        else:
            default = field.get_default(call_default_factory=True)
        option = typer.Option(default, field.json_schema_extra["cli"], help=_help(field, field.annotation),
                              show_default=not required)
        params.append(inspect.Parameter(path.replace(".", "__"), inspect.Parameter.KEYWORD_ONLY, default=option,
                                        annotation=_option_type(field)))
    return params


def nested_values(model: type[BaseModel], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Dotted path -> value of the options `nested_parameters(model)` made, as the model's field types
    take them (repeatable options become tuples or KEY=VALUE mappings; paths become strings)."""
    out: dict[str, Any] = {}
    for path, field in cli_fields(model):
        value, extra = kwargs[path.replace(".", "__")], field.json_schema_extra
        origin = typing.get_origin(field.annotation)
        if origin is dict:
            value = parse_pairs(value, extra["cli"], extra.get("pairs", "KEY=VALUE"))
        elif origin is tuple:
            value = tuple(str(v) for v in value)
        elif isinstance(value, Path):
            value = str(value)
        out[path] = value
    return out


def parse_pairs(items: list[str], option: str, shape: str = "KEY=VALUE") -> dict[str, str]:
    """`KEY=VALUE` items of a repeatable option; a malformed one is a ConfigError naming it."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise ConfigError(f"{option} {item!r}: expected {shape}")
        out[key] = value
    return out
