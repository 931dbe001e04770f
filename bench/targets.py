"""Importing this module registers every benchmark target in ``bench.runner.TARGETS`` (and the
figure plotters in ``bench.render.PLOTTERS``)."""

from bench import figures, ladder, lds, locate, matrices, removal, timings, transfer, unlearning  # noqa: F401
