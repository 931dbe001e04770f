"""The README's Python snippet runs as printed (a reader's first contact with the library API)."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_the_readme_has_one_python_snippet():
    assert len(python_snippets()) == 1


@pytest.mark.slow
def test_the_readme_python_snippet_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("DDM_BENCH_HOME", str(tmp_path / "home"))  # the snippet uses the default cache
    namespace: dict = {}
    exec(compile(python_snippets()[0], str(README), "exec"), namespace)  # noqa: S102 (our own README)
    stages, scores, located = namespace["stages"], namespace["scores"], namespace["located"]
    assert scores.shape == (stages.clustering.n_clusters, 20)
    assert located.shape == (20,) and int(located.max()) < stages.clustering.n_clusters
    assert namespace["koh"].attribute is not None
