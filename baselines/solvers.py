"""Linear algebra on Hessian-vector products only: LiSSA, the exact dense solve, Arnoldi.

Every solver sees the Hessian H [P, P] only through a function applying it to a block of flat
vectors [V, P] -> [V, P], so the same code runs on a neural network's loss (``baselines.influence``)
and on an explicit matrix (the tests).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ddm.errors import ConfigError

HVP = Callable[[Tensor], Tensor]  # vectors [V, P] -> H vectors [V, P]
StepHVP = Callable[[Tensor, int], Tensor]  # (vectors [V, P], step) -> H v on that step's mini-batch

# LiSSA's iterate obeys ||v_j|| <= (j + 1) ||g|| whenever every mini-batch satisfies
# 0 <= H_b + damping I <= 2 scale I (each step adds g and never expands). A mini-batch may break
# the bound a little; ten times it means the recursion is expanding.
GROWTH_SLACK = 10.0
# Arnoldi stops when the new Krylov direction is this small relative to H's action: the Krylov
# space is then invariant and further directions would be rounding noise.
BREAKDOWN_TOL = 1e-10


def _bar(total: int, desc: str, progress: bool | None) -> tqdm:
    return tqdm(total=total, desc=desc, leave=False, disable=None if progress is None else not progress)


def lissa(hvp: StepHVP, rhs: Tensor, *, depth: int, scale: float, damping: float,
          progress: bool | None = None, desc: str = "LiSSA") -> Tensor:
    """(H + damping I)^-1 rhs by the LiSSA recursion (Agarwal et al. 2017; Koh & Liang 2017).

    v_0 = g, v_{j+1} = g + (I - (H_j + damping I) / scale) v_j with H_j the step's mini-batch
    Hessian; v_depth / scale -> (H + damping I)^-1 g when 0 < H + damping I < 2 scale I. Truncating
    at ``depth`` damps further every direction with curvature below about scale / depth.
    rhs [V, P] -> [V, P]. Raises ``ConfigError`` (never returns NaN) when the iterates blow up.
    """
    vectors = rhs.clone()
    rhs_norm = rhs.norm(dim=1).clamp_min(torch.finfo(rhs.dtype).tiny)
    for step in tqdm(range(depth), desc=desc, leave=False,
                     disable=None if progress is None else not progress):
        vectors = rhs + vectors - (hvp(vectors, step) + damping * vectors) / scale
        growth = float((vectors.norm(dim=1) / rhs_norm).max())
        if not growth <= GROWTH_SLACK * (step + 2):  # also catches NaN / inf
            raise ConfigError(
                f"LiSSA diverged at step {step + 1}: the iterate grew to {growth:.3g} x the right-hand "
                f"side. Either the Hessian's top eigenvalue exceeds scale={scale:g} (raise `scale`, or "
                f"leave it None to estimate it) or H + damping I has strongly negative curvature "
                f"(raise `damping`, now {damping:g})")
    return vectors / scale


def hessian_matrix(hvp: HVP, n_params: int, *, dtype: torch.dtype, device: torch.device,
                   chunk: int = 256, progress: bool | None = None) -> Tensor:
    """The dense H [P, P] from HVPs of the basis vectors, ``chunk`` at a time, symmetrized.

    (Rounding makes H e_i and H e_j disagree in the last bits; the mean of H and H^T is the
    nearest symmetric matrix.)"""
    hessian = torch.empty(n_params, n_params, dtype=torch.float64, device=device)
    bar = _bar(n_params, "Hessian", progress)
    for start in range(0, n_params, chunk):
        stop = min(start + chunk, n_params)
        basis = torch.zeros(stop - start, n_params, dtype=dtype, device=device)
        basis[:, start:stop] = torch.eye(stop - start, dtype=dtype, device=device)
        hessian[start:stop] = hvp(basis).to(torch.float64)
        bar.update(stop - start)
    bar.close()
    return (hessian + hessian.T) / 2


def damped_solve(hessian: Tensor, rhs: Tensor, damping: float) -> Tensor:
    """(H + damping I)^-1 rhs in float64: hessian [P, P], rhs [V, P] -> [V, P] (rhs dtype)."""
    matrix = hessian.to(torch.float64) + damping * torch.eye(len(hessian), dtype=torch.float64,
                                                             device=hessian.device)
    try:
        solution = torch.linalg.solve(matrix, rhs.to(torch.float64).T).T
    except torch.linalg.LinAlgError as err:
        raise ConfigError(f"H + damping I is singular (damping={damping:g}); raise `damping`") from err
    return solution.to(rhs.dtype)


def arnoldi(hvp: HVP, start: Tensor, iterations: int,
            progress: bool | None = None) -> tuple[Tensor, Tensor]:
    """Orthonormal Krylov basis of H from ``start`` [P] and H's projection onto it.

    Returns basis [m + 1, P] and the upper Hessenberg matrix [m + 1, m] with H Q_m = Q_{m+1} A
    (m <= iterations; fewer when the Krylov space becomes invariant). Gram-Schmidt runs twice per
    step: once is not enough in floating point to keep 40+ directions orthogonal. Float64 throughout.
    """
    n_params = len(start)
    basis = torch.zeros(iterations + 1, n_params, dtype=torch.float64, device=start.device)
    projection = torch.zeros(iterations + 1, iterations, dtype=torch.float64, device=start.device)
    basis[0] = start.to(torch.float64) / start.norm()
    done = 0
    for step in tqdm(range(iterations), desc="Arnoldi", leave=False,
                     disable=None if progress is None else not progress):
        image = hvp(basis[step:step + 1].to(start.dtype))[0].to(torch.float64)
        direction = image.clone()
        for _ in range(2):
            overlap = basis[:step + 1] @ direction
            direction -= overlap @ basis[:step + 1]
            projection[:step + 1, step] += overlap
        norm = direction.norm()
        projection[step + 1, step] = norm
        done = step + 1
        if norm <= BREAKDOWN_TOL * image.norm().clamp_min(torch.finfo(torch.float64).tiny):
            break
        basis[step + 1] = direction / norm
    return basis[:done + 1], projection[:done + 1, :done]


def top_eigenpairs(hvp: HVP, n_params: int, *, top: int, iterations: int, seed: int,
                   dtype: torch.dtype, device: torch.device,
                   progress: bool | None = None) -> tuple[Tensor, Tensor]:
    """The ``top`` largest eigenvalues [p] and eigenvectors [p, P] (float64) of a symmetric H by
    Arnoldi from a seeded random start (Schioppa et al. 2022): the Ritz pairs of H's projection.

    H is symmetric, so its projection is symmetric tridiagonal up to rounding and ``eigh`` of its
    symmetric part gives real Ritz values. p <= min(top, Krylov dimension reached)."""
    generator = torch.Generator().manual_seed(seed)
    start = torch.randn(n_params, generator=generator, dtype=torch.float64).to(device=device, dtype=dtype)
    basis, projection = arnoldi(hvp, start, min(iterations, n_params), progress)
    square = projection[:-1]  # [m, m]: H restricted to the first m basis vectors
    values, coefficients = torch.linalg.eigh((square + square.T) / 2)
    order = values.argsort(descending=True)[:top]
    vectors = coefficients[:, order].T @ basis[:len(square)]
    return values[order], vectors
