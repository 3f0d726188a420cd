"""Job files: ``--config job.toml`` gives any command its options from a TOML file, one table per command.

    [train]                       # qkanforecast train DATA --config job.toml
    model = "qkan-lstm"
    horizon = 144
    [forecast]
    level = [80, 95]
    [plot.forecast]               # a command of a group: a dotted table
    max-series = 6

Keys are the commands' long option names without the dashes (``hidden-size``; ``hidden_size`` also works;
``lags = false`` for ``--no-lags``). A value given on the command line wins over the file. The whole file is
checked whenever any command reads it, so a typo in ``[forecast]`` stops the nightly ``train`` before it
spends an hour: every table must name a command, every key one of its options, every value the option's
type (strictly: ``horizon = "144"`` is refused) and range. Paths in the file are read from the working
directory, as on the command line.

The mechanism is the one Click provides for this, ``Context.default_map``: ``--config`` is an eager option
whose callback (``app.with_config``) fills the command's defaults from its table before the other options are
read. It reads the commands' own parameters, so options added to a command need nothing here.
"""

from __future__ import annotations

import enum
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from qkanforecast.errors import QKANForecastError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def load(path: Path, root: Any, command: list[str], ctx: Any) -> dict[str, Any]:
    """The default map of ``command`` (its names below the root, e.g. ``["plot", "forecast"]``) from the
    job file ``path``: ``{parameter name: value}``, after checking every table of the file against the
    commands of ``root`` (the Click group of the application)."""
    try:
        with open(path, "rb") as fh:
            doc = tomllib.load(fh)
    except OSError as exc:
        raise QKANForecastError(f"job file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise QKANForecastError(f"job file {path} is not valid TOML: {exc}") from None
    checked = _check_group(doc, root, [], path, ctx)
    return checked.get(" ".join(command), {})


def _check_group(
    doc: Mapping[str, Any], group: Any, above: list[str], path: Path, ctx: Any
) -> dict[str, dict[str, Any]]:
    """Check the tables of ``doc`` against the subcommands of ``group``; ``{command path: default map}``."""
    commands = getattr(group, "commands", {})
    out: dict[str, dict[str, Any]] = {}
    for key, value in doc.items():
        where = ".".join([*above, key])
        if key not in commands:
            choices = ", ".join(f"[{'.'.join([*above, c])}]" for c in sorted(commands))
            raise QKANForecastError(
                f"job file {path}: unknown key {where!r}; its tables are commands: {choices}"
            )
        if not isinstance(value, dict):
            raise QKANForecastError(
                f"job file {path}: {where} must be a table of options ([{where}]), got {value!r}"
            )
        sub = commands[key]
        if hasattr(sub, "commands"):
            out.update(_check_group(value, sub, [*above, key], path, ctx))
        else:
            out[" ".join([*above, key])] = _check_options(value, sub, where, path, ctx)
    return out


def options_of(command: Any) -> dict[str, Any]:
    """A command's options by their job-file key: the long name without dashes (``--config`` excluded)."""
    keys = {}
    for param in command.params:
        long = [o for o in getattr(param, "opts", []) if o.startswith("--")]
        if long and param.name != "config":
            keys[long[0][2:]] = param
    return keys


def _check_options(
    table: Mapping[str, Any], command: Any, where: str, path: Path, ctx: Any
) -> dict[str, Any]:
    known = options_of(command)
    out = {}
    for key, value in table.items():
        param = known.get(key.replace("_", "-"))
        if param is None:
            raise QKANForecastError(
                f"job file {path}: [{where}] unknown key {key!r}; the options of {where.replace('.', ' ')} "
                f"are {', '.join(known)}"
            )
        if param.multiple and not isinstance(value, list):
            value = [value]
        problem = _type_problem(param, value)
        if problem is None:
            try:  # the option's own conversion: choices, ranges
                param.process_value(ctx, value)
            except Exception as exc:  # noqa: BLE001 (Click and Typer raise several kinds)
                problem = str(getattr(exc, "message", None) or exc).removeprefix("Value error, ")
        if problem is not None:
            raise QKANForecastError(f"job file {path}: [{where}] {key} = {_toml(value)}: {problem}")
        out[param.name] = value
    return out


def _type_problem(param: Any, value: Any) -> str | None:
    """Why ``value`` (as TOML parsed it) does not have the option's type, or None. Strict: no strings for
    numbers or numbers for strings, where the command line would have converted them."""
    descriptor = getattr(param, "type_descriptor", None)
    hint = getattr(descriptor, "annotation", None)
    if param.multiple:
        args = getattr(hint, "__args__", None)
        item = args[0] if args else None
        problems = [_scalar_problem(item, v) for v in value]
        found = next((p for p in problems if p), None)
        return f"expected {_name(item)} or a list of them" if found else None
    return _scalar_problem(hint, value)


def _scalar_problem(hint: Any, value: Any) -> str | None:
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif hint is str or hint is Path or (isinstance(hint, type) and issubclass(hint, enum.Enum)):
        ok = isinstance(value, str)
    else:
        return None  # a type this check does not know: the option's own conversion decides
    return None if ok else f"expected {_name(hint)}, got {type(value).__name__}"


def _name(hint: Any) -> str:
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return "a string (" + ", ".join(str(m.value) for m in hint) + ")"
    return {
        bool: "true or false",
        int: "an integer",
        float: "a number",
        str: "a string",
        Path: "a path string",
    }.get(hint, getattr(hint, "__name__", "a value"))


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(map(_toml, value)) + "]"
    return str(value)
