"""Every check has one entry point: `nox -s tests`, `nox -s lint`, `nox -s bench`, `nox -s reproduce`."""

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True  # torch is large; reinstalling it each run costs minutes


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite, including the smoke-scale `slow` quality checks (as CI runs it)."""
    session.install("-e", ".[dev]")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Static checks with ruff."""
    session.install("ruff")
    session.run("ruff", "check", "ddm", "baselines", "bench", "tests", "noxfile.py")


@nox.session
def bench(session: nox.Session) -> None:
    """pytest-benchmark timings (filled in by the DDM-core and benchmark-runner issues)."""
    session.skip("no benchmarks yet: they arrive with the DDM-core issue")


@nox.session
def reproduce(session: nox.Session) -> None:
    """Regenerate every table and figure for a dataset (filled in by the benchmark-runner issue)."""
    session.skip("`ddm-bench run` arrives with the benchmark-runner issue")
