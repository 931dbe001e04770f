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
    session.run("ruff", "check", "ddm", "baselines", "bench", "tests", "benchmarks", "noxfile.py")


@nox.session
def bench(session: nox.Session) -> None:
    """pytest-benchmark speed ratios at smoke (digits) and small (MNIST) scale, saved under
    .benchmarks/. Pass `-- small` or `-- smoke` to run one scale only."""
    session.install("-e", ".[dev]")
    scales = session.posargs or ["smoke", "small"]
    for scale in scales:
        session.run("pytest", "benchmarks", "-s", "--benchmark-autosave",
                    f"--benchmark-save={scale}", env={"DDM_BENCH_SCALE": scale})


@nox.session
def reproduce(session: nox.Session) -> None:
    """Regenerate every table and figure for a dataset (filled in by the benchmark-runner issue)."""
    session.skip("`ddm-bench run` arrives with the benchmark-runner issue")
