"""Fetch, verify and inspect the files a plan lacks, in parallel, with progress in the run log.

Each file is inspected as soon as it lands (pipelined with the other downloads). A file that
fails its own checks is quarantined with its reason and marked failed (the gate then refuses).
An interrupt ends every download at its next chunk, its partial kept for resuming.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

from tol_dagster import exit_codes, progress
from tol_dagster.errors import IntegrityError
from tol_dagster.hub.client import HubClient, RemoteFile
from tol_dagster.resync.facts import file_facts, refusal
from tol_dagster.resync.plan import Plan, bytes_still_needed
from tol_dagster.resync.state import StagedFile
from tol_dagster.store.layout import Layout
from tol_dagster.store.quarantine import quarantine
from tol_dagster.store.staging import stage_path, staged_files
from tol_dagster.validation.checks import SHA256_MATCHES_UPSTREAM

Log = Callable[[str], None]
PROGRESS_EVERY_S = 5.0


class Progress:
    """Files, bytes, MB/s and ETA in the run log, at most every few seconds; every byte and
    file to `tol_dagster.progress` as it comes (the command line's bar), as `task`."""

    def __init__(
        self, log: Log, files: int, total_bytes: int, task: str = "fetch", *, start: bool = True
    ) -> None:
        """`start`: the task begins here (else its totals were told already, e.g. by the plan
        whose batch this is)."""
        self.log, self.files, self.total, self.task = log, files, total_bytes, task
        self.done_files = 0
        self.bytes = 0
        self.started = time.monotonic()
        self.last = 0.0
        self.lock = threading.Lock()
        if start:
            progress.start(task, files=files, bytes=total_bytes)

    def add(self, count: int) -> None:
        progress.advance(self.task, bytes=count)
        with self.lock:
            self.bytes += count
            self._maybe_log()

    def file_done(self) -> None:
        """A line when a file ends too, but still at most every few seconds, and for the last
        file: each line is an event in Dagster's log, hundreds of them a sync's main cost."""
        progress.advance(self.task, files=1)
        with self.lock:
            self.done_files += 1
            self._maybe_log(force=self.done_files == self.files)

    def _maybe_log(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < PROGRESS_EVERY_S:
            return
        self.last = now
        elapsed = max(now - self.started, 1e-6)
        rate = self.bytes / elapsed
        eta = (self.total - self.bytes) / rate if rate > 0 else float("inf")
        eta_text = f"{eta:,.0f} s" if eta != float("inf") else "?"
        self.log(
            f"{self.done_files}/{self.files} files, {self.bytes / 1e6:,.1f}/{self.total / 1e6:,.1f} MB, "
            f"{rate / 1e6:,.1f} MB/s, ETA {eta_text}"
        )


class _Stopped(Exception):
    """Raised in a fetch thread to end its download when the sync is interrupted."""


class _Fetcher:
    """Fetches one file of `plan` into its staging (unless already staged) and inspects it."""

    def __init__(
        self,
        layout: Layout,
        client: HubClient,
        config: str,
        plan: Plan,
        files: Sequence[RemoteFile],
        log: Log,
    ) -> None:
        self.layout, self.client, self.config, self.plan = layout, client, config, plan
        self.staged = staged_files(layout, config, plan.commit)
        # The plan told the totals (`stage.prepare`): a batch only advances them.
        self.progress = Progress(log, len(files), sum(f.size for f in files), start=False)
        self.stop = threading.Event()

    def on_progress(self, count: int) -> None:
        if self.stop.is_set():  # interrupted: end this download now, its partial kept for resuming
            raise _Stopped("the sync was interrupted")
        self.progress.add(count)

    def fetch_and_inspect(self, remote_file: RemoteFile) -> StagedFile:
        dest = stage_path(self.layout, self.config, self.plan.commit, remote_file.name)
        downloaded = remote_file.name not in self.staged
        if downloaded:
            try:
                self.client.download(
                    remote_file,
                    self.plan.commit,
                    dest,
                    partial_dir=self.layout.partial_dir(self.config),
                    on_progress=self.on_progress,
                )
            except IntegrityError as error:
                return _failed(remote_file, f"{SHA256_MATCHES_UPSTREAM}: {error}")
        else:
            self.progress.add(remote_file.size)
        facts = file_facts(self.layout, self.config, dest, remote_file.sha256)
        self.progress.file_done()
        reason = refusal(facts, dest, self.config)
        if reason is not None:
            quarantine(self.layout, self.config, dest, reason, sha256=remote_file.sha256)
            return _failed(remote_file, reason, rows=facts.rows)
        return StagedFile(
            remote_file.name,
            remote_file.path,
            remote_file.sha256,
            remote_file.size,
            "fetched",
            rows=facts.rows,
            downloaded=downloaded,
        )


def _failed(remote_file: RemoteFile, reason: str, rows: int | None = None) -> StagedFile:
    return StagedFile(
        remote_file.name,
        remote_file.path,
        remote_file.sha256,
        remote_file.size,
        "failed",
        reason,
        rows,
    )


def fetch_all(
    layout: Layout,
    client: HubClient,
    config: str,
    plan: Plan,
    files: Sequence[RemoteFile],
    *,
    max_parallel: int,
    log: Log,
) -> dict[str, StagedFile]:
    """Every one of `files` (of `plan.to_fetch`), fetched (or found staged), verified and
    inspected, by name.

    A full disk or a similar storage failure while fetching says what the sync still needs."""
    fetcher = _Fetcher(layout, client, config, plan, files, log)
    try:
        return _run_parallel(fetcher, files, max_parallel)
    except OSError as error:
        if error.errno not in exit_codes.STORAGE_ERRNOS:
            raise
        raise exit_codes.storage_error(
            error.filename or layout.partial_dir(config),
            f"{os.strerror(error.errno or 0)} while fetching {config} at {plan.commit[:12]}",
            needed=bytes_still_needed(layout, config, plan),
        ) from error


def _run_parallel(
    fetcher: _Fetcher, files: Iterable[RemoteFile], max_parallel: int
) -> dict[str, StagedFile]:
    results: dict[str, StagedFile] = {}
    with ThreadPoolExecutor(
        max_workers=max(1, max_parallel), thread_name_prefix="tol-fetch"
    ) as pool:
        futures = {pool.submit(fetcher.fetch_and_inspect, f): f for f in files}
        try:
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        except BaseException:  # SIGINT/SIGTERM: the fetch threads stop at their next chunk
            fetcher.stop.set()
            for future in futures:
                future.cancel()
            raise
        for future in done:
            if future.exception() is not None:
                for other in futures:
                    other.cancel()
                raise future.exception()  # type: ignore[misc]
        for future, remote_file in futures.items():
            results[remote_file.name] = future.result()
    return results
