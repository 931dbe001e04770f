"""Influence baselines (koh, fastif, scaleup): solvers on known matrices, a hand-computed golden case,
Koh & Liang's convex validation against exact leave-cluster-out retraining, and the attributors end
to end on the tiny digits target."""

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from baselines.fastif import FastIFAttributor, FastIFConfig
from baselines.influence import LissaConfig, LossProblem, inverse_hvp, validate_options
from baselines.koh import KohAttributor
from baselines.scaleup import ScaleUpAttributor, ScaleUpConfig
from baselines.solvers import damped_solve, hessian_matrix, lissa, top_eigenpairs
from ddm.attributor import METHODS, Queries
from ddm.cluster import sequential_clusters
from ddm.errors import ConfigError
from ddm.functional import model_params
from ddm.resolver import Resolver
from ddm.stages import get_clustering
from tests.conftest import TINY

F64 = torch.float64


def rotated(spectrum, seed=0):
    """Q diag(spectrum) Q^T with a seeded random orthogonal Q: [n, n] float64."""
    generator = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(len(spectrum), len(spectrum), generator=generator, dtype=F64))
    return q @ torch.diag(spectrum.to(F64)) @ q.T


def relative_error(estimate, truth):
    return float((estimate - truth).norm() / truth.norm())


# --- solvers on explicit matrices -------------------------------------------------------------

def test_lissa_equals_the_direct_solve_on_an_spd_matrix():
    matrix = rotated(torch.linspace(0.5, 5.0, 40))
    rhs = torch.randn(3, 40, generator=torch.Generator().manual_seed(1), dtype=F64)
    solved = lissa(lambda vectors, step: vectors @ matrix, rhs, depth=400, scale=10.0, damping=0.1)
    assert relative_error(solved, damped_solve(matrix, rhs, 0.1)) < 1e-3


def test_arnoldi_recovers_a_planted_top_spectrum():
    planted = torch.tensor([100.0, 60.0, 35.0, 20.0, 12.0])
    rest = torch.rand(195, generator=torch.Generator().manual_seed(2))  # bulk in [0, 1)
    matrix = rotated(torch.cat([planted, rest]), seed=3)
    values, vectors = top_eigenpairs(lambda v: v @ matrix, 200, top=5, iterations=40, seed=0, dtype=F64,
                                     device=torch.device("cpu"))
    torch.testing.assert_close(values, planted.to(F64), rtol=1e-4, atol=0)
    residual = vectors @ matrix - values[:, None] * vectors  # eigenvector check: H v = lambda v
    assert float(residual.norm(dim=1).max()) < 1e-3


def test_lissa_raises_a_clear_error_instead_of_diverging():
    matrix = rotated(torch.linspace(0.5, 5.0, 40))
    rhs = torch.ones(2, 40, dtype=F64)
    with pytest.raises(ConfigError, match="scale"):
        lissa(lambda vectors, step: vectors @ matrix, rhs, depth=200, scale=2.0, damping=0.0)
    with pytest.raises(ConfigError, match="diverged"):  # a NaN HVP never leaks out as a NaN result
        lissa(lambda vectors, step: vectors * float("nan"), rhs, depth=5, scale=10.0, damping=0.0)


# --- the golden case: H known in closed form ---------------------------------------------------

def one_hot_problem(n_classes=3, n=6):
    """A bias-free linear model at W = 0 on one-hot inputs e_i with labels i mod C.

    There p = 1/C everywhere and H(V) = (1/n) A V with A = I/C - 11^T/C^2; every sample gradient
    (p - e_y) e_i^T has 1^T (p - e_y) = 0, so it is an eigenvector of H with eigenvalue 1/(nC).
    """
    model = nn.Linear(n, n_classes, bias=False).double()
    params = {"weight": torch.zeros(n_classes, n, dtype=F64)}
    labels = torch.arange(n) % n_classes
    return LossProblem(model, params, torch.eye(n, dtype=F64), labels, 0.0, lambda x: x)


@pytest.mark.parametrize("solver", ["exact", "lissa"])
def test_cluster_influence_equals_the_hand_value(solver):
    problem, damping, n, n_classes = one_hot_problem(), 0.1, 6, 3
    cluster_ids = torch.tensor([0, 0, 1, 1, 2, 2])
    sums = problem.cluster_gradient_sums(cluster_ids, 3)
    options = LissaConfig(solver=solver, damping=damping, depth=80, batch_size=n)
    changes = inverse_hvp(problem, sums, options) / n
    moved = problem.output_jvp(torch.eye(n, dtype=F64)[:1], changes)  # query e_0: [K, 1, C]
    # By hand: only cluster 0 (holding sample 0, label 0) moves e_0's prediction, by
    # A (p - e_0) / (1/C + n damping) = (p - e_0) / (1 + n C damping).
    expected = torch.zeros(3, 1, n_classes, dtype=F64)
    expected[0, 0] = (torch.tensor([1 / 3, 1 / 3, 1 / 3], dtype=F64) - torch.tensor([1.0, 0, 0], dtype=F64))
    expected[0, 0] /= 1 + n * n_classes * damping
    torch.testing.assert_close(moved, expected, rtol=1e-6, atol=1e-9)


# --- Koh & Liang's convex validation -----------------------------------------------------------

WEIGHT_DECAY = 0.01  # L2 on every parameter: makes the logistic regression strictly convex


def fit_logistic(model, params, inputs, labels):
    """Minimize mean CE + wd/2 ||theta||^2 to convergence (full-batch L-BFGS) from ``params``."""
    weights = {name: value.clone().requires_grad_(True) for name, value in params.items()}
    optimizer = torch.optim.LBFGS(list(weights.values()), lr=1, max_iter=500, tolerance_grad=1e-12,
                                  tolerance_change=1e-15, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        logits = torch.func.functional_call(model, weights, (inputs,))
        penalty = sum(weight.pow(2).sum() for weight in weights.values())
        loss = F.cross_entropy(logits, labels) + WEIGHT_DECAY / 2 * penalty
        loss.backward()
        return loss

    optimizer.step(closure)
    return {name: value.detach() for name, value in weights.items()}


@pytest.fixture(scope="module")
def convex_case(digits_data):
    """Multinomial logistic regression on flattened 8x8 digits, its optimum, 30 sequential clusters,
    and the exact leave-cluster-out change of the true-class probability on 20 test digits."""
    inputs, labels = digits_data.train_x.flatten(1).to(F64), digits_data.train_y
    queries, query_labels = digits_data.test_x[:20].flatten(1).to(F64), digits_data.test_y[:20]
    torch.manual_seed(0)
    model = nn.Linear(inputs.shape[1], 10).double()
    optimum = fit_logistic(model, model_params(model), inputs, labels)
    cluster_ids = sequential_clusters(labels, 10, 3)
    base = torch.func.functional_call(model, optimum, (queries,)).softmax(-1)
    actual = []
    for k in range(30):
        keep = cluster_ids != k
        retrained = fit_logistic(model, optimum, inputs[keep], labels[keep])  # warm start
        actual.append(torch.func.functional_call(model, retrained, (queries,)).softmax(-1) - base)
    true_class = torch.stack(actual)[:, torch.arange(20), query_labels]  # [K, n_q]
    problem = LossProblem(model, optimum, inputs, labels, WEIGHT_DECAY, lambda x: x)
    return problem, cluster_ids, queries, query_labels, true_class


# Measured Pearson: 0.958 (exact), 0.935 (LiSSA). Not ~1: a cluster is 3% of this training set, and
# its removal moves some probabilities by up to 0.38, past the first-order regime.
@pytest.mark.parametrize("options", [LissaConfig(solver="exact", damping=0.0),
                                     LissaConfig(solver="lissa", damping=0.0, depth=500, batch_size=100)],
                         ids=["exact", "lissa"])
def test_influence_predicts_leave_cluster_out_retraining(convex_case, options):
    problem, cluster_ids, queries, query_labels, actual = convex_case
    sums = problem.cluster_gradient_sums(cluster_ids, 30)
    changes = inverse_hvp(problem, sums, options) / problem.n
    predicted = problem.output_jvp(queries, changes)[:, torch.arange(20), query_labels]
    pearson = np.corrcoef(predicted.flatten().numpy(), actual.flatten().numpy())[0, 1]
    assert pearson >= 0.9, pearson


def test_lissa_solves_each_right_hand_side_as_if_alone(convex_case):
    problem, cluster_ids = convex_case[:2]
    sums = problem.cluster_gradient_sums(cluster_ids, 30)[:4]
    options = LissaConfig(solver="lissa", depth=30, batch_size=50)
    together = inverse_hvp(problem, sums, options)
    alone = torch.cat([inverse_hvp(problem, sums[k:k + 1], options) for k in range(4)])
    torch.testing.assert_close(together, alone, rtol=1e-9, atol=1e-12)


def test_hvps_equal_the_autograd_hessian_whatever_the_chunking(convex_case):
    problem = convex_case[0]

    def loss(params):
        logits = torch.func.functional_call(problem.module, params, (problem.inputs,))
        return F.cross_entropy(logits, problem.labels) + WEIGHT_DECAY / 2 * sum(
            value.pow(2).sum() for value in params.values())

    blocks = torch.func.hessian(loss)(problem.params)
    names = list(problem.params)
    full = torch.cat([torch.cat([blocks[a][b].reshape(problem.params[a].numel(), -1) for b in names], 1)
                      for a in names])
    for budget in (1 << 16, 700):  # one call per chunk of basis vectors, or many small ones
        chunked = dataclasses.replace(problem, sample_vectors_per_call=budget)
        built = hessian_matrix(chunked.hvp, chunked.n_params, dtype=F64, device=torch.device("cpu"))
        torch.testing.assert_close(built, full, rtol=1e-9, atol=1e-12)


# --- the attributors on the tiny digits target -------------------------------------------------

@pytest.fixture(scope="module")
def clustering(digits_data, tiny_resolver):
    return get_clustering(TINY, digits_data, resolver=tiny_resolver, device="cpu", progress=False)


@pytest.fixture(scope="module")
def queries(digits_data):
    return Queries(digits_data.test_x[:6], digits_data.test_y[:6])


@pytest.mark.parametrize("name", ["koh", "fastif", "scaleup"])
def test_each_method_attributes_every_objective_and_reuses_its_fit(name, digits_target, digits_data,
                                                                   clustering, queries, tmp_path):
    cache = Resolver(tmp_path)
    attributor = METHODS[name](TINY, resolver=cache, progress=False)
    attributor.fit(digits_target, digits_data, clustering)
    assert not attributor.loaded_from_cache
    n_clusters = clustering.n_clusters
    for objective in ("dist1", "dist2", "dist3"):
        scores = attributor.attribute(queries, objective)
        assert scores.shape == (n_clusters, len(queries)) and torch.isfinite(scores).all()
    assert attributor.attribute(queries, "validation").shape == (n_clusters, 1)
    again = METHODS[name](TINY, resolver=cache, progress=False)
    again.fit(digits_target, digits_data, clustering)
    assert again.loaded_from_cache
    torch.testing.assert_close(again.predict_removals(queries), attributor.predict_removals(queries))


def removals(attributor_class, options, target, data, clustering, queries, cache):
    attributor = attributor_class(TINY, options=options, resolver=cache, progress=False)
    attributor.fit(target, data, clustering)
    return attributor.predict_removals(queries)


def test_all_neighbours_fastif_and_full_spectrum_scaleup_equal_exact_koh(digits_target, digits_data,
                                                                         clustering, queries, tmp_path):
    """Invariances: FastIF with k = N has nothing to skip; Arnoldi over all P dimensions inverts H."""
    cache, args = Resolver(tmp_path), (digits_target, digits_data, clustering, queries)
    exact = removals(KohAttributor, LissaConfig(solver="exact", damping=0.0), *args, cache)
    n_params = 10 * (digits_target.model.embed_dim + 1)
    every = FastIFConfig(solver="exact", damping=0.0, neighbors=len(digits_data.train_y))
    full = ScaleUpConfig(top_eigen=n_params, iterations=n_params)
    assert exact.sub(removals(FastIFAttributor, FastIFConfig(), *args, cache)).abs().max() > 0
    torch.testing.assert_close(removals(FastIFAttributor, every, *args, cache), exact, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(removals(ScaleUpAttributor, full, *args, cache), exact, rtol=1e-5, atol=1e-7)


def test_lissa_over_all_parameters_of_the_network(digits_target, digits_data, clustering, queries, tmp_path):
    options = LissaConfig(params="all", solver="lissa", depth=8, batch_size=32)
    removed = removals(KohAttributor, options, digits_target, digits_data, clustering, queries,
                       Resolver(tmp_path))
    assert removed.shape == (clustering.n_clusters, len(queries), 10) and torch.isfinite(removed).all()


def test_options_are_validated():
    # options check themselves when made, so a bad value never reaches a fit or a cache key
    with pytest.raises(ConfigError, match="params"):
        LissaConfig(params="middle")
    with pytest.raises(ConfigError, match="solver"):
        LissaConfig(solver="cg")
    with pytest.raises(ConfigError, match="depth"):
        LissaConfig(depth=0)
    with pytest.raises(ConfigError, match="damping"):
        LissaConfig(damping=float("nan"))
    with pytest.raises(ConfigError, match="neighbors"):
        FastIFConfig(neighbors=0)
    with pytest.raises(ConfigError, match="top_eigen"):
        ScaleUpConfig(top_eigen=0)
    validate_options(LissaConfig())  # the defaults pass
