"""The Typer apps, the error handling every command shares, and the options shared by several commands.

stdout carries data only (tables, references); progress and notes go to stderr. A user mistake prints one
``Error: ...`` line on stderr and exits 1; bad usage exits 2. Heavy modules (torch, pandas) are imported
inside the commands, so ``--help`` stays fast.
"""

from __future__ import annotations

import functools
import inspect
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console

from qkanforecast import __version__
from qkanforecast.cli.jobfile import load as load_job_file
from qkanforecast.config import Columns, ConfigError, Fill
from qkanforecast.errors import QKANForecastError, printable, safe_message
from qkanforecast.files import STORAGE_ERRNOS

if TYPE_CHECKING:
    from qkanforecast.data import IngestOptions, Table
    from qkanforecast.registry import Registry

err = Console(stderr=True)


def example(command: str) -> str:
    """A help epilog (shown after the options) that Click prints as is."""
    return f"Example:\n\n\b\n  {command}"


def shown(value: Any) -> str:
    """A default as the help shows it: ``[default: VALUE]``."""
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, list):
        return ",".join(map(str, value)) or "none"
    return f"{value:g}" if isinstance(value, float) else str(value)


F = TypeVar("F", bound=Callable[..., Any])


def say(message: str) -> None:
    """One line on stderr, with control characters escaped (messages quote input, which may be hostile)."""
    err.print(printable(message), markup=False, highlight=False, soft_wrap=True)


def fail(message: str, status: int = 1) -> typer.Exit:
    """Print ``Error: message`` as one safe, short line and return the exit to raise."""
    say(f"Error: {safe_message(message)}")
    return typer.Exit(status)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so that it unwinds like Ctrl-C: temporary files removed."""


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated()


class App(typer.Typer):
    """A ``typer.Typer`` whose every command also takes ``--config FILE``, a TOML job file with the command's
    options in its own table (``cli/jobfile.py``); options given on the command line win."""

    def command(self, *args: Any, **kwargs: Any) -> Callable[[F], F]:
        register = super().command(*args, **kwargs)

        def decorator(func: F) -> F:
            register(with_config(func))
            return func

        return decorator


def _read_job_file(ctx: typer.Context, value: Path | None) -> Path | None:
    """``--config``'s callback: eager, so it runs before the other options are read, and fills the
    command's ``default_map`` (Click's defaults by parameter name) from the file's table for it."""
    if value is None or ctx.resilient_parsing:
        return value
    names = []
    node: Any = ctx
    while node.parent is not None:
        names.append(node.info_name)
        node = node.parent
    try:
        defaults = load_job_file(value, node.command, names[::-1], ctx)
    except QKANForecastError as exc:
        raise fail(str(exc)) from None
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    return value


_CONFIG = inspect.Parameter(
    "config",
    inspect.Parameter.KEYWORD_ONLY,
    default=None,
    annotation=Annotated[
        Path | None,
        typer.Option(
            "--config",
            is_eager=True,
            callback=_read_job_file,
            metavar="FILE",
            help="TOML job file: this command's options in its table ([train], [plot.forecast], ...); "
            "options given on the command line win.",
            show_default=False,
        ),
    ],
)


def with_config(func: F) -> F:
    """Give a command the option ``--config FILE`` (last in its help); the command itself never sees it."""
    params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
              for p in inspect.signature(func, eval_str=True).parameters.values()]

    @functools.wraps(func)
    def wrapper(**kwargs: Any) -> Any:
        kwargs.pop("config", None)
        return func(**kwargs)

    del wrapper.__wrapped__  # type: ignore[attr-defined]  # typer must read the new signature, not func's
    wrapper.__signature__ = inspect.Signature([*params, _CONFIG])  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in [*params, _CONFIG]}
    return wrapper  # type: ignore[return-value]


app = App(
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    add_completion=False,
    rich_markup_mode=None,
    help="Forecast telecom time series with QKAN-LSTM, HQKAN-LSTM and LSTM models.",
    epilog=example("qkanforecast train data.csv && qkanforecast forecast data.csv --model data"),
)
models_app = App(
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="List, inspect and remove registered models.",
    epilog=example("qkanforecast models list"),
)
app.add_typer(models_app, name="models")


def user_errors(func: F) -> F:
    """Turn user mistakes into one ``Error:`` line and exit status 1; anything else keeps its traceback.

    A disk that fills up or turns read-only is a user error too. SIGTERM is handled like Ctrl-C while the
    command runs (exit 143 instead of 130), so ``kill`` leaves no temporary file behind either.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        main_thread = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
        try:
            return func(*args, **kwargs)
        except ConfigError as exc:  # a configuration field: name it as the flag that sets it
            raise fail(f"--{exc.field.replace('_', '-')} {exc.detail}") from None
        except QKANForecastError as exc:
            raise fail(str(exc)) from None
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as exc:
            raise fail(f"{exc.filename}: {exc.strerror}") from None
        except OSError as exc:
            if exc.errno not in STORAGE_ERRNOS:
                raise
            raise fail(f"{exc.filename or 'writing'}: {exc.strerror}; nothing was written") from None
        except Terminated:
            raise fail("terminated; nothing was written", 143) from None
        except KeyboardInterrupt:
            raise fail("interrupted; nothing was written", 130) from None
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

    return wrapper  # type: ignore[return-value]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"qkanforecast {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
    threads: Annotated[
        int | None,
        typer.Option(
            "--threads",
            min=1,
            help="CPU threads for torch. The models are small: one thread is fastest, and several threads "
            "on a busy machine can be many times slower.  [default: $OMP_NUM_THREADS, else 1]",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Forecast telecom time series with QKAN-LSTM, HQKAN-LSTM and LSTM models."""
    # set before torch is imported (the commands import it lazily), so OpenMP starts with this many
    if threads is not None or "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = str(threads or 1)


# -- options shared by several commands ---------------------------------------------------------------------
_COLUMNS = Columns()
_FROM_MODEL = "forecast and evaluate default to the model's training data"
DataArg = Annotated[
    str,
    typer.Argument(
        help="CSV or Parquet file, a partitioned directory (ingest --buckets), a URI such as "
        "s3://bucket/key, or - for stdin.",
        show_default=False,
    ),
]
RegistryOpt = Annotated[
    Path | None,
    typer.Option(
        "--registry",
        help="Registry root (default: $QKANFORECAST_HOME or the user data directory).",
        show_default=False,
    ),
]
ModelRef = Annotated[
    str, typer.Option("--model", "-m", help="Model reference: NAME, NAME@vN, NAME@latest or a path.")
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress or notes on stderr.")]


@dataclass(frozen=True)
class Input:
    """How to read DATA: the options every command that reads a table shares (see ``with_input``)."""

    id_col: str | None = None
    time_col: str | None = None
    target_col: str | None = None
    wide: bool = False
    freq: str | None = None
    fill: Fill = Fill.NONE
    tz: str | None = None

    def read(
        self, data: str, columns: Columns = _COLUMNS, min_length: int | None = None,
        covariates: list[str] | tuple[str, ...] = (), quiet: bool = True,
    ) -> Table:
        """Read DATA with these options; column names not given come from ``columns``; ``covariates``
        are numeric columns kept next to the target. Unless ``quiet``, the reader's notes (how the file
        was read: one series, a detected id column) go to stderr."""
        from qkanforecast.data import read_source

        table = read_source(data, self.options(columns, min_length, covariates))
        if not quiet:
            self.notes(table.report)
        return table

    def options(self, columns: Columns = _COLUMNS, min_length: int | None = None,
                covariates: list[str] | tuple[str, ...] = ()) -> IngestOptions:
        """The reader's options from these command-line options (see ``read``)."""
        from qkanforecast.data import IngestOptions

        names = columns.given(self.id_col, self.time_col, self.target_col)
        named = tuple(k for k in ("id_col", "time_col", "target_col") if getattr(self, k) is not None)
        return IngestOptions(
            **asdict(names), wide=self.wide, freq=self.freq, fill=self.fill, min_length=min_length,
            covariates=tuple(covariates), named=named, tz=self.tz,
        )

    @staticmethod
    def notes(report: dict[str, Any]) -> None:
        """The reader's notes (how the file was read) on stderr."""
        for note in report.get("notes", []):
            say(f"note: {note}")


def column_list(text: str | None) -> list[str]:
    """``"a, b"`` -> ``["a", "b"]`` (``None`` and ``""`` give no columns)."""
    return [c.strip() for c in (text or "").split(",") if c.strip()]


INPUT = Input()  # the default of a command's ``inputs`` parameter (replaced by its options)

_INPUT_OPTIONS = {
    "id_col": Annotated[
        str | None,
        typer.Option(
            "--id-col",
            help=f"Series id column; absent: one series.  [default: {_COLUMNS.id_col}; {_FROM_MODEL}]",
        ),
    ],
    "time_col": Annotated[
        str | None, typer.Option("--time-col", help=f"Timestamp column.  [default: {_COLUMNS.time_col}]")
    ],
    "target_col": Annotated[
        str | None,
        typer.Option("--target-col", help=f"Target value column.  [default: {_COLUMNS.target_col}]"),
    ],
    "wide": Annotated[bool, typer.Option("--wide", help="One column per series next to the time column.")],
    "freq": Annotated[
        str | None, typer.Option("--freq", help="Expected frequency, e.g. 10min, h, D (default: inferred).")
    ],
    "fill": Annotated[
        Fill, typer.Option("--fill", help="Gaps and NaN: none (stop with an error), ffill, linear, zero.")
    ],
    "tz": Annotated[
        str | None,
        typer.Option(
            "--tz",
            help="The data's time zone (e.g. Europe/Rome): naive times are read as its local times (a "
            "repeated hour in file order, summer time first; a skipped hour is an error) and outputs are "
            "written in it.  [default: times with a zone are written in UTC; naive times stay naive]",
            show_default=False,
        ),
    ],
}


def with_input(func: F) -> F:
    """Give a command the shared input options: its parameter ``inputs: Input`` becomes the options
    ``--id-col, --time-col, --target-col, --wide, --freq, --fill, --tz`` in the help (before ``-q``), and an
    ``Input`` again when the command runs."""
    keyword = inspect.Parameter.KEYWORD_ONLY
    own = [p.replace(kind=keyword) for p in inspect.signature(func, eval_str=True).parameters.values()]
    added = [
        inspect.Parameter(name, keyword, default=getattr(INPUT, name), annotation=hint)
        for name, hint in _INPUT_OPTIONS.items()
    ]
    last = [p for p in own if p.name == "quiet"]
    params = [p for p in own if p.name not in ("inputs", "quiet")] + added + last

    @functools.wraps(func)
    def wrapper(**kwargs: Any) -> Any:
        inputs = Input(**{name: kwargs.pop(name) for name in _INPUT_OPTIONS})
        return func(inputs=inputs, **kwargs)

    del wrapper.__wrapped__  # type: ignore[attr-defined]  # typer must read the new signature, not func's
    wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    return wrapper  # type: ignore[return-value]


def open_registry(root: Path | None) -> Registry:
    from qkanforecast.registry import Registry

    return Registry(root)


def check_output(output: str | None, fmt: str | None = None) -> None:
    """Before the work: the output's format is known and its location can take a file."""
    from qkanforecast.data.writers import output_format
    from qkanforecast.files import check_output as check_location

    if output is not None:
        output_format(output, fmt, hint=" or --format")
        check_location(output)


def source_of(data: str) -> str:
    return "<stdin>" if data == "-" else str(Path(data).resolve())
