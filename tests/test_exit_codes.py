"""Every public exit code on its own, as a user's shell sees it: the code, a first stderr line
that names the cause (and what to do), no traceback unless `--verbose`.

0 done, 1 the gate refused, 2 bad input or settings, 3 upstream unreachable, 4 local storage
(disk full with Dagster's storage on the same disk, a read-only folder), 130/143 interrupted
(the run CANCELED, the next sync not blocked), 70 a bug (with the run id).
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pydantic
import pytest
import requirements
from dagster._utils.error import serializable_error_info_from_exc_info
from huggingface_hub import errors as hf_errors
from resync_testing import (
    CONFIG,
    FILE_REQUESTS,
    HubSleeps,
    Outcome,
    User,
    copy_home,
    dagster_home,
    edit_upstream,
    file_names,
    hub_sleeps,
    manifest,
    mirror_view,
    synced,
    synced_home,
    upstream_files,
    user,
    valid_edit,
)

from tol_dagster import errors, exit_codes
from tol_dagster.cli.launch import load_code_location
from tol_dagster.cli.runner import execute, exit_code
from tol_dagster.defs.instance import open_instance
from tol_dagster.defs.mirror.jobs import RESYNC_JOB
from tol_dagster.defs.mirror.keys import resync_check_keys, resync_keys
from tol_dagster.defs.mirror.run_config import resync_run_config
from tol_dagster.defs.orphaned_runs import PID_TAG
from tol_dagster.devtools.localhub import Fault
from tol_dagster.resync import stage
from tol_dagster.settings import Settings

__all__ = ["dagster_home", "hub_sleeps", "synced", "synced_home", "user"]  # fixtures

RUN_ID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def tol_process(*argv: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """`tol-dagster ARGV` in its own process, with the test's environment (the user's)."""
    return subprocess.Popen(
        [sys.executable, "-m", "tol_dagster.cli.main", *argv],
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def tol(*argv: str, env: dict[str, str] | None = None) -> Outcome:
    process = tol_process(*argv, env=env)
    out, err = process.communicate(timeout=300)
    return Outcome(process.returncode, out, err)


#: What a run prints while it works: progress lines (`[sync <config>] ...`, the Hub client's
#: retries among them) and, with `--verbose`, Dagster's INFO/WARNING lines.
PROGRESS = re.compile(
    r"^\[[^\]]+\] |^\S+ \S+ \+\d{4} - dagster - (INFO|WARNING) - |; retry \d+ of \d+ in "
)


def first_line(outcome: Outcome, *, verbose: bool = False) -> str:
    """The first line of the failure report, checked to be the first line on stderr that is
    not a progress line of the run (a run's progress may come before it; with `--verbose`,
    Dagster's failure events and their tracebacks too)."""
    lines = outcome.err.splitlines()
    reported = [i for i, line in enumerate(lines) if line.startswith("tol-dagster: ")]
    assert reported, f"no failure report on stderr (exit {outcome.code}): {outcome.text}"
    before = lines[: reported[0]]
    assert verbose or all(PROGRESS.search(line) for line in before), "\n".join(before)
    return lines[reported[0]]


def assert_no_traceback(outcome: Outcome) -> None:
    assert "Traceback" not in outcome.err and "Stack Trace" not in outcome.err, outcome.err


# --- 0, 1, 2, 3 ---------------------------------------------------------------------------------


def test_0_done_prints_no_error(user: User) -> None:
    outcome = tol("sync")

    assert outcome.code == 0, outcome.text
    assert_no_traceback(outcome)
    assert "tol-dagster:" not in outcome.err
    assert mirror_view(user.layout).sha256s == upstream_files(user.root)


def _unsorted(table: pa.Table) -> pa.Table:
    """The file's last row moved to the front (its key sorts after the first row's)."""
    return table.take([table.num_rows - 1, *range(table.num_rows - 1)])


def test_1_only_when_the_gate_refused_the_upstream_state(synced: User) -> None:
    before = mirror_view(synced.layout)
    bad = file_names(synced.root)[1]
    edit_upstream(synced.folder / bad, _unsorted)

    outcome = tol("sync")

    assert outcome.code == 1, outcome.text
    assert first_line(outcome).startswith(
        f"tol-dagster: {CONFIG}: check sorted_by_contract_key failed"
    ), outcome.err
    assert bad in first_line(outcome)
    assert_no_traceback(outcome)
    assert mirror_view(synced.layout) == before


@pytest.mark.parametrize(
    ("argv", "env", "named"),
    [
        (["sync"], {"TOL_MAX_PARALLEL_DOWNLOADS": "abc"}, "TOL_MAX_PARALLEL_DOWNLOADS='abc'"),
        (["slice", "family"], {}, "family"),
        (["slice", "kingdom=Animalia/nope=X"], {}, "nope"),
    ],
    ids=["bad setting", "slice key without a value", "slice key with an unknown rank"],
)
def test_2_bad_input_or_settings(
    synced: User, argv: list[str], env: dict[str, str], named: str
) -> None:
    outcome = tol(*argv, env=env)

    assert outcome.code == 2, outcome.text
    assert first_line(outcome).startswith("tol-dagster: ") and named in first_line(outcome)
    assert_no_traceback(outcome)


@pytest.mark.parametrize("commit", ["main", "D1F0E588C222" * 3 + "ABCD"])
def test_2_a_commit_typed_in_the_launchpad_that_is_no_commit_id(user: User, commit: str) -> None:
    """The launchpad takes any string: a branch name or an upper-case sha was taken for a
    commit the upstream had moved from ("upstream moved from main to …")."""
    settings = Settings.from_env()

    result = execute(
        load_code_location(settings).resolve_job_def(RESYNC_JOB),
        instance=open_instance(settings),
        run_config=resync_run_config(CONFIG, commit=commit),
        asset_selection=resync_keys(CONFIG),
        asset_check_selection=resync_check_keys(CONFIG),
    )

    code, lines = exit_code(result)
    assert code == 2 and f"run config commit {commit!r}: not a commit id" in lines[0], lines
    assert user.file_requests() == dict.fromkeys(FILE_REQUESTS, 0), "refused before any fetch"
    assert not user.layout.mirror_dir(CONFIG).exists()


def test_3_upstream_unreachable(
    user: User, monkeypatch: pytest.MonkeyPatch, hub_sleeps: HubSleeps
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    monkeypatch.setenv("TOL_HUB_ENDPOINT", closed)

    outcome = user.sync()  # in this process: the retries' waits are cut by `hub_sleeps`

    assert outcome.code == 3, outcome.text
    assert hub_sleeps.asked == [1, 2, 4, 8, 16], "a sync rides out an outage (`status` does not)"
    failure = [line for line in outcome.err.splitlines() if line.startswith("tol-dagster:")]
    assert failure, outcome.err
    assert closed in failure[0] and "check the network" in failure[0]
    assert "then run the command again" in failure[0], "status and sync alike"
    before = outcome.err.split(failure[0])[0].splitlines()
    assert all("retry" in line for line in before), "only the retries' progress lines come first"
    assert_no_traceback(outcome)


# --- 4: local storage ---------------------------------------------------------------------------


def _require_root_mount(reason: str) -> None:
    requirements.missing(reason)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of 64 MB mounted for this test (needs mount (root))."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(disk)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        _require_root_mount(f"mount (root) of a tmpfs failed: {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_4_disk_full_during_a_download_with_dagsters_storage_on_the_same_disk(
    synced: User, small_disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = small_disk / "home"
    copy_home(synced.home, home, synced.hub)
    monkeypatch.setenv("TOL_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    before = mirror_view(synced.layout.__class__(home))
    edited = file_names(synced.root)[1]
    valid_edit(synced.root, edited)
    size = (synced.folder / edited).stat().st_size
    # Downloads wait until the disk check has passed and the disk is then filled.
    synced.hub.add_fault(Fault("delay", request_kind="lfs_get", delay_s=2.0, times=1))
    process = tol_process("sync")
    filler = small_disk / "filler"
    deadline = time.monotonic() + 120
    while synced.requests()["lfs_get"] == 0:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no download started"
        time.sleep(0.02)
    free = shutil.disk_usage(small_disk).free
    with filler.open("wb") as out:
        out.truncate(0)
        out.write(b"\0" * max(free - size // 2, 0))
    out_text, err = process.communicate(timeout=300)
    outcome = Outcome(process.returncode, out_text, err)

    assert outcome.code == 4, outcome.text
    line = first_line(outcome)
    assert line.startswith("tol-dagster: "), outcome.err
    assert str(home) in line, "the path on the full disk"
    needed = re.search(r"([\d,]+) bytes needed", line)
    free_now = re.search(r"([\d,]+) bytes free", line)
    assert needed and free_now, line
    assert 0 < int(needed.group(1).replace(",", "")) <= size
    assert int(free_now.group(1).replace(",", "")) < size
    assert_no_traceback(outcome)
    assert mirror_view(synced.layout.__class__(home)) == before, "the mirror is intact"

    filler.unlink()
    synced.reset_counts()
    again = tol("sync")

    assert again.code == 0, again.text
    assert synced.requests()["range_requests"] >= 1, "the partial was resumed"
    assert synced.bytes_served() < size, "the bytes that landed were not fetched again"
    assert mirror_view(synced.layout.__class__(home)).sha256s == upstream_files(synced.root)


def test_4_a_read_only_data_home(synced: User, small_disk: Path) -> None:
    """A data home the process may not write (a read-only mount: root ignores mode bits)."""
    copy_home(synced.home, small_disk / "home", synced.hub)
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    valid_edit(synced.root, file_names(synced.root)[0])

    outcome = tol("sync", env={"TOL_HOME": str(small_disk / "home")})

    assert outcome.code == 4, outcome.text
    line = first_line(outcome)
    assert line.startswith("tol-dagster: ") and str(small_disk / "home") in line, outcome.err
    assert "Read-only file system" in line and "bytes free" in line
    assert_no_traceback(outcome)


# --- 130/143: interrupted -----------------------------------------------------------------------


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_mid_download_cancels_the_run_and_frees_its_slot(
    user: User, signum: signal.Signals, code: int
) -> None:
    user.hub.add_fault(Fault("bandwidth", request_kind="lfs_get", bytes_per_s=250_000))
    partials = user.layout.partial_dir(CONFIG)
    process = tol_process("sync")
    deadline = time.monotonic() + 120
    while not any(p.stat().st_size > 100_000 for p in partials.glob("*.part")):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no partial file appeared"
        time.sleep(0.05)
    sent = time.monotonic()
    process.send_signal(signum)
    out, err = process.communicate(timeout=60)
    outcome = Outcome(process.returncode, out, err)

    assert outcome.code == code, outcome.text
    assert time.monotonic() - sent < 20, "the downloads stopped promptly"
    assert first_line(outcome).startswith(f"tol-dagster: interrupted by {signum.name}"), err
    assert_no_traceback(outcome)
    with user.instance() as instance:
        [run] = instance.get_runs(filters=dg.RunsFilter(tags={PID_TAG: str(process.pid)}))
        assert run.status == dg.DagsterRunStatus.CANCELED
        assert run.run_id in first_line(outcome)
    assert not user.layout.mirror_dir(CONFIG).exists(), "nothing was published"
    user.hub.faults.clear()
    user.reset_counts()

    again = user.sync()

    assert again.code == 0, again.text
    assert "waiting for resync run" not in again.err
    assert user.requests()["range_requests"] >= 1, "the partials were resumed"
    assert mirror_view(user.layout).sha256s == upstream_files(user.root)


# --- 70: a bug ----------------------------------------------------------------------------------


def _boom(*args: object, **kwargs: object) -> None:
    raise RuntimeError("boom: an unforeseen bug")


@pytest.mark.parametrize("verbose", [False, True], ids=["quiet", "--verbose"])
def test_70_an_internal_error_names_the_run_to_report(
    synced: User, monkeypatch: pytest.MonkeyPatch, verbose: bool
) -> None:
    monkeypatch.setattr(stage, "prepare", _boom)

    outcome = synced.tol(*(["--verbose"] if verbose else []), "sync")

    assert outcome.code == 70, outcome.text
    line = first_line(outcome, verbose=verbose)
    assert line.startswith(f"tol-dagster: {CONFIG}: ") and "internal error" in line, outcome.err
    assert "RuntimeError: boom: an unforeseen bug" in line
    [run_id] = re.findall(rf"report it with run id ({RUN_ID})", line)
    with synced.instance() as instance:
        run = instance.get_run_by_id(run_id)
        assert run is not None and run.status == dg.DagsterRunStatus.FAILURE
        logged = [dg.serialize_value(e) for e in instance.all_logs(run_id)]
        assert any("Traceback" in text or "boom" in text for text in logged), "the trace is kept"
    if verbose:
        assert "RuntimeError: boom" in outcome.err and "Stack Trace" in outcome.err
    else:
        assert_no_traceback(outcome)
    assert manifest(synced.layout).upstream_commit == synced.hub.head_commit()


def test_70_outside_a_run_names_no_run_and_tol_debug_prints_the_traceback(
    synced: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tol_dagster.cli import sync_command

    monkeypatch.setattr(sync_command, "open_instance", _boom)

    quiet = synced.tol("sync")
    monkeypatch.setenv("TOL_DEBUG", "1")
    debug = synced.tol("sync")

    assert quiet.code == debug.code == 70, quiet.text
    assert first_line(quiet) == first_line(debug)
    assert "internal error" in first_line(quiet) and "--verbose" in first_line(quiet)
    assert_no_traceback(quiet)
    assert "Traceback" in debug.err


# --- the classification of foreign exceptions, one rule at a time ------------------------------


def _raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


@pytest.mark.parametrize(
    ("errno_value", "reason"),
    [
        (errno.ENOSPC, "No space left on device"),
        (errno.EDQUOT, "Disk quota exceeded"),
        (errno.EROFS, "Read-only file system"),
        (errno.EACCES, "Permission denied"),
        (errno.EPERM, "Operation not permitted"),
        (errno.ENOTDIR, "Not a directory"),
    ],
)
def test_local_storage_oserrors_are_4_naming_the_path_and_free_bytes(
    tmp_path: Path, errno_value: int, reason: str
) -> None:
    path = tmp_path / "store" / "x.part"
    error = _raised(OSError(errno_value, os.strerror(errno_value), str(path)))

    for classified in (
        exit_codes.classify(error),
        exit_codes.classify_error_info(
            serializable_error_info_from_exc_info((OSError, error, error.__traceback__)), run_id="r"
        ),
    ):
        assert classified is not None and classified.exit_code == 4
        text = str(classified)
        assert str(path) in text and reason in text
        assert re.search(r"[\d,]+ bytes free there", text), text


def test_an_exception_is_told_by_its_module_not_its_name_alone() -> None:
    """pydantic's ValidationError (a run config a step refused) was taken for the Hub client's
    (an HTTP error: exit 3, "the Hub could not be reached")."""

    class Model(pydantic.BaseModel):
        x: int

    with pytest.raises(pydantic.ValidationError) as refused:
        Model(x="a")  # type: ignore[arg-type]
    for error, code in [(refused.value, 70), (hf_errors.ValidationError("bad answer"), 3)]:
        caught = _raised(error)
        info = serializable_error_info_from_exc_info((type(caught), caught, caught.__traceback__))
        classified = exit_codes.classify_error_info(info, run_id="r")
        assert classified is not None and classified.exit_code == code, classified


def test_other_oserrors_and_unknown_exceptions_are_70_with_the_run_id() -> None:
    for error in (
        FileNotFoundError(errno.ENOENT, "gone", "/x"),
        RuntimeError("bad"),
        KeyError("k"),
    ):
        classified = exit_codes.classify(error, run_id="1234")
        assert classified.exit_code == 70, error
        assert "internal error" in str(classified) and "run id 1234" in str(classified)


def test_dagsters_sqlite_storage_full_is_4_naming_dagster_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlalchemy.exc

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    for text in ("database or disk is full", "disk I/O error"):
        raw = sqlite3.OperationalError(text)
        wrapped = _raised(sqlalchemy.exc.OperationalError("INSERT INTO event_logs", {}, raw))
        classified = exit_codes.classify(wrapped, run_id="r")
        assert classified.exit_code == 4, classified
        assert str(tmp_path / "dagster") in str(classified) and text in str(classified)
    other = sqlite3.OperationalError("no such table: runs")
    assert exit_codes.classify(other).exit_code == 70


def test_network_errors_are_3_and_our_errors_keep_their_code() -> None:
    import httpx2

    assert exit_codes.classify(httpx2.ConnectError("refused")).exit_code == 3
    assert exit_codes.classify(errors.UpstreamError("x")).exit_code == 3
    assert exit_codes.classify(errors.DiskSpaceError("x")).exit_code == 4
    assert exit_codes.classify(errors.ValidationFailed("x")).exit_code == 1
    assert exit_codes.classify(KeyboardInterrupt()).exit_code == 130


def test_a_step_error_is_found_under_dagsters_wrapper() -> None:
    """What a failed step leaves: Dagster's wrapper, our error as its cause."""
    try:
        try:
            raise errors.LocalStorageError("local storage failed at /x: full")
        except errors.LocalStorageError as inner:
            raise dg.DagsterExecutionStepExecutionError(
                "Error occurred while executing op",
                user_exception=inner,
                original_exc_info=sys.exc_info(),
                step_key="s",
                op_name="s",
                op_def_name="s",
            ) from inner
    except dg.DagsterExecutionStepExecutionError as outer:
        info = serializable_error_info_from_exc_info((type(outer), outer, outer.__traceback__))
        live = outer

    from_info = exit_codes.classify_error_info(info, run_id="r")
    assert from_info is not None and from_info.exit_code == 4
    assert str(from_info) == "local storage failed at /x: full"
    assert exit_codes.classify(live).exit_code == 4
