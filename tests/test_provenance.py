"""The code version recorded in every result: a commit, ``-dirty`` only for uncommitted code."""

import subprocess

from ddm.provenance import git_version


def _git(repo, *args):
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def test_rewritten_results_do_not_mark_the_code_dirty_but_code_changes_do(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "tables").mkdir()
    for name in ("code.py", "results/t.json", "tables/t.md"):
        (tmp_path / name).write_text("0\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    clean = git_version(tmp_path)
    assert len(clean) == 40 and not clean.endswith("-dirty")
    (tmp_path / "results" / "t.json").write_text("1\n")  # what `ddm-bench run` does to its outputs
    (tmp_path / "tables" / "t.md").write_text("1\n")
    assert git_version(tmp_path) == clean
    (tmp_path / "code.py").write_text("1\n")
    assert git_version(tmp_path) == clean + "-dirty"


def test_without_git_history_the_package_version_is_used(tmp_path):
    assert git_version(tmp_path).startswith("v")
