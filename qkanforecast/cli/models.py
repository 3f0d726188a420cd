"""``qkanforecast models list | show | rm | path``: the checkpoint registry."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console

from qkanforecast.cli.app import RegistryOpt, example, models_app, open_registry, say, user_errors
from qkanforecast.cli.render import show_table

RefArg = Annotated[str, typer.Argument(help="NAME, NAME@vN, NAME@latest or a path.")]


@models_app.command("list", epilog=example("qkanforecast models list --json"))
@user_errors
def models_list(
    registry: RegistryOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per version.")] = False,
) -> None:
    """List every registered model version (a broken one as invalid, with the reason)."""
    import pandas as pd

    from qkanforecast.registry import Invalid

    reg = open_registry(registry)
    listing = reg.listing()
    rows = pd.DataFrame([e.summary() for e in listing])
    if rows.empty:
        say(f"no models in registry {reg.root}")
    if "invalid" in rows and not as_json:  # blanks, not NaN, where a column does not apply
        for col in ("parameters", "lookback", "horizon", "series"):
            if col in rows:
                rows[col] = rows[col].astype("Int64")
        rows = rows.astype(object).where(rows.notna(), "")
    show_table(rows, f"registry {reg.root}", Console(), as_json)
    for entry in listing:
        if isinstance(entry, Invalid):
            say(f"note: {entry.ref} is invalid; `qkanforecast models rm {entry.ref}` removes it")


@models_app.command("show", epilog=example("qkanforecast models show traffic@v2"))
@user_errors
def models_show(ref: RefArg, registry: RegistryOpt = None) -> None:
    """Print a model version's manifest (JSON) after checking its weights."""
    reg = open_registry(registry)
    entry = reg.get(ref, scaler=False)  # as on disk: a format-4 scaler is a table beside the weights
    reg.load_state_dict(entry)  # refuses a corrupt checkpoint
    typer.echo(json.dumps({"ref": entry.ref, "path": str(entry.path), **entry.manifest.to_json()}, indent=2))


@models_app.command("rm", epilog=example("qkanforecast models rm traffic@v1"))
@user_errors
def models_rm(
    ref: Annotated[str, typer.Argument(help="NAME@vN for one version, NAME for all of them.")],
    registry: RegistryOpt = None,
) -> None:
    """Remove one version, or every version of a name."""
    for entry in open_registry(registry).remove(ref):
        say(f"removed {entry.ref} ({entry.path})")


@models_app.command("path", epilog=example("qkanforecast models path traffic@latest"))
@user_errors
def models_path(
    ref: Annotated[str | None, typer.Argument(help="A reference (default: print the registry root).")] = None,
    registry: RegistryOpt = None,
) -> None:
    """Print the registry root, or the directory of a model version."""
    reg = open_registry(registry)
    typer.echo(str(reg.resolve(ref) if ref else reg.root))
