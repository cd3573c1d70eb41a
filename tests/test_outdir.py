"""Output directories (lattgen/outdir.py): files replaced together or not at all, the lock, what
a directory holds and when it is refused."""

from __future__ import annotations

import json
import os

import pytest

from lattgen import outdir
from lattgen.errors import RunDirError
from lattgen.outdir import JOURNAL, claim, held_by, recover, refusal, release_all, write_together


def old_pair(d):
    d.mkdir(exist_ok=True)
    (d / "config.toml").write_text("old config\n")
    (d / "results.json").write_text("old results\n")
    return d


def pair(d):
    return (d / "config.toml").read_text(), (d / "results.json").read_text()


def visible(d):
    return sorted(p.name for p in d.iterdir())


def test_write_together_replaces_both(tmp_path):
    d = old_pair(tmp_path / "d")
    write_together(d, {"config.toml": "new config\n", "results.json": b"new results\n"})
    assert pair(d) == ("new config\n", "new results\n") and visible(d) == ["config.toml", "results.json"]


def test_a_crash_before_the_commit_point_leaves_the_old_pair(tmp_path, monkeypatch):
    d = old_pair(tmp_path / "d")
    real = outdir._write_synced
    calls = []

    def dies_on_the_second(path, data):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt  # any interruption while writing the second temporary
        real(path, data)

    monkeypatch.setattr(outdir, "_write_synced", dies_on_the_second)
    with pytest.raises(KeyboardInterrupt):
        write_together(d, {"config.toml": "new config\n", "results.json": "new results\n"})
    assert pair(d) == ("old config\n", "old results\n") and visible(d) == ["config.toml", "results.json"]


def test_a_crash_after_the_commit_point_is_rolled_forward(tmp_path, monkeypatch):
    """Killed between the renames: the directory holds a new config beside the old results until
    the next ``recover`` (every command calls it when it claims or reads a directory)."""
    d = old_pair(tmp_path / "d")
    real = os.replace
    renames = []

    def dies_after_the_first_rename(src, dst):
        if str(dst).endswith("results.json"):
            raise SystemExit("killed")
        renames.append(dst)
        real(src, dst)

    monkeypatch.setattr(os, "replace", dies_after_the_first_rename)
    with pytest.raises(SystemExit):
        write_together(d, {"config.toml": "new config\n", "results.json": "new results\n"})
    monkeypatch.setattr(os, "replace", real)
    assert pair(d) == ("new config\n", "old results\n") and (d / JOURNAL).is_file()
    journal = json.loads((d / JOURNAL).read_text())
    journal["pid"] = _dead_pid()  # as if written by a process that was killed
    (d / JOURNAL).write_text(json.dumps(journal))
    recover(d)
    assert pair(d) == ("new config\n", "new results\n") and visible(d) == ["config.toml", "results.json"]


def test_the_lock_refuses_a_second_claim_until_released(tmp_path):
    out = tmp_path / "out"
    claim(out, "sample")
    try:
        with pytest.raises(RunDirError, match="in use by another lattgen run"):
            claim(out, "sample")
    finally:
        release_all()
    claim(out, "sample")  # released: free again
    release_all()


def test_what_a_directory_holds_and_when_it_is_refused(tmp_path):
    """The marker names the command; directories from before it are judged by their files."""
    empty = tmp_path / "empty"
    empty.mkdir()
    assert held_by(empty) is None and refusal(empty, "sample") is None
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "config.toml").write_text("")  # killed before its first checkpoint
    assert held_by(tmp_path / "train") == "train"
    assert refusal(tmp_path / "train", "train") is None  # resumes
    assert "output of `lattgen train`" in refusal(tmp_path / "train", "sample")
    (tmp_path / "cmp" / "entries").mkdir(parents=True)
    assert held_by(tmp_path / "cmp") == "compare" and refusal(tmp_path / "cmp", "compare") is None
    s = old_pair(tmp_path / "s")
    assert held_by(s) == "sample" and "earlier `lattgen sample`" in refusal(s, "sample")
    with pytest.raises(RunDirError, match="already holds"):
        claim(s, "sample")
    assert claim(s, "sample", force=True) is True  # forced over a refusal
    release_all()
    assert (s / outdir.MARKER).read_text().strip() == "sample"
    (tmp_path / "file").write_text("")
    with pytest.raises(RunDirError, match="not a directory"):
        claim(tmp_path / "file", "sample")


def _dead_pid() -> int:
    import subprocess

    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid
