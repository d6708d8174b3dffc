"""The `tol-dagster` command line.

Exit codes (a public contract, see README): 0 done, 1 the gate refused the upstream state,
2 bad input or settings, 3 upstream unreachable or invalid, 4 local storage, 130/143
interrupted (SIGINT/SIGTERM), 70 an internal error. The first line on stderr names the cause
and what to do; tracebacks only with `--verbose` or TOL_DEBUG=1. Heavy modules are imported
inside each command so that `--help` stays instant.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from tol_dagster import exit_codes
from tol_dagster.schema import DEFAULT_CONFIG


def _cmd_sample_build(args: argparse.Namespace) -> int:
    from tol_dagster.devtools.sample import build_sample

    report = build_sample(
        args.out,
        rows=args.rows,
        files=args.files,
        seed=args.seed,
        config=args.config,
        dim=args.dim,
        row_group_size=args.row_group_size,
    )
    print(
        f"wrote {report.rows:,} rows in {len(report.files)} files ({report.bytes / 1e6:,.1f} MB) "
        f"to {Path(args.out) / report.config} in {report.seconds:.1f} s "
        f"({report.rows_per_second:,.0f} rows/s)"
    )
    return 0


def _cmd_hub_serve(args: argparse.Namespace) -> int:
    from tol_dagster.devtools.localhub import serve_forever

    serve_forever(args.root, port=args.port, repo_id=args.repo_id, token=args.token)
    return 0


def _cmd_sync(args: argparse.Namespace) -> int:
    from tol_dagster.cli.runner import run_sync

    return run_sync(
        config=args.config,
        accept_row_loss=args.accept_row_loss,
        accept_schema_change=args.accept_schema_change,
        accept_emb_change=args.accept_emb_change,
    )


def _cmd_status(args: argparse.Namespace) -> int:
    from tol_dagster.cli.runner import run_status

    return run_status(as_json=args.json)


def _cmd_slice(args: argparse.Namespace) -> int:
    from tol_dagster.cli.runner import run_slice

    return run_slice(args.key, config=args.config, allow_empty=args.allow_empty)


def _cmd_slices_list(args: argparse.Namespace) -> int:
    from tol_dagster.cli.runner import list_slices_command

    return list_slices_command(config=args.config)


def _cmd_slices_remove(args: argparse.Namespace) -> int:
    from tol_dagster.cli.runner import remove_slice_command

    return remove_slice_command(args.key, config=args.config)


def _cmd_demo(args: argparse.Namespace) -> int:
    from tol_dagster.cli.demo import run_demo

    return run_demo()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tol-dagster",
        description="Mirror TreeOfLife-200M-Embeddings and publish validated per-taxon slices.",
        epilog="Exit codes: 0 done, 1 the gate refused, 2 bad input or settings, 3 upstream "
        "unreachable or invalid, 4 local storage (disk full, permissions), 130/143 interrupted, "
        "70 internal error (a bug).",
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="print tracebacks and Dagster's failure events (also TOL_DEBUG=1)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sample = commands.add_parser("sample", help="generate a TreeOfLife-shaped sample repo")
    sample_commands = sample.add_subparsers(dest="sample_command", required=True, metavar="ACTION")
    build = sample_commands.add_parser(
        "build", help="write OUT/<config>/train-*.parquet and OUT/README.md"
    )
    build.add_argument("out", type=Path, metavar="OUT")
    build.add_argument("--rows", type=int, required=True)
    build.add_argument("--files", type=int, required=True)
    build.add_argument("--seed", type=int, required=True)
    build.add_argument("--config", default=DEFAULT_CONFIG)
    build.add_argument(
        "--dim", type=int, default=None, help="embedding width (default: the config's)"
    )
    build.add_argument("--row-group-size", type=int, default=50_000)
    build.set_defaults(func=_cmd_sample_build)

    hub = commands.add_parser(
        "hub", help="the local Hub-compatible server (development and tests only)"
    )
    hub_commands = hub.add_subparsers(dest="hub_command", required=True, metavar="ACTION")
    serve = hub_commands.add_parser("serve", help="serve ROOT as a dataset repo on 127.0.0.1")
    serve.add_argument("root", type=Path, metavar="ROOT")
    serve.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    serve.add_argument("--repo-id", default="imageomics/TreeOfLife-200M-Embeddings")
    serve.add_argument("--token", default=None, help="require this token (gated repo)")
    serve.set_defaults(func=_cmd_hub_serve)

    sync = commands.add_parser(
        "sync", help="resync the mirror through Dagster (fetch, verify, gate, publish)"
    )
    sync.add_argument(
        "--config", default=None, help="one config (default: every config in TOL_CONFIGS)"
    )
    sync.add_argument(
        "--accept-row-loss",
        action="store_true",
        help="publish even if rows were lost beyond TOL_MAX_ROW_LOSS",
    )
    sync.add_argument(
        "--accept-schema-change",
        action="store_true",
        help="publish even if the schema drifted from the last validated one",
    )
    sync.add_argument(
        "--accept-emb-change",
        action="store_true",
        help="publish even if rows already in the mirror (by uuid) come with different emb bytes",
    )
    sync.set_defaults(func=_cmd_sync)

    status = commands.add_parser("status", help="compare the mirror with upstream (a Dagster run)")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=_cmd_status)

    slice_ = commands.add_parser("slice", help="materialize one slice on demand and print its path")
    slice_.add_argument(
        "key", metavar="KEY", help="rank=value, e.g. family=Felidae or kingdom=Animalia/genus=Morus"
    )
    slice_.add_argument("--config", default=None)
    slice_.add_argument(
        "--allow-empty",
        action="store_true",
        help="publish a 0-row slice when no row matches the key (else: exit 2, close matches named)",
    )
    slice_.set_defaults(func=_cmd_slice)

    slices = commands.add_parser("slices", help="list or remove published slices")
    slices_commands = slices.add_subparsers(dest="slices_command", required=True, metavar="ACTION")
    slices_list = slices_commands.add_parser("list", help="the catalog of published slices")
    slices_list.add_argument("--config", default=None)
    slices_list.set_defaults(func=_cmd_slices_list)
    slices_remove = slices_commands.add_parser(
        "remove", help="remove a slice: partition, file and catalog row"
    )
    slices_remove.add_argument("key", metavar="KEY")
    slices_remove.add_argument("--config", default=None)
    slices_remove.set_defaults(func=_cmd_slices_remove)

    demo = commands.add_parser(
        "demo", help="run the whole pipeline on the embedded sample (make demo)"
    )
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from tol_dagster.cli.interrupts import watch_signals

    args = build_parser().parse_args(argv)
    exit_codes.set_verbose(args.verbose)
    with watch_signals() as signals:
        try:
            return int(args.func(args))
        except Exception as exc:
            caught: BaseException = exc
            error = exit_codes.classify(exc)
        except KeyboardInterrupt as exc:
            caught = exc
            error = exit_codes.interrupted(signals.wait(1.0) or 2, None)
    print(f"tol-dagster: {error}", file=sys.stderr)
    if exit_codes.verbose():
        traceback.print_exception(caught, file=sys.stderr)
    return error.exit_code


if __name__ == "__main__":
    sys.exit(main())
