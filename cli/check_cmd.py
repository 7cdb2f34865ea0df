"""``rcig-release check RUN``: would ``release`` refuse this run's images? (the memorisation check,
seconds, no audit; exit 0 pass, 3 would be refused, 2 bad input). Also the helpers ``distill``,
``evaluate`` and ``audit`` use to print the same outcome at their end or start."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

from rcig_release.cli.options import RunData, RunDir

console = Console(stderr=True, highlight=False, soft_wrap=True)


def print_precheck(pre: Any, out: Console | None = None) -> None:
    """The outcome (green or red), the check's counts and the remedy; never pixels or indices."""
    out = out or console
    lines = pre.lines()
    out.print(Text(lines[0], style="green" if pre.passed else "bold red"))
    for line in lines[1:]:
        out.print(Text(line))


def run_precheck(run: Path, data: str | None = None) -> None:
    """``distill``/``evaluate``'s closing check: prints the outcome; a check that cannot run (the
    data is gone, no held-out split) is one line saying so, and the command still succeeds."""
    from rcig_release.errors import InputError
    from rcig_release.release.precheck import check_run

    try:
        with console.status(Text("memorisation check (what release will run) …")):
            pre = check_run(run, data=data)
    except InputError as e:
        console.print(Text(f"memorisation check not run: {e}"), style="yellow")
        return
    print_precheck(pre)


def check(
    run: RunDir,
    data: RunData = None,
    as_json: Annotated[
        bool, typer.Option("--json", help=r"print the outcome as JSON to stdout \[default: off]")
    ] = False,
) -> None:
    """Run release's memorisation check on RUN's images now: exit 0 if release would not refuse
    them, 3 if it would (with the remedy), 2 on bad input. Seconds; no audit needed."""
    from rcig_release.release.precheck import check_run, require_releasable

    with console.status(Text(f"memorisation check of {run} …")):
        pre = check_run(run, data=data)
    if as_json:
        typer.echo(json.dumps(pre.to_json(), indent=2, sort_keys=True))
        if not pre.passed:
            raise typer.Exit(3)
        return
    if pre.passed:
        print_precheck(pre)
        return
    require_releasable(pre)  # one line and exit 3 (handle_errors)


def register(app: typer.Typer) -> None:
    from rcig_release.cli.main import handle_errors  # here: main imports this module

    app.command("check")(handle_errors(check))
