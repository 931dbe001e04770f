"""Mislabel detection (bench/mislabel.py): flipped labels, self-influence, the detection metrics."""

import pytest
import torch

from bench.mislabel import detection, self_influence
from ddm.config import preset, with_overrides
from ddm.target import load_data


def test_a_seeded_tenth_of_the_training_labels_moves_to_another_class():
    config = preset("smoke", "digits")
    clean, noisy = load_data(config), load_data(with_overrides(config, label_noise=0.1))
    changed = (clean.train_y != noisy.train_y).nonzero().flatten()
    assert torch.equal(changed, noisy.flipped_rows) and len(changed) == round(0.1 * len(clean.train_y))
    assert torch.equal(clean.test_y, noisy.test_y) and torch.equal(clean.train_x, noisy.train_x)
    again = load_data(with_overrides(config, label_noise=0.1))
    assert torch.equal(again.train_y, noisy.train_y)  # seeded by subset_seed
    assert clean.flipped_rows is None


def test_detection_by_hand():
    flipped = torch.tensor([True, True, False, False, False, False, False, False, False, False])
    perfect = detection(torch.arange(10, 0, -1).double(), flipped)
    # the two flips ranked first: AUC 1; inspecting 1 image finds 1 of 2, 2 images find both
    assert perfect == {"AUC": 1.0, "top 10%": 0.5, "top 20%": 1.0}
    # one block of ties holding everything: a random order, the base rates
    tied = detection(torch.zeros(10), flipped)
    assert tied == {"AUC": 0.5, "top 10%": pytest.approx(0.1), "top 20%": pytest.approx(0.2)}
    # a cluster of 4 images (both flips among them) scored first: 10 % of 10 images = 1 image of that
    # block, whose expected yield is 2/4 flips -> 0.5 / 2 flips found = 0.25
    clustered = detection(torch.tensor([1.0] * 4 + [0.0] * 6),
                          torch.tensor([True, False, True, False] + [False] * 6))
    assert clustered["top 10%"] == pytest.approx(0.25) and clustered["top 20%"] == pytest.approx(0.5)
    # 2 flips x 8 clean pairs: 12 won against the other block, 4 tied inside the cluster (half each)
    assert clustered["AUC"] == pytest.approx((12 + 0.5 * 4) / 16)


def test_self_influence_is_the_own_clusters_relative_score_averaged_over_members():
    # 3 clusters, 4 training images: image 0, 1 in cluster 0; image 2 in 1; image 3 in 2
    scores = torch.tensor([[3.0, 1.0, 0.0, 0.0],
                           [0.0, 1.0, 6.0, 0.0],
                           [0.0, 1.0, 0.0, 3.0]])
    ids = torch.tensor([0, 0, 1, 2])
    # own score minus the column's mean: image 0: 3 - 1 = 2; image 1: 1 - 1 = 0; image 2: 6 - 2 = 4;
    # image 3: 3 - 1 = 2; cluster 0 averages its two images
    expected = torch.tensor([1.0, 4.0, 2.0], dtype=torch.float64)
    torch.testing.assert_close(self_influence(scores, ids), expected)


def test_first_order_scores_keep_the_signal_that_the_clamped_probability_loses():
    """Two clusters of two images; image 0 is the flip. Removing an image lowers its own label's
    probability by more than that probability (first order overshoots, as the library methods do
    on their own cluster): p + sum tau falls below EPS for both images' own cluster, the Dist2
    cross-entropy saturates at -log EPS for the flip and the clean image alike, and the ranking
    inverts; the first-order change of the cross-entropy, -sum tau / p, keeps the flip first."""
    from types import SimpleNamespace

    from bench.mislabel import method_scores
    from ddm.attributor import Queries
    from ddm.objectives import EPS

    p = torch.tensor([0.1, 0.9, 0.8, 0.8], dtype=torch.float64)  # each image's p of its own label
    # tau[i, q]: image i removed, change of p_label(q). Own cluster (0: images 0, 1): the flip's p
    # drops by far more than itself; the clean image's by a little more than itself.
    tau = torch.tensor([[-2.0, -0.5, 0.0, 0.0],
                        [-0.1, -0.5, 0.0, 0.0],
                        [0.05, 0.0, -0.3, -0.1],
                        [0.0, 0.05, -0.1, -0.3]], dtype=torch.float64)

    class Fake:
        def label_changes(self, queries):
            return tau

        def reference(self, queries):
            out = torch.zeros(4, 2, dtype=torch.float64)
            out[torch.arange(4), queries.labels] = p
            return out

    queries = Queries(torch.zeros(4, 1), torch.tensor([1, 0, 1, 1]))
    clustering = SimpleNamespace(n_clusters=2, cluster_ids=torch.tensor([0, 0, 1, 1]))
    scores = method_scores(Fake(), queries, clustering)
    assert scores.clamped[0, :2].all() and not scores.clamped[1].any()
    torch.testing.assert_close(scores.dist2[0, :2], torch.full((2,), -torch.tensor(EPS).log().item(),
                                                                dtype=torch.float64))
    torch.testing.assert_close(scores.first_order[:, 0], torch.tensor([21.0, -0.5], dtype=torch.float64))
    torch.testing.assert_close(scores.samples, -tau.diagonal() / p)

    def own_relative(values):  # each image of cluster 0: its own removal's score minus the mean over removals
        return values[0, :2] - values[:, :2].mean(0)

    # clamped, the flip (image 0) scores below the clean image 1: both own cross-entropies sit at
    # -log EPS, and the flip's is higher elsewhere (its p is low), so subtracting the mean inverts them
    assert own_relative(scores.dist2)[0] < own_relative(scores.dist2)[1]
    assert own_relative(scores.first_order)[0] > own_relative(scores.first_order)[1]
    assert self_influence(scores.first_order, clustering.cluster_ids)[0] > 0


@pytest.mark.slow  # about a minute: two tiny runs of every method, besides ran_all's
def test_a_stopped_seed_resumes_at_the_row_it_was_on_and_computes_the_same_cells(ran_all, tmp_path,
                                                                                   monkeypatch):
    """A seed of mislabel takes hours at MNIST small: each finished row is kept in the cells'
    partial (and with ``--checkpoint-dir`` in that directory), so a run stopped in a method (here:
    the third one scored) recomputes none of the rows before it when resumed, even on a machine
    with an empty cache, builds the oracle only for the floor once the exact row is kept, and the
    resumed seed's cells are those of an uninterrupted run (ran_all's seed 0, computed on one thread
    as these runs are)."""
    import json

    from click.testing import CliRunner

    from bench.cli import main
    from tests.test_bench import TINY_RUN

    def args(home: str, out: str) -> list[str]:
        return ["--home", str(tmp_path / home), "run", "mislabel", *TINY_RUN, "--seeds", "1",
                "--results-dir", str(tmp_path / out), "--tables-dir", str(tmp_path / out),
                "--checkpoint-dir", str(tmp_path / out / "checkpoints")]

    def run(home: str, out: str) -> dict:
        result = CliRunner().invoke(main, args(home, out))
        assert result.exit_code == 0, result.output
        data = json.loads((tmp_path / out / "mislabel" / "digits" / "smoke" / "mislabel.json").read_text())
        return {row: {column: cell["values"] for column, cell in columns.items()}
                for row, columns in data["cells"].items()}

    computed = ran_all[0] / "results" / "mislabel" / "digits" / "smoke" / "mislabel.json"
    data = json.loads(computed.read_text())
    uninterrupted = {row: {column: cell["values"][:1] for column, cell in columns.items()}
                     for row, columns in data["cells"].items()}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _stop_and_resume(run, args, uninterrupted, monkeypatch)
    finally:
        torch.set_num_threads(threads)


def _stop_and_resume(run, args, uninterrupted, monkeypatch) -> None:
    from click.testing import CliRunner

    import bench.mislabel as mislabel
    from bench.cli import main

    scored, real = [], mislabel.method_scores

    def stop_at_third(attributor, queries, clustering):
        scored.append(type(attributor).__name__)
        if len(scored) == 3:
            raise KeyboardInterrupt
        return real(attributor, queries, clustering)

    monkeypatch.setattr(mislabel, "method_scores", stop_at_third)
    stopped = CliRunner().invoke(main, args("stopped", "b"))
    assert stopped.exit_code != 0 and len(scored) == 3
    scored.clear()

    def counted(attributor, queries, clustering):
        scored.append(type(attributor).__name__)
        return real(attributor, queries, clustering)

    real_oracle = mislabel.build_oracle

    def oracle_built(*arguments):
        scored.append("oracle")
        return real_oracle(*arguments)

    monkeypatch.setattr(mislabel, "method_scores", counted)
    monkeypatch.setattr(mislabel, "build_oracle", oracle_built)
    resumed = run("moved", "b")  # another machine: an empty cache, the carried rows
    n_methods = len(uninterrupted) - 2  # the training-loss and exact rows score no method
    assert scored.count("oracle") == 1 and scored[-1] == "oracle"  # for the floor, after every row
    assert len(scored) - 1 == n_methods - 2  # the two rows finished before the stop were kept
    assert resumed == uninterrupted and list(resumed) == list(uninterrupted)
