"""The ingest report: what ``read_table`` found and fixed, as a rich table or one JSON object."""

from __future__ import annotations

import json
from typing import Any

from qkanforecast.data.table import Table
from qkanforecast.errors import printable


def print_report(table: Table | dict[str, Any], console: Any, as_json: bool = False) -> None:
    """Print what ingest found and fixed: a rich table, or one JSON object with ``as_json``."""
    report = table.report if isinstance(table, Table) else table
    if as_json:
        console.print(json.dumps(report), markup=False, highlight=False, soft_wrap=True)
        return
    from rich.table import Table as RichTable
    from rich.text import Text

    def cell(value: Any) -> Text:  # ids and notes quote the input: no markup, control characters escaped
        return Text(printable(str(value)))

    t = RichTable(title=cell(f"ingest: {report.get('source', '')}"), show_header=False, title_justify="left")
    t.add_column("item", style="bold")
    t.add_column("value")
    labels = [("rows_read", "rows read"), ("rows", "rows written"), ("series", "series"),
              ("buckets", "buckets"),
              ("freq", "frequency"), ("start", "first timestamp"), ("end", "last timestamp"),
              ("min_length", "shortest series"),
              ("max_length", "longest series"), ("duplicates_dropped", "duplicate rows dropped"),
              ("fill", "fill policy"), ("missing_timestamps_filled", "missing timestamps filled"),
              ("nan_filled", "NaN values filled"), ("inf_filled", "infinite values filled"),
              ("series_filled", "series with filled values")]
    for key, name in labels:
        if key in report:
            value = report[key]
            if key == "freq" and report.get("freq_inferred"):
                value = f"{value} (inferred)"
            t.add_row(name, cell(value))
    for ex in report.get("filled_examples", [])[:5]:
        t.add_row("  filled", cell(f"{ex['unique_id']}: {ex['missing_timestamps']} missing timestamps, "
                                   f"{ex['nan_or_inf']} NaN/inf"))
    for note in report.get("notes", []):
        t.add_row("note", cell(note))
    console.print(t)
