"""Importing this module registers every benchmark target in ``bench.base.TARGETS``; each target
class owns its rows, columns, paper values and plot."""

from bench import (  # noqa: F401
    figures,
    ladder,
    lds,
    locate,
    matrices,
    mislabel,
    noise,
    removal,
    stability,
    standard,
    timings,
    transfer,
    unlearning,
)
