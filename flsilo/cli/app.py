"""Wires every ``flsilo`` command together and runs them with one error-to-exit-code mapping.

Each command lives in its own module; kit modules (and so torch) are imported inside the
commands that need them, so ``flsilo verify``, ``inspect`` and ``keys`` start fast.
"""

from __future__ import annotations

import functools
import os
import sys
import traceback
import warnings
from typing import Annotated, Any

import typer

from flsilo.cli import (
    audit_cmd,
    backbone_cmd,
    demo_cmd,
    evaluations_cmd,
    export_cmd,
    history_cmd,
    hub_cmd,
    inspect_cmd,
    keys_cmd,
    release_cmd,
    report_cmd,
    simulate_cmd,
    site_cmd,
    site_status_cmd,
    verify_cmd,
    wheelhouse_cmd,
)
from flsilo.cli.common import STATE, emit_json, print_error, print_notes
from flsilo.fs.safetext import shown
from flsilo.runtime import notices
from flsilo.runtime.cpu import configure_threads
from flsilo.runtime.errors import Code, ExitCode, FlsiloError, UsageError, trace_code

try:  # typer >= 0.26 vendors click
    from typer._click import exceptions as _click
except ImportError:  # pragma: no cover - older typer depends on click itself
    from click import exceptions as _click  # type: ignore[no-redef]


class _Commands(typer.core.TyperGroup):
    """The root group: a plain ``KeyboardInterrupt`` raised inside a command (a library that
    reset the SIGINT handler, a worker that re-raised it) becomes :class:`signals.Interrupted`,
    which the framework would otherwise turn into a silent exit status 130."""

    def invoke(self, ctx: Any) -> Any:
        from flsilo.runtime import signals

        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as exc:
            raise signals.ctrl_c() from exc


app = typer.Typer(
    name="flsilo",
    cls=_Commands,
    help="Federated learning between air-gapped sites: signed bundles out, signed packages back.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _show_version(value: bool) -> None:
    if value:
        from flsilo import __version__

        sys.stdout.write(f"flsilo {__version__}\n")
        raise typer.Exit(0)


@app.callback()
def _root(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show tracebacks for errors.")
    ] = False,
    threads: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="CPU threads for training and numeric work (default: the CPUs this process "
            "may use, from its affinity and cgroup quota; 1 for 'flsilo demo').",
        ),
    ] = None,
    _version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """flsilo: every file that crosses the air gap is signed and verifiable offline."""
    STATE.verbose = verbose or STATE.verbose
    STATE.threads = threads
    configure_threads(threads)


app.add_typer(keys_cmd.app, name="keys")
hub_cmd.app.command("history", no_args_is_help=True)(history_cmd.history)
hub_cmd.app.command("evaluations", no_args_is_help=True)(evaluations_cmd.evaluations)
app.add_typer(hub_cmd.app, name="hub")
site_cmd.app.command("status", no_args_is_help=True)(site_status_cmd.status)
site_cmd.app.command("check-data", no_args_is_help=True)(site_status_cmd.check_data)
app.add_typer(site_cmd.app, name="site")
app.add_typer(wheelhouse_cmd.app, name="wheelhouse")
app.add_typer(release_cmd.app, name="release")
app.add_typer(backbone_cmd.app, name="backbone")
app.command("verify", no_args_is_help=True)(verify_cmd.verify)
app.command("inspect", no_args_is_help=True)(inspect_cmd.inspect)
app.command("aggregate", no_args_is_help=True)(hub_cmd.aggregate)
app.command("audit", no_args_is_help=True)(audit_cmd.audit)
app.command("report", no_args_is_help=True)(report_cmd.report)
app.command("export", no_args_is_help=True)(export_cmd.export)
app.command("train", no_args_is_help=True)(site_cmd.train)
app.command("evaluate", no_args_is_help=True)(site_cmd.evaluate)
app.command("demo")(demo_cmd.demo)
app.command("simulate")(simulate_cmd.simulate)


LIBRARY_WARNINGS = r"(torch|opacus|sklearn|numpy|safetensors|PIL|matplotlib)(\..*)?$"
"""Modules whose warnings (deprecations, internal hints) never reach an operator's screen."""

GROUPS = ("keys", "hub", "site", "wheelhouse", "release")


GLOBAL_FLAGS = ("--verbose", "-v")
GLOBAL_VALUED = ("--threads",)


def hoist_global_options(args: list[str], tree: Any = None) -> list[str]:
    """flsilo's own options moved in front of the command where they were given after it
    (``flsilo demo --threads 1`` as ``flsilo --threads 1 demo``): no command has options of
    those names. A command option's value never moves (``keys new K --comment -v`` keeps
    its comment), nothing after ``--`` or an unknown command word moves, and the moved
    options follow those given before the command, so the last ``--threads`` still wins."""
    tree = command() if tree is None else tree
    cmd = tree
    lead: list[str] = []  # flsilo's own options given before the command
    front: list[str] = []  # flsilo's own options given after it
    rest: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            rest += args[i:]
            break
        if hasattr(cmd, "commands") and not a.startswith("-"):
            cmd = cmd.commands.get(a)
            if cmd is None:  # not a command: click says so, nothing from here moves
                rest += args[i:]
                break
            rest.append(a)
            i += 1
            continue
        if cmd is not tree and (a in GLOBAL_FLAGS or a.split("=", 1)[0] in GLOBAL_VALUED):
            width = 2 if a in GLOBAL_VALUED else 1
            front += args[i : i + width]
        else:
            width = 1 + _value_width(cmd, a)
            (lead if cmd is tree else rest).extend(args[i : i + width])
        i += width
    return lead + front + rest


def _value_width(cmd: Any, token: str) -> int:
    """How many arguments after ``token`` are its value (``--comment X``: 1; a flag: 0)."""
    for param in cmd.params:
        if token in getattr(param, "opts", ()) and param.param_type_name == "option":
            return 0 if param.is_flag or param.count else int(param.nargs)
    return 0


def command_name(argv: list[str]) -> str:
    """'hub status', 'train', ...: the command words of an argument list, for messages."""
    words = [a for a in argv if not a.startswith("-")]
    if not words:
        return "flsilo"
    return " ".join(words[:2]) if words[0] in GROUPS and len(words) > 1 else words[0]


def usage_error(exc: Any) -> int:
    """A wrong argument or option, as one line with the command's help as the hint."""
    ctx = getattr(exc, "ctx", None)
    where = ctx.command_path if ctx is not None else "flsilo"
    err = UsageError(f"{where}: {exc.format_message()}", hint=f"see '{where} --help'")
    print_error(err)
    return int(getattr(exc, "exit_code", ExitCode.USAGE))


def interrupted(exc: BaseException, argv: list[str]) -> int:
    """One line (what stopped, that nothing half-written was kept, how to resume); 130/143."""
    from flsilo.runtime import signals

    status = signals.exit_status(exc)
    what = command_name(argv)
    message = (
        f"flsilo {what} {signals.describe(exc)}; nothing half-written was kept "
        "(every output is written atomically)"
    )
    hint = "rerun the same command to resume; finished steps are not redone"
    if isinstance(exc, signals.Interrupted) and exc.done:  # stopped after a commit
        message = f"flsilo {what} {signals.describe(exc)} after {exc.done}"
        hint = exc.hint or hint
    if STATE.json:
        emit_json(
            "error",
            False,
            {
                "error": {
                    "code": Code.INTERRUPTED.value,
                    "exit_code": status,
                    "message": message,
                    "path": None,
                    "hint": hint,
                }
            },
        )
    trace_code(Code.INTERRUPTED)
    if STATE.prompt_open:  # Ctrl-C at a prompt: the message starts on a line of its own
        sys.stderr.write("\n")
        STATE.prompt_open = False
    sys.stderr.write(f"flsilo: error[{Code.INTERRUPTED}]: {message} (hint: {hint})\n")
    sys.stderr.flush()
    return status


@functools.cache
def command() -> Any:
    """The click command tree of :data:`app`, built once per process.

    Calling a Typer app rebuilds the tree from every command's signature each time (about
    50 commands); a process that runs many commands (the tests, a library caller) pays
    that once.
    """
    return typer.main.get_command(app)


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return the exit status; never lets a traceback reach the user."""
    notices.take()
    try:
        return _run(argv)
    finally:
        print_notes(notices.take())


def _run(argv: list[str] | None) -> int:
    from flsilo.runtime import signals

    STATE.json = False
    STATE.threads = None
    STATE.prompt_open = False
    STATE.verbose = os.environ.get("FLSILO_VERBOSE", "") not in ("", "0")
    args = sys.argv[1:] if argv is None else argv
    try:
        with signals.handled(), warnings.catch_warnings():
            verbose = STATE.verbose or any(a in GLOBAL_FLAGS for a in args)
            if not verbose:  # library chatter is not for operators; --verbose shows it
                warnings.filterwarnings("ignore", module=LIBRARY_WARNINGS)
            status = command()(
                args=hoist_global_options(args), prog_name="flsilo", standalone_mode=False
            )
    except _click.NoArgsIsHelpError as exc:
        exc.show()
        return int(ExitCode.USAGE)
    except _click.ClickException as exc:  # argument errors: the same one-line format as all
        STATE.json = "--json" in args  # parsing stopped before the command saw its --json
        return usage_error(exc)
    except _click.Abort:  # end of input at a prompt
        trace_code(Code.ABORTED)
        sys.stderr.write(f"flsilo: error[{Code.ABORTED}]: no input (hint: {Code.ABORTED.hint})\n")
        return int(Code.ABORTED.exit)
    except FlsiloError as err:
        if STATE.verbose:
            traceback.print_exc()
        print_error(err)
        return int(err.exit_code)
    except (KeyboardInterrupt, signals.Interrupted) as exc:
        return interrupted(exc, args)
    except OSError as exc:
        if STATE.verbose:
            traceback.print_exc()
        where = f"{exc.filename}: " if exc.filename else ""
        trace_code(Code.OS)
        line = f"flsilo: error[{Code.OS}]: {where}{exc.strerror or exc} (hint: {Code.OS.hint})"
        sys.stderr.write(shown(line) + "\n")
        return int(Code.OS.exit)
    except Exception as exc:  # a bug: one line, and the traceback on request
        if STATE.verbose:
            traceback.print_exc()
        sys.stderr.write(
            shown(
                f"flsilo: internal error: {type(exc).__name__}: {exc} "
                "(hint: rerun with --verbose and report the traceback)"
            )
            + "\n"
        )
        return int(ExitCode.ERROR)
    return status if isinstance(status, int) else int(ExitCode.OK)


def main() -> None:
    sys.exit(run())
