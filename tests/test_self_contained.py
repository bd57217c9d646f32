"""The repository stands alone: nothing points outside it, and the mail corpus the tests read is complete."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from helpers import CORPUS, REPO

# Built from parts, so that this file does not match what it looks for.
FORBIDDEN = ("../" + "shared", "shared" + "/corpus", "DESIGN" + ".md")
FORBIDDEN_RE = re.compile("DESIGN" + r"\s*§")
# Third-party mail kept byte for byte: nothing in it is ours to change.
SKIPPED_DIRS = (Path("tests") / "data" / "corpus",)
# What a walk (no git at hand, e.g. an unpacked sdist) leaves out: never part of the repository.
UNTRACKED = {".git", "__pycache__", ".pytest_cache", ".venv", "build", "dist"}


def _tracked_files() -> list[Path]:
    """Files of the repository, relative to its root: `git ls-files`, or a walk without git."""
    if shutil.which("git") and (REPO / ".git").exists():
        listed = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True, check=True)
        return [Path(name) for name in listed.stdout.decode("utf-8", "surrogateescape").split("\0") if name]
    found = []
    for folder, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if d not in UNTRACKED and not d.endswith(".egg-info")]
        found += [Path(folder, name).relative_to(REPO) for name in files]
    return found


def _skipped(path: Path) -> bool:
    return any(path.is_relative_to(folder) for folder in SKIPPED_DIRS)


def test_no_file_refers_to_anything_outside_the_repository():
    hits = []
    for path in _tracked_files():
        full = REPO / path
        if _skipped(path) or not full.is_file():  # a tracked file deleted in the work tree
            continue
        text = full.read_bytes().decode("utf-8", "replace")
        for number, line in enumerate(text.splitlines(), 1):
            found = [s for s in FORBIDDEN if s in line] + [m.group(0) for m in FORBIDDEN_RE.finditer(line)]
            if found:
                hits.append(f"{path}:{number}: {', '.join(found)}: {line.strip()[:120]}")
    assert hits == [], ("these lines point outside the repository; cite the page of docs/ that covers "
                        "the subject instead:\n" + "\n".join(hits))


def test_the_corpus_lives_in_the_repository_and_its_manifest_is_complete():
    assert CORPUS.is_dir(), CORPUS
    assert CORPUS.resolve().is_relative_to(REPO.resolve()), f"{CORPUS} is outside {REPO}"
    assert (CORPUS / "README.md").is_file()  # the origin and licence of every file
    rows = (CORPUS / "MANIFEST.tsv").read_text(encoding="utf-8").splitlines()
    assert rows[0].split("\t") == ["path", "category", "source_repo_or_package", "original_path", "license",
                                   "expect"]
    listed = [row.split("\t")[0] for row in rows[1:] if row.strip()]
    assert len(listed) == len(set(listed)), "a file is listed twice"
    assert [p for p in listed if not (CORPUS / p).is_file()] == []
    present = {p.relative_to(CORPUS).as_posix() for p in CORPUS.rglob("*") if p.is_file()}
    assert present - {"MANIFEST.tsv", "README.md"} - set(listed) == set(), "mail missing from MANIFEST.tsv"
