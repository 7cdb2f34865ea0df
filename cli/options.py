"""Arguments and options several commands share, each defined (with its help text) once:
``distill``, ``evaluate`` and ``check`` name them as the type of a parameter, e.g.
``run: RunDir`` (typer copies the option for each command, so sharing one is safe)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer


def _check_after(cost: str) -> Any:
    """``--check/--no-check`` of a command that ends with the memorisation check."""
    return typer.Option(
        "--check/--no-check",
        help=rf"end with release's memorisation check ({cost}) \[default: on]",
    )


# the run directory evaluate and check read
RunDir = Annotated[Path, typer.Argument(help="run directory written by distill")]
# evaluate and check: the data the run was distilled from, when not where run.json says
RunData = Annotated[
    str | None,
    typer.Option(help=r"data source if not the run's own \[default: run.json's source]"),
]
# distill's and evaluate's closing check (evaluate prints its outcome on stderr)
CheckAfterDistill = Annotated[bool, _check_after("seconds")]
CheckAfterEvaluate = Annotated[bool, _check_after("seconds; on stderr")]
