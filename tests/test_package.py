"""A non-editable install works where it is installed: a wheel built from this tree, in a fresh venv, away from it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from inboxd import __version__

from helpers import REPO

# What a build reads: copied out first, so that building leaves no build/ or egg-info in the checkout.
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "config.example.toml", "inboxd", "rules", "templates")
PASSWORDS = {"INBOXD_IMAP_PASSWORD": "imap-secret", "INBOXD_SMTP_PASSWORD": "smtp-secret"}


def run(*command: str | Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """A command with the checkout out of sight: no PYTHONPATH, run from elsewhere."""
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | (env or {})
    done = subprocess.run([str(c) for c in command], capture_output=True, text=True, cwd=cwd, env=clean,
                          timeout=300, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, f"{command}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    """(the wheel, a fresh venv with it and the demo's extra installed)."""
    root = tmp_path_factory.mktemp("package")
    tree = root / "tree"
    tree.mkdir()
    for name in SOURCES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, tree / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, tree / name)
    run(sys.executable, "-m", "pip", "wheel", tree, "-w", root / "wheels", "--no-deps", "-q", cwd=root)
    [wheel] = (root / "wheels").glob("inboxd-*.whl")
    run(sys.executable, "-m", "venv", root / "venv", cwd=root)
    run(root / "venv" / "bin" / "python", "-m", "pip", "install", "-q", f"{wheel}[demo]", cwd=root)
    return wheel, root / "venv"


def test_the_wheel_carries_the_shipped_files_and_no_tests(built):
    wheel, _ = built
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        shipped = [p for folder in ("rules", "templates") for p in sorted((REPO / folder).rglob("*")) if p.is_file()]
        for path in [*shipped, REPO / "config.example.toml"]:
            inside = f"inboxd/shipped/{path.relative_to(REPO)}"
            assert archive.read(inside) == path.read_bytes(), inside  # the files themselves, not links
        assert {"inboxd/shipped/inboxd.service", "inboxd/py.typed", "inboxd/__main__.py"} <= names
        assert not [n for n in names if n.startswith("tests/") or "corpus" in n]  # test data is not shipped
        meta = archive.read(f"inboxd-{__version__}.dist-info/METADATA").decode()
        assert f"inboxd-{__version__}.dist-info/licenses/LICENSE" in names
    assert f"\nVersion: {__version__}\n" in meta and "\nLicense-Expression: MIT\n" in meta
    assert "\nClassifier: Typing :: Typed\n" in meta and "\nProject-URL: Documentation, " in meta


def test_init_then_check_then_version_from_the_installed_package(built, tmp_path):
    _, venv = built
    python, inboxd = venv / "bin" / "python", venv / "bin" / "inboxd"
    where = run(python, "-c", "import inboxd; print(inboxd.__file__)", cwd=tmp_path).stdout.strip()
    assert Path(where).is_relative_to(venv), where  # the installed copy, not this checkout
    out = run(inboxd, "init", tmp_path / "site", cwd=tmp_path).stdout
    assert "wrote 37 file(s)" in out
    checked = run(inboxd, "--config", tmp_path / "site" / "config.toml", "check", cwd=tmp_path, env=PASSWORDS)
    assert checked.stdout.startswith(f"ok: {tmp_path / 'site' / 'config.toml'}: 8 rule(s) in 3 file(s)")
    assert run(python, "-m", "inboxd", "--version", cwd=tmp_path).stdout == f"inboxd, version {__version__}\n"
    unit = run(inboxd, "init", tmp_path / "service", "--systemd", cwd=tmp_path).stdout
    assert "inboxd.service" in unit
    assert f"\nExecStart={python} -m inboxd --config {tmp_path / 'service' / 'config.toml'} run\n" \
        in (tmp_path / "service" / "inboxd.service").read_text()


def test_the_demo_runs_from_the_installed_package(built, tmp_path):
    _, venv = built
    out = run(venv / "bin" / "inboxd", "demo", cwd=tmp_path).stdout
    assert f"rules from {venv}" in out and "-> item IT-1 created" in out and "0 left in INBOX" in out
