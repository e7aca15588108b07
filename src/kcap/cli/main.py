"""The `kcap` command line: one Typer app; each command lives in its own module.

User errors (`KcapError`) become a one-line ``Error: field: message`` and exit code 2, never a
traceback; the error is raised before anything is written. A path that cannot be written (no
permission, a read-only file system, a file where a folder should be) or a full disk becomes
``Error: PATH: reason`` and exit code 2 too; the writers clean up what they had begun.
"""

from __future__ import annotations

import errno

import typer
from typer.core import TyperGroup

from kcap import __version__
from kcap.cli import data as data_cmd
from kcap.cli import demo as demo_cmd
from kcap.cli import export as export_cmd
from kcap.cli import extract as extract_cmd
from kcap.cli import model as model_cmd
from kcap.cli import plan as plan_cmd
from kcap.cli import quantize as quantize_cmd
from kcap.cli import report as report_cmd
from kcap.cli import sweep as sweep_cmd
from kcap.cli import train as train_cmd
from kcap.cli.runs import runs
from kcap.errors import KcapError

#: OSErrors that are the user's to fix (where to write, room to write), not kcap bugs.
WRITE_ERRORS = frozenset(
    {
        errno.EACCES,
        errno.EPERM,
        errno.EROFS,
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EFBIG,
        errno.ENOTDIR,
        errno.EISDIR,
        errno.ENAMETOOLONG,
    }
)


class KcapGroup(TyperGroup):
    """Turns `KcapError` and unwritable-path / full-disk `OSError`s into one-line errors."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KcapError as e:
            typer.echo(f"Error: {e}", err=True)
            raise typer.Exit(2) from None
        except OSError as e:
            if e.errno not in WRITE_ERRORS:
                raise
            reason = e.strerror or errno.errorcode.get(e.errno, str(e))
            where = e.filename if e.filename is not None else "writing"
            typer.echo(f"Error: {where}: {reason}", err=True)
            raise typer.Exit(2) from None


app = typer.Typer(
    cls=KcapGroup,
    help="kcap: measure how many bits of knowledge a language model stores per parameter.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"kcap {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """kcap: knowledge-capacity measurements (Allen-Zhu & Li, Physics of LMs 3.3)."""


app.add_typer(data_cmd.app, name="data")
app.add_typer(model_cmd.app, name="model")
app.command("runs", help="List the runs recorded in the results store.")(runs)
app.command("train", help="Train a model from a YAML config, then measure it.")(train_cmd.train)
app.command("measure", help="Measure the knowledge a trained run stores.")(train_cmd.measure_cmd)
app.command("quantize", help="Quantize a run's weights (int8/4/3/2), then measure it again.")(
    quantize_cmd.quantize_cmd
)
app.command(
    "extract", help="Knowledge extraction: QA fine-tune on half the people, test the other half."
)(extract_cmd.extract_cmd)
app.command(
    "demo", help="The embedded default: a capacity law from three tiny models, in minutes on a CPU."
)(demo_cmd.demo)
app.command("export", help="Export a run as a Hugging Face checkpoint.")(export_cmd.export)
app.command("sweep", help="Run a grid of configs, resumably, locally or on Ray.")(sweep_cmd.sweep)
app.command("report", help="Plots and tables: the laws and the twelve results.")(report_cmd.report)
app.command("plan", help="Parameters needed to store some knowledge.")(plan_cmd.plan_cmd)


if __name__ == "__main__":  # `python -m kcap.cli.main`, and `torchrun ... -m kcap.cli.main`
    app()
