"""Bad input on the command line is exit 2 with one `tol-dagster:` line naming it (and, under
`--json`, the one document naming the command), never an internal error (70), a traceback, a
write outside the folder given or a password echoed; `--quiet` goes after any command; Ctrl-C
while the command line loads is an interrupt (130) like any other."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tol_dagster.cli.main import main

SECRET = "pwSECRETX"


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in [n for n in os.environ if n.startswith("TOL_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("TOL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    return tmp_path / "home"


@pytest.mark.parametrize(
    ("argv", "env", "command", "named"),
    [
        (["sync", "--bogus"], {}, "sync", "unrecognized arguments: --bogus"),
        (["slices", "add-rank", "family", "--min-rows", "x"], {}, "slices add-rank", "--min-rows"),
        (["slices", "add-rank", "Family"], {}, "slices add-rank", "'Family' is not a rank"),
        (["status"], {"TOL_HUB_ENDPOINT": "http://[::1"}, "status", "Invalid IPv6 URL"),
        (["status"], {"TOL_HUB_ENDPOINT": "http://127.0.0.1:abc"}, "status", "'abc'"),
        (
            ["status"],
            {"TOL_HUB_ENDPOINT": f"http://user:{SECRET}@127.0.0.1:1"},
            "status",
            "holds credentials (user:password@): give the token in HF_TOKEN",
        ),
        (["status"], {"TOL_HOME": "FILE"}, "status", "is a file, not a folder"),
    ],
    ids=["unknown option", "bad number", "bad rank", "bad url", "bad port", "password", "file"],
)
def test_bad_input_is_exit_2_one_line_and_one_document(
    home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    env: dict[str, str],
    command: str,
    named: str,
) -> None:
    (tmp_path / "FILE").write_text("a file")
    for name, value in env.items():
        monkeypatch.setenv(name, str(tmp_path / value) if value == "FILE" else value)
    code, out, err = _run(capsys, *argv)
    assert code == 2, err
    assert err.startswith("tol-dagster: ") and named in err.splitlines()[0], err
    assert "Traceback" not in err and out == ""
    code, out, err = _run(capsys, *argv, "--json")
    document = json.loads(out)
    assert code == document["exit_code"] == 2
    assert document["command"] == command and named in document["error"]
    assert SECRET not in out + err


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--seed", "-1"], "argument --seed: -1: give a whole number >= 0"),
        (["--dim", "100000000"], "argument --dim: 100000000: give a whole number >= 1 and at most"),
        (["--config", "../../evil"], "argument --config: '../../evil': give a config folder's"),
        (["--config", ""], "argument --config: '': give a config folder's name"),
    ],
)
def test_sample_build_refuses_arguments_it_cannot_honour(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], named: str
) -> None:
    """Before: 70 (a negative seed, a width that exhausted memory), or a sample written outside
    OUT (`--config ../../evil`) or into OUT itself (`--config ''`)."""
    out = tmp_path / "deep" / "out"
    argv = ["sample", "build", str(out), "--rows", "10", "--files", "1", "--seed", "1", *args]
    code, _, err = _run(capsys, *argv)
    assert code == 2 and err.startswith(f"tol-dagster: {named}"), err
    assert not any(tmp_path.rglob("*.parquet")), "nothing written anywhere"


def test_sample_build_into_a_file_and_hub_serve_of_a_missing_folder_are_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "file").write_text("x")
    for argv, named in [
        (["sample", "build", str(tmp_path / "file"), "--rows", "1", "--files", "1", "--seed", "1"],
         "a file, not a folder"),
        (["hub", "serve", str(tmp_path / "missing")], "not a folder"),
        (["hub", "serve", str(tmp_path), "--port", "70000"], "at most 65535"),
    ]:  # fmt: skip
        code, _, err = _run(capsys, *argv)
        assert code == 2 and err.startswith("tol-dagster: ") and named in err, err


def test_hub_serve_on_a_port_in_use_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _, err = _run(capsys, "hub", "serve", str(tmp_path), "--port", str(port))
    assert code == 2, err
    assert (
        err == f"tol-dagster: hub serve --port {port}: the port is in use; pick another, or 0 "
        "for a free one\n"
    )


def test_quiet_goes_after_the_slices_commands_too(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """README: `--verbose` and `--quiet` go before or after the command. Before, `slices list
    --quiet` was refused and `--quiet slices list` printed the catalog."""
    assert _run(capsys, "slices", "list")[1].startswith("no slices published yet")
    assert _run(capsys, "slices", "list", "--quiet") == (0, "", "")
    assert _run(capsys, "--quiet", "slices", "list") == (0, "", "")


def test_a_key_with_a_newline_is_named_on_one_line(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(capsys, "slices", "remove", "family=a\nb")
    assert code == 2 and err.count("\n") == 1 and "'family=a\\nb'" in err, err


def test_ctrl_c_while_the_command_line_loads_is_an_interrupt(home: Path) -> None:
    """The console script loads Dagster for seconds: SIGINT then printed a traceback and no
    document; now exit 130, one line, one document."""
    script = Path(sys.executable).with_name("tol-dagster")
    started = subprocess.Popen(
        [str(script), "status", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    time.sleep(0.3)
    started.send_signal(signal.SIGINT)
    out, err = started.communicate(timeout=60)
    assert started.returncode == 130, err
    assert err == "tol-dagster: interrupted (SIGINT) while starting; nothing was done\n", err
    assert json.loads(out)["exit_code"] == 130
