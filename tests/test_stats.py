"""The two-stage bootstrap and the paired comparisons (bench/stats.py): hand-computed cases."""

import json
import math

import numpy as np
import pytest

from bench.stats import mean_interval, paired, ratio_of_means, replicate_means


def test_one_seed_of_two_queries_has_the_hand_computed_bootstrap_distribution():
    # queries {0, 1}, drawn twice with replacement: mean 0 (p 1/4), 1/2 (p 1/2), 1 (p 1/4)
    replicates = replicate_means([np.array([[0.0], [1.0]])], resamples=4000)[:, 0]
    for value, probability in ((0.0, 0.25), (0.5, 0.5), (1.0, 0.25)):
        share = float((replicates == value).mean())
        assert abs(share - probability) < 4 * math.sqrt(probability * (1 - probability) / 4000), value
    interval = mean_interval([[0.0, 1.0]])
    assert (interval.estimate, interval.low, interval.high) == (0.5, 0.0, 1.0)


def test_two_seeds_of_unequal_size_draw_each_seeds_own_queries():
    # seed a has one query (value 0), seed b three (value 1): a replicate of seeds (a, a) pools 2
    # zeros, (a, b) or (b, a) one zero and three ones (3/4), (b, b) six ones; each seed's draws stay
    # within its own queries
    replicates = replicate_means([np.array([[0.0]]), np.array([[1.0], [1.0], [1.0]])], resamples=4000)
    values, counts = np.unique(replicates[:, 0], return_counts=True)
    assert list(values) == [0.0, 0.75, 1.0]
    for count, probability in zip(counts, (0.25, 0.5, 0.25), strict=True):
        assert abs(count / 4000 - probability) < 4 * math.sqrt(probability * (1 - probability) / 4000)


def test_seeds_are_resampled_before_queries():
    # two seeds, each constant: resampling queries alone would give [0.5, 0.5]; by seed it is
    # 0 (p 1/4), 1/2 (p 1/2) or 1 (p 1/4), so the 95 % interval is [0, 1]
    interval = mean_interval([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    assert (interval.estimate, interval.low, interval.high) == (0.5, 0.0, 1.0)
    assert (interval.seeds, interval.queries) == (2, 6)
    constant = mean_interval([[2.0, 2.0], [2.0, 2.0]])
    assert (constant.low, constant.high) == (2.0, 2.0)


def test_the_interval_is_deterministic_and_drops_undefined_queries():
    values = [[0.1, 0.5, float("nan"), 0.3], [0.2, 0.9, 0.4, 0.6]]
    first, second = mean_interval(values), mean_interval(values)
    assert first == second
    assert first.queries == 7
    assert first.estimate == pytest.approx(np.mean([0.1, 0.5, 0.3, 0.2, 0.9, 0.4, 0.6]))
    assert mean_interval([[float("nan")]]) is None


def test_the_normalized_score_is_the_ratio_of_means_not_the_mean_of_ratios():
    # seed 1: located 1, random 0, oracle 1 (ratio 1); seed 2: located 0.1, random 0, oracle 0.01
    # (ratio 10): the mean of ratios is 5.5, the ratio of means 1.1 / 1.01
    interval = ratio_of_means([[1.0], [0.1]], [[0.0], [0.0]], [[1.0], [0.01]])
    assert interval.estimate == pytest.approx(1.1 / 1.01)


def test_paired_differences_and_win_rate():
    a = [[1.0, 2.0, 3.0], [0.0, 5.0, 1.0]]
    b = [[0.0, 2.0, 4.0], [0.0, 4.0, 0.0]]
    # differences 1, 0, -1, 0, 1, 1: mean 1/3; wins 3, ties 2 (half each), losses 1 -> 4/6
    result = paired(a, b)
    assert result.difference.estimate == pytest.approx(1 / 3)
    assert result.win_rate == pytest.approx(4 / 6)
    assert result.difference.low <= 1 / 3 <= result.difference.high


def _result_with_queries():
    from bench.results import Result

    result = Result(target="table1", dataset="mnist", scale="small", title="T", description="d",
                    rows=["DDM-full", "Random Select", "Predict-based"], columns=["dist1"], cells={},
                    seeds=[0, 1], config={"scale": "small"}, environment={"code_version": "abc"})
    ddm = [[0.3, 0.2, 0.4], [0.5, 0.1, 0.3]]
    for seed in range(2):
        oracle, random = [0.6, 0.6, 0.6], [0.1, 0.1, 0.1]
        result.cell("DDM-full", "dist1").add(float(np.mean(ddm[seed])), 1.0, queries={
            "value": ddm[seed], "random": random, "oracle": oracle, "top1": [1.0, 0.0, 1.0]})
        result.cell("Random Select", "dist1").add(0.1, 0.0, queries={"value": random})
        result.cell("Predict-based", "dist1").add(0.2, 1.0)  # no per-query values: mean ± std
    return result, ddm


def test_cells_with_per_query_values_render_intervals_and_paired_comparisons():
    import bench.targets  # noqa: F401  (the table's paired rows)
    from bench.render import render_markdown
    from bench.results import Result

    result, ddm = _result_with_queries()
    interval = mean_interval(ddm)
    text = render_markdown(result, {"dist1": 100.0})
    low, high = 100 * interval.low, 100 * interval.high
    assert f"| DDM-full | {100 * interval.estimate:.3g} [{low:.3g}, {high:.3g}]" in text
    assert "| Predict-based | 20 ± 0 |" in text
    # DDM beats random select (0.1) on 5 of 6 pairs and ties one (half a win): 5.5 / 6; by 0.3 - 0.1
    assert "| DDM-full | Random Select | 20 [10, 30], 92% |" in text
    assert "| DDM-full | Predict-based |" not in text  # no per-query values to pair
    normalized = ratio_of_means(ddm, [[0.1] * 3] * 2, [[0.6] * 3] * 2)
    assert normalized.estimate == pytest.approx((0.3 - 0.1) / (0.6 - 0.1))
    assert f"{normalized.estimate:.3g} [" in text
    # the JSON round trip keeps the per-query values and stores the interval beside them
    again = Result.from_dict(json.loads(json.dumps(result.to_dict())))
    assert again.cell("DDM-full", "dist1").queries["value"] == ddm
    stored = result.to_dict()["cells"]["DDM-full"]["dist1"]["intervals"]["value"]
    assert (stored["low"], stored["high"]) == (interval.low, interval.high)


def test_a_seed_without_per_query_values_drops_them_for_the_cell():
    from bench.results import Cell

    cell = Cell()
    cell.add(0.5, 1.0, queries={"value": [0.4, 0.6]})
    cell.add(0.7, 1.0)
    assert cell.queries == {} and cell.interval() is None
    cell.add(0.2, 1.0, queries={"value": [0.2]})
    assert cell.queries == {} and len(cell.values) == 3


def test_a_spearman_that_repeats_an_earlier_objectives_is_printed_once():
    import bench.targets  # noqa: F401
    from bench.render import extra_table
    from bench.results import Result

    result = Result(target="table1", dataset="mnist", scale="small", title="T", description="d",
                    rows=["DDM-full"], columns=["dist1", "dist2", "dist3"], cells={}, seeds=[0],
                    config={}, environment={})
    for column, spearman in (("dist1", [0.5, 0.2]), ("dist2", [0.1, 0.3]), ("dist3", [0.5, 0.2])):
        result.cell("DDM-full", column).add(0.0, 0.0, spearman=float(np.mean(spearman)),
                                            queries={"spearman": spearman})
    line = extra_table(result)[-1]
    assert line.endswith("| = dist1 |") and line.count("= ") == 1


def test_the_effective_number_of_queries_by_hand_and_in_the_rendered_table():
    import bench.targets  # noqa: F401
    from bench.render import concentration_lines, effective_queries
    from bench.results import Result

    assert effective_queries([1.0, 1.0, 1.0, 1.0]) == 4.0  # equal effects: every query counts
    assert effective_queries([0.0, 2.0, 0.0]) == 1.0  # one query holds everything
    assert effective_queries([3.0, 1.0]) == pytest.approx(16 / 10)  # (3 + 1)^2 / (9 + 1)
    assert math.isnan(effective_queries([0.0, 0.0]))
    result = Result(target="table1", dataset="mnist", scale="small", title="T", description="d",
                    rows=["Random Select", "DDM-full"], columns=["dist1"], cells={}, seeds=[0, 1],
                    config={}, environment={})
    # the gain over random g = oracle - random: seed 0 (3, 1) -> 1.6; seed 1 (1, 1) -> 2;
    # pooled (3, 1, 1, 1): 36 / 12 = 3
    for oracle, random in (([3.5, 1.5], [0.5, 0.5]), ([1.0, 2.0], [0.0, 1.0])):
        for row in result.rows:
            result.cell(row, "dist1").add(0.0, 0.0, queries={"value": random, "oracle": oracle,
                                                             "random": random})
    line = concentration_lines(result)[0]
    assert line.endswith("dist1: 1.6, 2 of 2 per seed, pooled 3 of 4.")
    assert concentration_lines(Result(target="table1", dataset="mnist", scale="small", title="T",
                                      description="d", rows=[], columns=["dist1"], cells={},
                                      seeds=[0], config={}, environment={})) == []


def test_an_interval_of_the_committed_quickstart_table_recomputes_from_its_per_query_values():
    """results/ holds the per-query values behind Table 1; the interval the table shows is theirs."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    data = json.loads((root / "results" / "table1" / "digits" / "smoke" / "table1.json").read_text())
    cell = data["cells"]["DDM-full"]["dist1"]
    per_query = cell["queries"]["value"]
    assert len(per_query) == len(data["seeds"]) and all(len(q) == data["n_queries"] for q in per_query)
    interval = mean_interval(per_query)
    assert interval.estimate == pytest.approx(cell["mean"], rel=1e-12)
    stored = cell["intervals"]["value"]
    assert (interval.low, interval.high) == pytest.approx((stored["low"], stored["high"]), rel=1e-12)
    table = (root / "tables" / "table1_digits_smoke.md").read_text()
    text = f"{100 * interval.estimate:.3g} [{100 * interval.low:.3g}, {100 * interval.high:.3g}]"
    assert any(line.startswith("| DDM-full |") and text in line for line in table.splitlines()), text
