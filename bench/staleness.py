"""``ddm-bench report --check``: is each committed result still what the code would compute and record?

A result depends on the stages its target declares (``BenchTarget.stages`` and everything they
consume, ``ddm.stages``); it records their schemas when it is written (``environment.stages``) and
the code version that computed each seed's cells. For every result the check reports

- **schema changed**: a stage it depends on has another schema now than the result recorded: its
  numbers belong to another computation.
- **code changed**: a source file of one of those stages (or the target's own module) differs
  between the commit that computed a seed and this checkout, or a seed was computed from an
  uncommitted tree, or its commit is not in this clone. Such a result may still be right (a
  refactor changes no number), but nothing has shown it. A Python file whose code is the same up
  to comments and docstrings (equal syntax trees once docstrings are dropped) has not changed:
  neither can change a number (a result keeps the target module's docstring it was computed
  with as its description). Any other edit counts, a help string or a reformatted literal included.
- **method options changed**: the methods whose options a result records (every result records
  them all, ``RunContext.method_keys``), or the option fields of one of them, are not the ones this
  code has. A rerun would record another config, so ``run --keep-committed`` would not keep the
  result's seeds, and a test comparing a fresh run's config with it fails, even where the target
  never runs the changed method. Only the fields are compared, not their values: a value may be
  the run's own ``--option``, and a changed default is a code change of the method's module,
  which the code check sees for every target that runs it.

Any of the three makes a result stale. A stale result is allowed only when the README lists it between its
stale-results markers, so a reader always sees which committed numbers predate the code; the check
fails on a stale result the README does not list, and on a listed result that is current (so the
list stays true).
"""

from __future__ import annotations

import ast
import hashlib
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bench.targets  # noqa: F401  (registers every target)
from bench.base import TARGETS, default_method_keys
from bench.results import find_results, load_result
from ddm.stages import STAGES, upstream

STALE_BEGIN, STALE_END = "<!-- stale-results:begin -->", "<!-- stale-results:end -->"


@dataclass
class Verdict:
    """What the check found for one result file (``path`` relative to the repository)."""

    path: str
    schema_changes: list[str] = field(default_factory=list)  # "synset: 2 -> 3"
    code_changes: list[str] = field(default_factory=list)  # "target (ddm/train.py) since abc1234"
    option_changes: list[str] = field(default_factory=list)  # "options of tracin: + train_batch_size"

    @property
    def stale(self) -> bool:
        return bool(self.schema_changes or self.code_changes or self.option_changes)

    @property
    def reasons(self) -> list[str]:
        return self.schema_changes + self.code_changes + self.option_changes


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=60)


def stage_sources(target_name: str) -> dict[str, list[str]]:
    """Every stage a target depends on, with its source files (the cells stage adds the target's
    own module)."""
    target = TARGETS[target_name]
    module = sys.modules[target.__module__].__file__ or ""
    own = "bench/" + Path(module).name
    return {name: [*STAGES[name].sources, *([own] if name == "cells" else [])]
            for name in upstream(target.stages)}


ROOT = Path(__file__).resolve().parent.parent  # where the sources' paths start (bench/, ddm/, baselines/)


def code_digest(target_name: str, root: Path = ROOT) -> str:
    """A digest of the code of every source this check watches for ``target_name`` (each Python file
    without comments and docstrings, :func:`_code`; other files byte for byte). The cached cells
    are keyed by it: they are reused only under the code that computed them, so `run` after a code
    change recomputes them (from the cached upstream stages) and never writes a result this check
    calls stale by code."""
    digest = hashlib.sha256()
    for source in sorted({file for files in stage_sources(target_name).values() for file in files}):
        folder = root / source
        paths = (sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
                 if source.endswith("/") else [folder])
        for path in paths:
            digest.update(path.relative_to(root).as_posix().encode() + b"\0")
            if not path.is_file():
                continue
            raw = path.read_bytes()
            code = _code(raw.decode()) if path.suffix == ".py" else None
            digest.update(code.encode() if code is not None else raw)
    return digest.hexdigest()[:24]


def changed_since(repo: Path, version: str) -> frozenset[str] | None:
    """Every file that differs between commit ``version`` and the checkout at ``repo`` (its working
    tree), or None when this clone does not have that commit."""
    diff = _git(repo, "diff", "--name-only", f"{version}^{{commit}}", "--")
    return frozenset(diff.stdout.split()) if diff.returncode == 0 else None


def _code(source: str) -> str | None:
    """A Python module's code without its comments and docstrings (the dump of its syntax tree once
    every module, class and function docstring is dropped), None when it does not parse."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                    and isinstance(first.value.value, str)):
                node.body = node.body[1:] or [ast.Pass()]
    return ast.dump(tree)


def code_differs(repo: Path, commit: str, file: str) -> bool:
    """Whether ``file`` (changed between ``commit`` and the checkout) differs in more than comments
    and docstrings; anything but a Python file present and parseable on both sides differs."""
    then = _git(repo, "show", f"{commit}:{file}")
    now = repo / file
    if not file.endswith(".py") or then.returncode != 0 or not now.is_file():
        return True
    before, after = _code(then.stdout), _code(now.read_text())
    return before is None or before != after


def _under(file: str, paths: list[str]) -> bool:
    return any(file == path or (path.endswith("/") and file.startswith(path)) for path in paths)


@dataclass
class GitMemo:
    """What one check asked git: the files changed since each commit (:func:`changed_since`) and
    whether a file's code differs (:func:`code_differs`), shared by every result computed there."""

    changed: dict[str, frozenset[str] | None] = field(default_factory=dict)
    differs: dict[tuple[str, str], bool] = field(default_factory=dict)

    def code_differs(self, repo: Path, commit: str, file: str) -> bool:
        if (commit, file) not in self.differs:
            self.differs[commit, file] = code_differs(repo, commit, file)
        return self.differs[commit, file]


def option_changes(recorded: dict[str, Any]) -> list[str]:
    """How the method options a result recorded (``config["methods"]``) differ in their fields from
    those a rerun records (:func:`bench.base.default_method_keys`): methods added or removed, and
    per method the option fields added (+) or removed (-)."""
    now = default_method_keys()
    added, removed = set(now) - set(recorded), set(recorded) - set(now)
    changes = [f"methods {change}: {', '.join(sorted(names))}"
               for change, names in (("added", added), ("removed", removed)) if names]
    for name in sorted(set(now) & set(recorded)):
        fields = [f"+ {key}" for key in sorted(set(now[name]) - set(recorded[name]))]
        fields += [f"- {key}" for key in sorted(set(recorded[name]) - set(now[name]))]
        if fields:
            changes.append(f"options of {name}: {', '.join(fields)}")
    return changes


def check_result(path: Path, repo: Path, memo: GitMemo | None = None) -> Verdict:
    """One result's verdict; ``memo`` keeps git's answers within one check."""
    memo = GitMemo() if memo is None else memo
    changed = memo.changed
    result = load_result(path)
    verdict = Verdict(str(path.resolve().relative_to(repo.resolve())))
    sources = stage_sources(result.target)
    recorded = result.environment.get("stages")
    for name in sources:
        now = STAGES[name].schema
        then = None if recorded is None else recorded.get(name)
        if then != now:
            verdict.schema_changes.append(f"{name}: {then if then is not None else 'not recorded'} -> {now}")
    env = result.environment
    versions = sorted(set(env.get("cells_code_versions", {}).values()) or {env.get("code_version", "")})
    for version in versions:
        commit = version.removesuffix("-dirty")
        if version.endswith("-dirty"):
            verdict.code_changes.append(f"computed from an uncommitted tree at {commit[:10]}")
        if commit not in changed:
            changed[commit] = changed_since(repo, commit) if re.fullmatch(r"[0-9a-f]{7,40}", commit) else None
        if changed[commit] is None:
            verdict.code_changes.append(f"code version {version!r} is not a commit in this clone")
            continue
        for name, paths in sources.items():
            files = sorted(file for file in changed[commit]
                           if _under(file, paths) and memo.code_differs(repo, commit, file))
            if files:
                verdict.code_changes.append(f"{name} ({', '.join(files)}) since {commit[:10]}")
    verdict.option_changes = option_changes(result.config.get("methods", {}))
    return verdict


def listed_stale(readme: Path) -> set[str]:
    """The result paths the README lists between its stale-results markers."""
    text = readme.read_text() if readme.exists() else ""
    if STALE_BEGIN not in text or STALE_END not in text:
        return set()
    block = text[text.index(STALE_BEGIN):text.index(STALE_END)]
    return set(re.findall(r"`(results/[^`]+\.json)`", block))


def check_all(results_dir: Path, repo: Path, readme: Path) -> tuple[list[Verdict], list[str]]:
    """Every result's verdict and the problems that make the check fail."""
    memo = GitMemo()
    verdicts = [check_result(path, repo, memo) for path in find_results(results_dir)]
    listed = listed_stale(readme)
    problems = []
    for verdict in verdicts:
        if verdict.stale and verdict.path not in listed:
            reasons = "; ".join(verdict.reasons)
            problems.append(f"{verdict.path}: stale ({reasons}) and not listed in the README")
        elif not verdict.stale and verdict.path in listed:
            problems.append(f"{verdict.path}: current, but the README lists it as stale")
    known = {verdict.path for verdict in verdicts}
    problems += [f"{path}: listed as stale in the README but there is no such result"
                 for path in sorted(listed - known)]
    return verdicts, problems
