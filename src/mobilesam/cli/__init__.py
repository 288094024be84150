"""The `mobilesam` command: one typer app over the command modules of this package.

`common` holds what the commands share; `models` (models, download, info),
`predict` (predict, everything), `val`, `serve`, `export`, `bench` and
`train` (the `train` sub-app) hold one command group each.
"""

from __future__ import annotations

import sys

import typer

from . import bench, embed, export, models, predict, serve, train, val
from .common import set_verbose

app = typer.Typer(
    help="Prompt-guided image segmentation with MobileSAM and SAM.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Show debug logs and full tracebacks.")) -> None:
    """Prompt-guided image segmentation with MobileSAM and SAM."""
    set_verbose(verbose)


# `mobilesam --help` lists the commands in this order.
app.command()(models.models)
app.command()(models.download)
app.command()(models.info)
app.command()(predict.predict)
app.command()(predict.everything)
app.command()(embed.embed)
app.command()(val.val)
app.command()(serve.serve)
app.command()(export.export)
app.command()(bench.bench)
app.add_typer(train.train_app, name="train")


def run() -> None:
    """Entry point that keeps Ctrl-C quiet."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
