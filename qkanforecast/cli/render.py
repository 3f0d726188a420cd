"""How the commands show things: tables (rich on a terminal, aligned text in a pipe, JSON lines) and
the per-epoch progress line."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table as RichTable
from rich.text import Text

from qkanforecast.cli.app import say
from qkanforecast.errors import printable

if TYPE_CHECKING:
    import pandas as pd

    from qkanforecast.manifest import Epoch


def show_table(frame: pd.DataFrame, title: str, console: Console, as_json: bool) -> None:
    """A table as JSON lines, a rich table on a terminal, or plain aligned text in a pipe.

    Text cells (series ids, reasons) come from the input: control characters are escaped in the table
    forms (JSON escapes them itself) and rich never reads them as markup."""
    if not as_json:
        frame = frame.copy()
        for col in frame.columns[frame.dtypes.map(lambda d: d.kind == "O")]:
            frame[col] = [printable(v) if isinstance(v, str) else v for v in frame[col]]
    if as_json:
        for row in frame.to_dict(orient="records"):
            text = json.dumps({k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()})
            console.print(text, markup=False, highlight=False, soft_wrap=True)
    elif console.is_terminal:
        table = RichTable(title=title)
        for col in frame.columns:
            table.add_column(str(col), justify="right" if frame[col].dtype.kind in "if" else "left")
        for row in frame.itertuples(index=False):
            table.add_row(*(Text(f"{v:.4g}" if isinstance(v, float) else str(v)) for v in row))
        console.print(table)
    elif len(frame):
        text = frame.to_string(index=False, float_format=lambda v: f"{v:.4g}")
        console.print(text, markup=False, highlight=False, soft_wrap=True)


NO_VALIDATION = "no validation part: early stopping and the kept epoch use the training loss"


def progress_printer() -> Callable[[Epoch, int, bool, bool], None]:
    """One line per epoch on stderr: losses (``*`` marks the best so far), training windows per second
    and the time left at the current pace. Without a validation part the line says so instead of showing
    a validation loss equal to the training loss."""
    elapsed = 0.0

    def show(record: Epoch, total: int, improved: bool, validated: bool = True) -> None:
        nonlocal elapsed
        elapsed += record.seconds
        eta = elapsed / record.epoch * (total - record.epoch)
        mark = "*" if improved else " "
        losses = (
            f"train {record.train_loss:.4g}  val {record.val_loss:.4g}{mark}"
            if validated
            else f"train {record.train_loss:.4g}{mark} "
            f"({NO_VALIDATION if record.epoch == 1 else 'no validation'})"
        )
        say(
            f"epoch {record.epoch:>3}/{total}  {losses} "
            f"{record.windows_per_s:,.0f} windows/s  ETA {eta:.0f}s"
        )

    return show
