"""The instance settings (queue limits, run retries) and the default slices ship inside the
package: a plain `pip install .` (not editable) has no repo around it, and without them the
concurrency limits would silently vanish."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml
from requirements import missing

from tol_dagster.defs import instance
from tol_dagster.devtools.localhub import LocalHub
from tol_dagster.schema import DEFAULT_CONFIG
from tol_dagster.settings import DEFAULT_SLICES_FILE, OFFLINE_HF_ENV, Settings
from tol_dagster.slices import rebuilds

#: This venv's pip, quiet; every call below also says --no-index (offline).
PIP = [sys.executable, "-m", "pip", "--quiet", "--disable-pip-version-check"]
REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "tol_dagster"


def test_the_repo_top_dagster_yaml_is_the_packaged_one() -> None:
    """`dagster dev` by hand reads the top one; the command line installs the packaged one."""
    assert (REPO / "dagster.yaml").read_bytes() == (PACKAGE / "dagster.yaml").read_bytes(), (
        "edit tol_dagster/dagster.yaml and copy it to the repo's top (or the other way round)"
    )


def _body(installed: Path) -> str:
    """An installed dagster.yaml without the stamp that ends it (its sha256 checked)."""
    body, stamp, digest = installed.read_text().rpartition(instance._STAMP)
    assert stamp and digest == f"{hashlib.sha256(body.encode()).hexdigest()}\n", installed
    return body


def test_defaults_are_read_from_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert DEFAULT_SLICES_FILE.parent == PACKAGE
    assert Settings.from_env({"TOL_HOME": str(tmp_path)}).slices_file == DEFAULT_SLICES_FILE
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))

    home = instance.ensure_dagster_home(Settings.from_env({"TOL_HOME": str(tmp_path)}))

    assert _body(home / "dagster.yaml") == (PACKAGE / "dagster.yaml").read_text()


def instance_settings(path: Path) -> dict:
    document = yaml.safe_load(path.read_text())
    assert isinstance(document, dict)
    return document


def assert_project_settings(document: dict) -> None:
    """The settings that must be in force: one resync per config, retries for sensor runs."""
    limits = document["concurrency"]["runs"]
    assert limits["max_concurrent_runs"] > 0
    assert any(
        limit["key"] == "tol/resync" for limit in limits.get("tag_concurrency_limits", [])
    ) or ("pools" in document["concurrency"]), "no limit serializes the resyncs of one config"
    assert document["run_retries"]["enabled"] is True


def test_the_packaged_settings_serialize_resyncs_and_retry_sensor_runs() -> None:
    assert_project_settings(instance_settings(PACKAGE / "dagster.yaml"))


# --- a real non-editable install ----------------------------------------------------------------


def _build_wheel(tmp_path: Path) -> Path:
    """The wheel `pip install .` would build, from a copy of the project (no build/ left here)."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(PACKAGE, source / "tol_dagster", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path / "wheels"
    built = subprocess.run(
        [
            *PIP,
            "wheel",
            "--no-index",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(out),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if built.returncode != 0 and "bdist_wheel" in built.stderr + built.stdout:
        missing("setuptools>=70.1 is needed to build the wheel offline: run `make setup`")
    assert built.returncode == 0, built.stderr
    [wheel] = out.glob("tol_dagster-*.whl")
    return wheel


def _venv_with(wheel: Path, tmp_path: Path) -> Path:
    """A fresh venv holding the wheel alone; its dependencies come from this venv's
    site-packages through a .pth line (a plain path: the editable install's hook is not run)."""
    venv = tmp_path / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    purelib = Path(
        subprocess.run(
            [
                str(venv / "bin" / "python"),
                "-c",
                "import sysconfig;print(sysconfig.get_path('purelib'))",
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    subprocess.run(
        # --python: pip installs for the venv's interpreter (its scripts start that python)
        [
            *PIP,
            "--python",
            str(venv / "bin" / "python"),
            "install",
            "--no-index",
            "--no-deps",
            str(wheel),
        ],
        check=True,
        timeout=300,
    )
    (purelib / "zz_dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return venv


@pytest.mark.e2e
def test_a_non_editable_install_syncs_and_slices_with_the_instance_settings_in_force(
    tmp_path: Path, local_hub: LocalHub
) -> None:
    venv = _venv_with(_build_wheel(tmp_path), tmp_path)
    elsewhere = tmp_path / "cwd"  # not the repo: nothing may come from it
    elsewhere.mkdir()
    home = tmp_path / "home"
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("TOL_", "DAGSTER_", "PYTHON"))
    }
    env |= {
        **OFFLINE_HF_ENV,
        "TOL_HOME": str(home),
        "TOL_HUB_ENDPOINT": local_hub.endpoint,
        "TOL_REPO_ID": local_hub.repo_id,
    }

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600
        )

    where = run(str(venv / "bin" / "python"), "-c", _REPORT)
    assert where.returncode == 0, where.stderr
    module, slices_file, declared = where.stdout.strip().splitlines()
    assert Path(module).is_relative_to(venv), f"tol_dagster imported from {module}"
    assert Path(slices_file).is_relative_to(venv)
    expected = rebuilds.declared_slices(DEFAULT_SLICES_FILE, DEFAULT_CONFIG)
    assert declared.split("|") == list(expected) and expected, "the default slices are known"

    synced = run(str(venv / "bin" / "tol-dagster"), "sync")
    assert synced.returncode == 0, synced.stdout + synced.stderr
    sliced = run(str(venv / "bin" / "tol-dagster"), "slice", "family=Felidae")
    assert sliced.returncode == 0, sliced.stdout + sliced.stderr

    installed = home / "dagster" / "dagster.yaml"
    assert _body(installed) == (PACKAGE / "dagster.yaml").read_text()
    assert_project_settings(instance_settings(installed))
    assert Path(sliced.stdout.strip().splitlines()[-1]).is_file()


#: Run inside the installed venv: where the package, its slices file and its default slices are.
_REPORT = """
import tol_dagster
from tol_dagster.slices import rebuilds
from tol_dagster.schema import DEFAULT_CONFIG
from tol_dagster.settings import Settings
settings = Settings.from_env()
print(tol_dagster.__file__)
print(settings.slices_file)
print("|".join(rebuilds.declared_slices(settings.slices_file, DEFAULT_CONFIG)))
"""
