"""Importing this module registers every benchmark target in ``bench.base.TARGETS``; each target
class owns its rows, columns, paper values and plot."""

from bench import figures, ladder, lds, locate, matrices, removal, timings, transfer, unlearning  # noqa: F401
