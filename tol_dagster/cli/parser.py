"""The `tol-dagster` argument parser: every command, argument, default and help text.

Only argparse here, so that the parser (and the `--help` it prints) can be built and tested
without Dagster or the pipeline. Each command's parser sets `handler` (e.g. "slices remove"),
the name `cli.main` dispatches on.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from tol_dagster.errors import SettingsError
from tol_dagster.schema import CONFIG_NAME, DEFAULT_CONFIG

if TYPE_CHECKING:  # what `add_subparsers` returns: generic in the type stubs only
    Subparsers = argparse._SubParsersAction["_Parser"]


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: `tol-dagster [--verbose|--quiet] COMMAND ...`."""
    parser = _Parser(
        prog="tol-dagster",
        description="Mirror TreeOfLife-200M-Embeddings and publish validated per-taxon slices.",
        epilog="Exit codes: 0 done, 1 the gate refused, 2 bad input or settings, 3 upstream "
        "unreachable or invalid, 4 local storage (disk full, permissions), 130/143 interrupted, "
        "70 internal error (a bug).",
    )
    _add_verbosity(parser, default=False)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_sample(commands)
    _add_hub(commands)
    _add_sync(commands)
    _add_adopt(commands)
    _add_status(commands)
    _add_audit(commands)
    _add_slice(commands)
    _add_slices(commands)
    _add_worker(commands)
    demo = commands.add_parser(
        "demo", help="run the whole pipeline on the embedded sample (make demo)"
    )
    _add_verbosity(demo)
    demo.set_defaults(handler="demo")
    return parser


#: The widest embedding `sample build` writes (the real configs: 768 and 1024).
MAX_SAMPLE_DIM = 8192


class UsageError(SettingsError):
    """A command line argparse refuses: bad input (exit 2), reported as any other."""


class _Parser(argparse.ArgumentParser):
    """Raises `UsageError` where argparse would print its usage and exit, so that `main` says it
    as any bad input: one `tol-dagster:` line first, and the JSON document under `--json`."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message}; see `{self.prog} --help`")


def _at_least(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argument type: a whole number from `low` (to `high`)."""

    def number(text: str) -> int:
        value = int(text)  # argparse names the argument if this raises ValueError
        if value < low or (high is not None and value > high):
            upper = f" and at most {high}" if high is not None else ""
            raise argparse.ArgumentTypeError(f"{text}: give a whole number >= {low}{upper}")
        return value

    number.__name__ = "whole number"
    return number


def _config_name(text: str) -> str:
    """An argument type: a config folder's name, as `TOL_CONFIGS` takes them."""
    if not CONFIG_NAME.match(text):
        raise argparse.ArgumentTypeError(
            f"{text!r}: give a config folder's name such as {DEFAULT_CONFIG} (letters, digits, "
            "'.', '_', '-')"
        )
    return text


def _add_verbosity(parser: argparse.ArgumentParser, *, default: object = argparse.SUPPRESS) -> None:
    """`--verbose` and `--quiet`, before or after the command (a command's own copy is
    SUPPRESSed by default, so it never resets what was given before the command)."""
    parser.add_argument(
        "--verbose",
        action="store_true",
        default=default,
        help="also print Dagster's log lines, its failure events and tracebacks (also TOL_DEBUG=1)",
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        default=default,
        help="print errors only: no progress, no report",
    )


def _add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON document on stdout (exit_code, error, the facts), nothing else there",
    )


def _add_sample(commands: Subparsers) -> None:
    sample = commands.add_parser("sample", help="generate a TreeOfLife-shaped sample repo")
    sample_commands = sample.add_subparsers(dest="sample_command", required=True, metavar="ACTION")
    build = sample_commands.add_parser(
        "build", help="write OUT/<config>/train-*.parquet and OUT/README.md"
    )
    build.add_argument("out", type=Path, metavar="OUT")
    build.add_argument("--rows", type=_at_least(1), required=True)
    build.add_argument("--files", type=_at_least(1), required=True)
    build.add_argument("--seed", type=_at_least(0), required=True)
    build.add_argument("--config", type=_config_name, default=DEFAULT_CONFIG)
    build.add_argument(
        "--dim",
        type=_at_least(1, MAX_SAMPLE_DIM),
        default=None,
        help="embedding width (default: the config's)",
    )
    build.add_argument("--row-group-size", type=_at_least(1), default=50_000)
    _add_verbosity(build)
    build.set_defaults(handler="sample build")


def _add_hub(commands: Subparsers) -> None:
    hub = commands.add_parser(
        "hub", help="the local Hub-compatible server (development and tests only)"
    )
    hub_commands = hub.add_subparsers(dest="hub_command", required=True, metavar="ACTION")
    serve = hub_commands.add_parser("serve", help="serve ROOT as a dataset repo on 127.0.0.1")
    serve.add_argument("root", type=Path, metavar="ROOT")
    serve.add_argument(
        "--port", type=_at_least(0, 65535), default=0, help="0 picks a free port (default)"
    )
    serve.add_argument("--repo-id", default="imageomics/TreeOfLife-200M-Embeddings")
    serve.add_argument("--token", default=None, help="require this token (gated repo)")
    serve.set_defaults(handler="hub serve")


def _add_sync(commands: Subparsers) -> None:
    sync = commands.add_parser(
        "sync", help="resync the mirror through Dagster (fetch, verify, gate, publish)"
    )
    _add_config(sync)
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
    _add_json(sync)
    _add_verbosity(sync)
    sync.set_defaults(handler="sync")


def _add_adopt(commands: Subparsers) -> None:
    adopt = commands.add_parser(
        "adopt",
        help="verify a copy you already have (hf download --local-dir) and resync from it",
    )
    adopt.add_argument(
        "path", type=Path, metavar="PATH", help="the folder hf download wrote, e.g. ./data"
    )
    _add_config(adopt)
    adopt.add_argument(
        "--copy",
        action="store_true",
        help="copy the files instead of hard-linking them (always copied across file systems)",
    )
    _add_json(adopt)
    _add_verbosity(adopt)
    adopt.set_defaults(handler="adopt")


def _add_config(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--config", default=None, help="one config (default: every config in TOL_CONFIGS)"
    )


def _add_worker(commands: Subparsers) -> None:
    worker = commands.add_parser(
        "worker",
        help="serve the code location's steps as a Celery worker (TOL_EXECUTOR=celery)",
        description="Run the steps that runs with TOL_EXECUTOR=celery send to TOL_CELERY_QUEUE "
        "on TOL_CELERY_BROKER, until stopped (SIGTERM finishes the steps it runs).",
    )
    worker.add_argument(
        "--concurrency",
        type=int,
        default=None,
        metavar="N",
        help="steps run at once, each in its own process (default TOL_WORKERS: one per CPU)",
    )
    _add_verbosity(worker)
    worker.set_defaults(handler="worker")


def _add_status(commands: Subparsers) -> None:
    status = commands.add_parser(
        "status",
        help="compare the mirror with upstream (a Dagster run)",
        description="Ask upstream for its state in a run of status_job, then print per config "
        "the mirror next to it and what a sync would do; nothing is downloaded. Upstream is "
        "asked with one quick retry: an unreachable Hub exits 3 within seconds, after what is "
        "known locally.",
    )
    _add_json(status)
    _add_verbosity(status)
    status.set_defaults(handler="status")


def _add_audit(commands: Subparsers) -> None:
    audit = commands.add_parser(
        "audit",
        help="re-hash the mirror and every published slice; exit 4 naming what drifted "
        "(a Dagster run)",
    )
    _add_config(audit)
    _add_json(audit)
    _add_verbosity(audit)
    audit.set_defaults(handler="audit")


def _add_slice(commands: Subparsers) -> None:
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
    _add_json(slice_)
    _add_verbosity(slice_)
    slice_.set_defaults(handler="slice")


def _add_slices(commands: Subparsers) -> None:
    slices = commands.add_parser(
        "slices", help="list or remove published slices, or publish a whole rank"
    )
    slices_commands = slices.add_subparsers(dest="slices_command", required=True, metavar="ACTION")
    slices_list = slices_commands.add_parser("list", help="the catalog of published slices")
    slices_list.add_argument("--config", default=None)
    _add_verbosity(slices_list)
    slices_list.set_defaults(handler="slices list")
    slices_remove = slices_commands.add_parser(
        "remove", help="remove a slice: partition, file and catalog row"
    )
    slices_remove.add_argument("key", metavar="KEY")
    slices_remove.add_argument("--config", default=None)
    _add_verbosity(slices_remove)
    slices_remove.set_defaults(handler="slices remove")
    add_rank = slices_commands.add_parser(
        "add-rank", help="publish a slice for every value of a rank, in one pass over the mirror"
    )
    add_rank.add_argument(
        "rank", metavar="RANK", help="kingdom, phylum, class, order, family, genus or species"
    )
    add_rank.add_argument(
        "--min-rows", type=int, default=None,
        help="only values with at least N rows (default: the rank's last setting, else 1)",
    )  # fmt: skip
    add_rank.add_argument("--config", default=None)
    _add_json(add_rank)
    _add_verbosity(add_rank)
    add_rank.set_defaults(handler="slices add-rank")
