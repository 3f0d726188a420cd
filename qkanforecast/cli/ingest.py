"""``qkanforecast ingest``: validate a table and write the canonical long table."""

from __future__ import annotations

from typing import Annotated

import typer

from qkanforecast.cli.app import (
    INPUT,
    DataArg,
    Input,
    Quiet,
    app,
    column_list,
    err,
    example,
    user_errors,
    with_input,
)


@app.command(
    epilog=example("qkanforecast ingest traffic.csv --id-col cell --time-col time -o traffic.parquet")
)
@user_errors
@with_input
def ingest(
    data: DataArg,
    output: Annotated[
        str, typer.Option("--output", "-o", help="Output path (.parquet or .csv), or - for CSV on stdout.")
    ] = "-",
    covariates: Annotated[
        str | None,
        typer.Option(
            "--covariates", help="Numeric columns to keep next to y (exogenous covariates), comma-separated."
        ),
    ] = None,
    inputs: Input = INPUT,
    min_length: Annotated[
        int | None, typer.Option("--min-length", min=1, help="Reject series shorter than this.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary on stderr as JSON.")] = False,
    quiet: Quiet = False,
) -> None:
    """Validate a CSV or Parquet table and write it as the canonical long table (unique_id, ds, y, and
    the covariates asked for)."""
    from qkanforecast.data import print_report, write_table
    from qkanforecast.files import check_output

    check_output(output)  # before reading: a bad -o is found out at once, not after the whole file
    table = inputs.read(data, min_length=min_length, covariates=column_list(covariates))
    write_table(table, output)
    if not quiet or as_json:
        print_report(table, err, as_json=as_json)
