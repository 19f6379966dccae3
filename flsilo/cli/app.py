"""Wires every ``flsilo`` command together and runs them with one error-to-exit-code mapping.

Each command lives in its own module; kit modules (and so torch) are imported inside the
commands that need them, so ``flsilo verify``, ``inspect`` and ``keys`` start fast.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Annotated

import typer

from flsilo.cli import (
    audit_cmd,
    demo_cmd,
    hub_cmd,
    inspect_cmd,
    keys_cmd,
    simulate_cmd,
    site_cmd,
    verify_cmd,
)
from flsilo.cli.common import STATE, print_error
from flsilo.errors import ExitCode, FlsiloError

app = typer.Typer(
    name="flsilo",
    help="Federated learning between air-gapped sites: signed bundles out, signed packages back.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@app.callback()
def _root(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show tracebacks for errors.")
    ] = False,
) -> None:
    """flsilo: every file that crosses the air gap is signed and verifiable offline."""
    STATE.verbose = verbose or STATE.verbose


app.add_typer(keys_cmd.app, name="keys")
app.add_typer(hub_cmd.app, name="hub")
app.add_typer(site_cmd.app, name="site")
app.command("verify", no_args_is_help=True)(verify_cmd.verify)
app.command("inspect", no_args_is_help=True)(inspect_cmd.inspect)
app.command("aggregate", no_args_is_help=True)(hub_cmd.aggregate)
app.command("audit", no_args_is_help=True)(audit_cmd.audit)
app.command("train", no_args_is_help=True)(site_cmd.train)
app.command("evaluate", no_args_is_help=True)(site_cmd.evaluate)
app.command("demo")(demo_cmd.demo)
app.command("simulate")(simulate_cmd.simulate)


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return the exit status; never lets a traceback reach the user."""
    STATE.json = False
    STATE.verbose = os.environ.get("FLSILO_VERBOSE", "") not in ("", "0")
    try:
        app(args=argv, prog_name="flsilo")
    except SystemExit as done:  # typer's own exits: --help, usage errors (2), Ctrl-C (130)
        code = done.code
        return code if isinstance(code, int) else (0 if code is None else int(ExitCode.ERROR))
    except FlsiloError as err:
        if STATE.verbose:
            traceback.print_exc()
        print_error(err)
        return int(err.exit_code)
    except KeyboardInterrupt:
        sys.stderr.write("flsilo: interrupted; rerun the same command to resume\n")
        return int(ExitCode.INTERRUPTED)
    except OSError as exc:
        if STATE.verbose:
            traceback.print_exc()
        where = f"{exc.filename}: " if exc.filename else ""
        sys.stderr.write(
            f"flsilo: error[os]: {where}{exc.strerror or exc} "
            "(hint: check the path, free disk space and permissions)\n"
        )
        return int(ExitCode.ERROR)
    except Exception as exc:  # a bug: one line, and the traceback on request
        if STATE.verbose:
            traceback.print_exc()
        sys.stderr.write(
            f"flsilo: internal error: {type(exc).__name__}: {exc} "
            "(hint: rerun with --verbose and report the traceback)\n"
        )
        return int(ExitCode.ERROR)
    return int(ExitCode.OK)


def main() -> None:
    sys.exit(run())
