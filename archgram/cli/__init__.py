"""The ``archgram`` command line: the typer app, its root options and the entry
points. Each command group is one module that registers its commands here:

  grammar   check, sample, ops          search   search
  show      show                        export   export
  analyze   analyze                     bench    bench
  catalog   catalog                     experts  experts
  fuse      fusions

What they share (consoles, exit codes, option types, ``warn``/``error``) is
``archgram.cli.common``. ``run(argv)`` is where every exception becomes one
``error: ...`` line on stderr and an exit code (see ``common``); only
``--debug`` shows a traceback.
"""
from __future__ import annotations

import os
import sys
import traceback
from typing import Annotated, Any

import typer
from rich.text import Text

import archgram
from archgram.cli import analyze, bench, catalog, experts, export, fuse, grammar, search, show
from archgram.cli.common import EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_OK, console, err
from archgram.cli.common import error as _error
from archgram.errors import ArchgramError, GrammarError

try:  # typer >= 0.22 vendors click; its exceptions are not click's
    from typer._click import exceptions as _cx
except ImportError:  # pragma: no cover
    import click.exceptions as _cx  # type: ignore[no-redef]

__all__ = ["app", "console", "err", "main", "run"]

_state: dict[str, Any] = {"debug": False}

app = typer.Typer(
    name="archgram",
    help="Neural architecture search over probabilistic grammars.\n\n"
    "GRAMMAR arguments take a .pcfg file or the name of a shipped grammar (e.g. einspace).",
    epilog="Exit codes: 0 ok, 1 failures found, 2 bad input, 3 internal error.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        import platform

        import torch

        typer.echo(f"archgram {archgram.__version__} (torch {torch.__version__}, python {platform.python_version()})")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", "-V", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of internal errors.")] = False,
) -> None:
    """Neural architecture search over probabilistic grammars."""
    _state["debug"] = _state["debug"] or debug


for _module in (grammar, search, show, catalog, export, bench, fuse, analyze, experts):
    _module.register(app)


# ------------------------------------------------------------------- entry
def run(argv: list[str] | None = None) -> int:
    """Run the CLI on ``argv`` (default: sys.argv[1:]) and return the exit code.
    This is where every exception becomes one line, never a traceback."""
    args = list(sys.argv[1:] if argv is None else argv)
    _state["debug"] = "--debug" in args[: args.index("--") if "--" in args else len(args)] or bool(
        os.environ.get("ARCHGRAM_DEBUG")
    )
    command = typer.main.get_command(app)
    try:
        rv = command.main(args=args, prog_name="archgram", standalone_mode=False)
        return rv if isinstance(rv, int) else EXIT_OK
    except _cx.NoArgsIsHelpError as exc:  # typer has printed the help already
        if exc.format_message().strip():
            typer.echo(exc.format_message())
        return EXIT_OK
    except typer.Exit as exc:
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        _error("interrupted")
        return EXIT_INTERRUPTED
    except _cx.UsageError as exc:
        path = exc.ctx.command_path if exc.ctx is not None else "archgram"
        _error(f"{exc.format_message()} (see '{path} --help')")
        return EXIT_BAD_INPUT
    except _cx.ClickException as exc:
        _error(exc.format_message())
        return exc.exit_code
    except GrammarError as exc:
        # Already 'file:line:col: error: message' plus an excerpt.
        err.print(Text(str(exc)), soft_wrap=True, highlight=False)
        return EXIT_BAD_INPUT
    except ArchgramError as exc:
        _error(str(exc))
        return EXIT_BAD_INPUT
    except Exception as exc:
        return _internal_error(exc)


def _internal_error(exc: Exception) -> int:
    if _state["debug"]:
        traceback.print_exc()
    err.print(
        Text.assemble(("internal error: ", "bold red"), f"{type(exc).__name__}: {exc}",
                      "" if _state["debug"] else " (rerun with --debug for the traceback)"),
        soft_wrap=True,
        highlight=False,
    )
    return EXIT_INTERNAL


def main() -> None:
    """Console-script entry point (``archgram``)."""
    sys.exit(run())


if __name__ == "__main__":
    main()
