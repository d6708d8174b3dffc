"""The `tol-dagster` command line: parse, run the command, turn any failure into its exit code.

Exit codes (a public contract, see README): 0 done, 1 the gate refused the upstream state,
2 bad input or settings, 3 upstream unreachable or invalid, 4 local storage, 130/143
interrupted (SIGINT/SIGTERM), 70 an internal error. The first line on stderr names the cause
and what to do; tracebacks only with `--verbose` or TOL_DEBUG=1. With `--json`, a failure that
ends a command early still prints its one JSON document (`cli.report`).
"""

from __future__ import annotations

import argparse
import errno
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from tol_dagster import exit_codes
from tol_dagster.cli import (
    adopt_command,
    audit_command,
    demo,
    interrupts,
    report,
    runner,
    slice_commands,
    status,
    sync_command,
    verbosity,
    worker_command,
)
from tol_dagster.cli.parser import UsageError, build_parser
from tol_dagster.devtools import localhub, sample
from tol_dagster.errors import SettingsError


def _sample_build(args: argparse.Namespace) -> int:
    if args.out.exists() and not args.out.is_dir():
        raise SettingsError(f"sample build {args.out}: a file, not a folder; give a folder")
    built = sample.build_sample(
        args.out,
        rows=args.rows,
        files=args.files,
        seed=args.seed,
        config=args.config,
        dim=args.dim,
        row_group_size=args.row_group_size,
    )
    report.say(
        f"wrote {built.rows:,} rows in {len(built.files)} files ({built.bytes / 1e6:,.1f} MB) "
        f"to {Path(args.out) / built.config} in {built.seconds:.1f} s "
        f"({built.rows_per_second:,.0f} rows/s)"
    )
    return 0


def _hub_serve(args: argparse.Namespace) -> int:
    if not args.root.is_dir():
        raise SettingsError(
            f"hub serve {args.root}: not a folder; give the folder holding README.md and the "
            "config folders (one that `tol-dagster sample build` wrote, for example)"
        )
    try:
        localhub.serve_forever(args.root, port=args.port, repo_id=args.repo_id, token=args.token)
    except OSError as error:
        if error.errno != errno.EADDRINUSE:
            raise
        raise SettingsError(
            f"hub serve --port {args.port}: the port is in use; pick another, or 0 for a free one"
        ) from None
    return 0


def _sync(args: argparse.Namespace) -> int:
    return sync_command.run_sync(
        config=args.config,
        accept_row_loss=args.accept_row_loss,
        accept_schema_change=args.accept_schema_change,
        accept_emb_change=args.accept_emb_change,
    )


def _adopt(args: argparse.Namespace) -> int:
    return adopt_command.run_adopt(args.path, config=args.config, copy=args.copy)


def _status(args: argparse.Namespace) -> int:
    return status.run_status()


def _audit(args: argparse.Namespace) -> int:
    return audit_command.run_audit(config=args.config)


def _slice(args: argparse.Namespace) -> int:
    return slice_commands.run_slice(args.key, config=args.config, allow_empty=args.allow_empty)


def _slices_list(args: argparse.Namespace) -> int:
    return slice_commands.list_slices_command(config=args.config)


def _slices_remove(args: argparse.Namespace) -> int:
    return slice_commands.remove_slice_command(args.key, config=args.config)


def _worker(args: argparse.Namespace) -> int:
    return worker_command.run_worker(concurrency=args.concurrency)


def _slices_add_rank(args: argparse.Namespace) -> int:
    return slice_commands.add_rank_command(args.rank, config=args.config, min_rows=args.min_rows)


def _demo(args: argparse.Namespace) -> int:
    with runner.launched_by("demo"):
        return demo.run_demo()


#: The function behind each `handler` the parser sets (`cli.parser`).
HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "sample build": _sample_build,
    "hub serve": _hub_serve,
    "sync": _sync,
    "adopt": _adopt,
    "status": _status,
    "audit": _audit,
    "slice": _slice,
    "slices list": _slices_list,
    "slices remove": _slices_remove,
    "slices add-rank": _slices_add_rank,
    "worker": _worker,
    "demo": _demo,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; its exit code, after one line naming the cause if it failed."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
    except UsageError as refused:
        print(f"tol-dagster: {refused}", file=sys.stderr)
        if "--json" in argv:
            report.print_document(_named(argv), refused.exit_code, [str(refused)])
        return refused.exit_code
    verbosity.set_verbose(args.verbose)
    verbosity.set_output(quiet=args.quiet, as_json=getattr(args, "json", False))
    with interrupts.watch_signals() as signals:
        try:
            return int(HANDLERS[args.handler](args))
        except Exception as exc:
            caught: BaseException = exc
            error = exit_codes.classify(exc)
        except KeyboardInterrupt as exc:
            caught = exc
            error = exit_codes.interrupted(signals.wait(1.0) or 2, None)
    print(f"tol-dagster: {error}", file=sys.stderr)
    if verbosity.verbose():
        traceback.print_exception(caught, file=sys.stderr)
    if verbosity.as_json():  # the command ended before its own document: this is the one
        report.print_document(args.handler, error.exit_code, [str(error)])
    return error.exit_code


def _named(argv: Sequence[str]) -> str:
    """The command `argv` names (`slices add-rank`), as far as its words tell."""
    words = [word for word in argv if not word.startswith("-")]
    for size in (2, 1):
        if " ".join(words[:size]) in HANDLERS:
            return " ".join(words[:size])
    return "tol-dagster"


if __name__ == "__main__":
    sys.exit(main())
