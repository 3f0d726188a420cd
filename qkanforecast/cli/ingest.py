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
    epilog=example("qkanforecast ingest traffic.csv --id-col cell --time-col time -o traffic.parquet\n"
                   "  qkanforecast ingest traffic.parquet --buckets 64 -o traffic/")
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
    buckets: Annotated[
        int | None,
        typer.Option(
            "--buckets", min=1, help="Write a partitioned directory of this many buckets (series by crc32 of "
            "their id), for forecast and evaluate --engine ray."
        ),
    ] = None,
    min_length: Annotated[
        int | None, typer.Option("--min-length", min=1, help="Reject series shorter than this.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary on stderr as JSON.")] = False,
    quiet: Quiet = False,
) -> None:
    """Validate a CSV or Parquet table and write it as the canonical long table (unique_id, ds, y, and
    the covariates asked for)."""
    from qkanforecast.data import print_report, wants_directory, write_table
    from qkanforecast.data.bucketed import ingest_partitioned
    from qkanforecast.errors import QKANForecastError
    from qkanforecast.files import check_output

    if buckets is None:
        check_output(output)  # before reading: a bad -o is found out at once, not after the whole file
    elif not wants_directory(output):
        raise QKANForecastError(f"--buckets writes a directory, but {output} is a file; use -o DIR")
    if buckets is not None:  # streamed into the buckets: one bucket in memory at a time
        options = inputs.options(min_length=min_length, covariates=column_list(covariates))
        _, report = ingest_partitioned(data, options, output, buckets)
        if not quiet:
            inputs.notes(report)
    else:
        table = inputs.read(data, min_length=min_length, covariates=column_list(covariates))
        write_table(table, output)
        report = table.report
    if not quiet or as_json:
        print_report(report, err, as_json=as_json)
