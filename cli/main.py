"""The typer app. Thin: parse, call one library function per command, render with rich.

No JAX import at module level anywhere under ``cli/`` so ``--help`` is fast and CLI tests that
patch the library never compile anything. Library errors (``RcigReleaseError``) become one line on
stderr and their exit code (2 bad input, 3 policy failure, 4 a DP run whose audit contradicts its
proven ε), and so do usage errors (a bad option value, a missing argument, an unknown command:
exit 2). Any other exception is caught once, at the command's edge (``handle_errors``): one line,
exit 2 for an input failure (deep nesting, a number too long, memory), else exit 1 (``verify``: the
bundle cannot be checked; elsewhere a bug). Every user string is printed as text, never parsed as
rich markup, with control characters escaped (``escape.sanitize(..., "terminal")``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from rcig_release.errors import RcigReleaseError

try:  # typer >= 0.20 carries its own click
    from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError
except ImportError:  # pragma: no cover - older typer on click
    from click.exceptions import (  # type: ignore[assignment]
        ClickException,
        NoArgsIsHelpError,
        UsageError,
    )


class _OneLineUsageErrors(typer.core.TyperGroup):
    """A bad option value, a missing argument or an unknown command is one line on stderr and
    exit 2, like every other bad input (not typer's boxed panel)."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except NoArgsIsHelpError:
            raise
        except UsageError as e:
            where = e.ctx.command_path if e.ctx is not None else "rcig-release"
            err_console.print(error_line(f"{e.format_message()} (see {where} --help)"))
            raise typer.Exit(2) from None


app = typer.Typer(
    cls=_OneLineUsageErrors,
    name="rcig-release",
    help="Distil a private image set with RCIG, audit it, release it behind a policy.",
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
    no_args_is_help=True,
    add_completion=False,
)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def _print_version(value: bool) -> None:
    if value:
        from rcig_release import __version__

        typer.echo(f"rcig-release {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(
        False,
        "--version",
        is_eager=True,
        callback=_print_version,
        help="Print the package version and exit.",
    ),
) -> None:
    """Distil a private image set with RCIG, audit it, release it behind a policy."""


F = TypeVar("F", bound=Callable[..., Any])


# Exceptions that only hostile or malformed input produces once every reader has checked what it
# can (deep nesting, a number too long, an allocation too large): exit 2, like any bad input.
INPUT_FAILURES: tuple[type[BaseException], ...] = (
    RecursionError,
    ValueError,
    OverflowError,
    MemoryError,
    UnicodeError,
)
_INPUT_WHY = {
    "RecursionError": "it is nested too deeply",
    "MemoryError": "it needs more memory than is available",
    "OverflowError": "a number in it is out of range",
}


def error_line(message: str) -> Text:
    """``error: <message>`` for stderr: never parsed as rich markup, every control character
    written as a visible escape (``escape.sanitize(..., "terminal")``)."""
    from rcig_release.release.escape import sanitize

    return Text.assemble(("error:", "bold red"), " ", sanitize(message, "terminal"))


def unexpected(e: BaseException, command: str) -> tuple[str, int]:
    """The one line and exit code for an exception no reader turned into a library error: 2
    for an input failure (``INPUT_FAILURES``), else 1 (``verify``: the bundle cannot be checked;
    other commands: a bug). Only the exception's type is shown: its message could hold data."""
    name = type(e).__name__
    if isinstance(e, INPUT_FAILURES):
        why = _INPUT_WHY.get(name, "it is malformed")
        return f"the input cannot be processed: {why} ({name})", 2
    if command == "verify":
        return f"bundle not intact: it cannot be checked ({name})", 1
    return f"unexpected {name}; this is a bug, please report it with the command line", 1


def handle_errors(fn: F) -> F:
    """The command's edge: a library error becomes one clear line and its exit code; any other
    exception one line and a documented exit code (``unexpected``); never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except RcigReleaseError as e:
            # the message may hold paths or names with [brackets]: never parsed as rich markup
            err_console.print(error_line(str(e)))
            raise typer.Exit(e.exit_code) from None
        except (typer.Exit, typer.Abort, ClickException):
            raise
        except Exception as e:  # noqa: BLE001 - the one catch-all, at the command's edge
            message, code = unexpected(e, fn.__name__.removesuffix("_command"))
            err_console.print(error_line(message))
            raise typer.Exit(code) from None

    return wrapper  # type: ignore[return-value]


def _register() -> None:
    from rcig_release.cli import audit_cmd, check_cmd, distill_cmd, release_cmd

    for module in (distill_cmd, check_cmd, audit_cmd, release_cmd):
        module.register(app)


if __name__ != "__main__":  # run as a script, the real module (imported below) registers
    _register()


def main() -> None:
    from rcig_release.cli import xla_log
    from rcig_release.runtime import enable_compilation_cache

    enable_compilation_cache()
    xla_log.install()  # XLA's compiler chatter to a log file, not through the progress bars
    app(prog_name="rcig-release")


if __name__ == "__main__":  # pragma: no cover
    from rcig_release.cli.main import main as _main  # the importable module, commands registered

    _main()
