"""The data package's shape: ``Table`` is a value type, its imports form a line, and every table is
written through one path with one choice of format."""

from __future__ import annotations

import ast
import dataclasses
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from conftest import sine_panel

from qkanforecast.data import Table, from_frame, read_table, write_frame, write_table, writers
from qkanforecast.errors import QKANForecastError

PACKAGE = Path(__file__).resolve().parents[1] / "qkanforecast"

# what each module of the data package may import from it: a line, table <- canonical <- arrow <- readers,
# and writers <- table; formats is a leaf both readers and writers use
ALLOWED = {
    "table": set(),
    "formats": set(),
    "zones": set(),
    "canonical": {"table", "zones"},
    "arrow": {"table", "canonical", "zones"},
    "readers": {"table", "canonical", "arrow", "formats"},
    "writers": {"table", "formats"},
    "report": {"table"},
    "partitioned": {"table", "canonical", "arrow", "readers", "writers", "formats"},
    "bucketed": {"table", "canonical", "arrow", "zones", "partitioned"},
}


def imports_of(path: Path) -> set[str]:
    """Every ``qkanforecast...`` module a file imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("qkanforecast"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("qkanforecast"))
    return found


def test_data_modules_import_in_a_line() -> None:
    assert {p.stem for p in (PACKAGE / "data").glob("*.py")} == set(ALLOWED) | {"__init__"}
    for name, allowed in ALLOWED.items():
        used = {m.rsplit(".", 1)[-1] for m in imports_of(PACKAGE / "data" / f"{name}.py")
                if m.startswith("qkanforecast.data")}
        assert used <= allowed, f"data/{name}.py imports {sorted(used - allowed)}"


def test_no_import_cycle_in_the_package() -> None:
    modules = {".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"): p
               for p in PACKAGE.rglob("*.py")}
    graph = {name: {m for m in imports_of(p) if m in modules and m != name} for name, p in modules.items()}
    state: dict[str, int] = {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for dep in graph[name]:
            assert state.get(dep) != 1, f"import cycle: {' -> '.join(path + [name, dep])}"
            if dep not in state:
                visit(dep, path + [name])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])


def test_table_is_a_value_type() -> None:
    table = from_frame(sine_panel(3, 20))
    with pytest.raises(dataclasses.FrozenInstanceError):
        table.freq = "h"  # type: ignore[misc]
    assert table.offsets.tolist() == [0, 20, 40, 60] and table.lengths.tolist() == [20, 20, 20]
    assert table.ids == ["cell0", "cell1", "cell2"] and table.step_ns == 600 * 10**9
    np.testing.assert_array_equal(table.values, table.frame["y"].to_numpy())
    # a changed frame makes a new table whose arrays are its own
    cut = dataclasses.replace(table, frame=table.frame.iloc[5:].reset_index(drop=True))
    assert cut.offsets.tolist() == [0, 15, 35, 55] and cut.ids == table.ids
    assert cut.values[0] == table.values[5]
    assert table.offsets.tolist() == [0, 20, 40, 60]
    with pytest.raises(QKANForecastError, match="'unique_id' must be categorical"):
        Table(frame=table.frame.astype({"unique_id": str}), freq="10min")


@pytest.mark.parametrize(("suffix", "kind"), [(".parquet", "parquet"), (".pq", "parquet"), (".csv", "csv"),
                                              (".txt", "csv")])
def test_one_suffix_logic_for_every_table(tmp_path: Path, suffix: str, kind: str) -> None:
    table = from_frame(sine_panel(2, 5))
    write_table(table, tmp_path / f"canonical{suffix}")
    write_frame(table.frame, tmp_path / f"result{suffix}")
    for name in ("canonical", "result"):
        head = (tmp_path / f"{name}{suffix}").read_bytes()[:4]
        assert (head == b"PAR1") == (kind == "parquet"), name
    pd.testing.assert_frame_equal(read_table(tmp_path / f"result{suffix}").frame, table.frame)


def test_output_format_errors(tmp_path: Path) -> None:
    table = from_frame(sine_panel(1, 5))
    with pytest.raises(QKANForecastError, match=r"a\.jsonl: unknown output format; use a \.parquet or \.csv "
                                                r"suffix$"):
        write_table(table, tmp_path / "a.jsonl")  # the canonical table is never JSON
    with pytest.raises(QKANForecastError, match=r"a\.xlsx: unknown output format; use a \.parquet, \.csv or "
                                                r"\.jsonl suffix or --format$"):
        write_frame(table.frame, tmp_path / "a.xlsx")
    write_frame(table.frame, tmp_path / "a.xlsx", "jsonl")
    assert (tmp_path / "a.xlsx").read_text().startswith('{"unique_id":"cell0"')


class Terminal(io.BytesIO):
    def isatty(self) -> bool:
        return True


def test_parquet_is_never_written_to_a_terminal() -> None:
    table = from_frame(sine_panel(1, 5))
    for write in (lambda out: write_table(table, "-", "parquet", stdout=out),
                  lambda out: write_frame(table.frame, "-", "parquet", stdout=out)):
        out = Terminal()
        with pytest.raises(QKANForecastError, match="^refusing to write Parquet to a terminal"):
            write(out)
        assert out.getvalue() == b""
    out = io.BytesIO()
    write_frame(table.frame, "-", "parquet", stdout=out)
    pd.testing.assert_frame_equal(pq.read_table(io.BytesIO(out.getvalue())).to_pandas(), table.frame,
                                  check_categorical=False, check_dtype=False)


def test_result_tables_are_written_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "forecast.csv"
    target.write_bytes(b"old")

    def boom(frame: pd.DataFrame, fh: io.BufferedWriter, fmt: object) -> None:
        fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(writers, "_dump", boom)
    with pytest.raises(OSError, match="disk full"):
        write_frame(from_frame(sine_panel(1, 5)).frame, target)
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["forecast.csv"]
