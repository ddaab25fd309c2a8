"""Shared pieces of the first-party acquisitions: seeded ranking, seeded draws, distances.

Two bases keep the acquisitions small:

- ``ScoredAcquisition``: implement ``scores(outputs) -> (N,)`` (higher = more
  informative); ``select`` takes the top ``k`` with ties broken by the generator.
- ``PermutedAcquisition``: for greedy and clustering methods. ``select`` permutes the pool
  with the generator and calls ``select_permuted`` on the permuted outputs, whose ties may
  go to the lowest index (``argmax``'s rule): the lowest permuted index is a random pool
  item, so ties are broken by the generator, never by pool order.

Every draw goes through ``rng`` on its own device and is moved to the data's device, so a
CPU generator drives selections on GPU tensors too.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from autoplat.core.interfaces import Acquisition

POOL_DIM = {"probs": 0, "mc_probs": 1, "embeddings": 0, "committee_probs": 1}
"""The pool dimension of each output that has one (``labeled_embeddings`` has none)."""

CHUNK = 1 << 24
"""Elements of the largest temporary a chunked computation makes (64 MB in float32)."""


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch's CPU ops on one thread inside the block (the setting is restored after).

    For greedy loops: each pick is a few memory-bound passes over the pool, which a second
    thread hardly speeds up, while the thread barriers of each parallel op stall whenever
    another process holds a core (measured on 2 cores under load: 3 s on one thread
    against 23 s on two for 1,000 core-set picks on 50,000 x 512).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def pool_size(outputs: dict[str, torch.Tensor], needs: tuple[str, ...]) -> int:
    """The number of pool items N, read from the first pool-shaped output in ``needs``."""
    name = next(n for n in needs if n in POOL_DIM)
    return outputs[name].shape[POOL_DIM[name]]


def permutation(n: int, rng: torch.Generator, device: torch.device) -> torch.Tensor:
    """A seeded random permutation of ``range(n)`` on ``device``."""
    return torch.randperm(n, generator=rng, device=rng.device).to(device)


def uniform(shape: tuple[int, ...], rng: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """Seeded U[0, 1) draws with the dtype and device of ``like``."""
    draws = torch.rand(shape, generator=rng, device=rng.device, dtype=torch.float64)
    return draws.to(device=like.device, dtype=like.dtype)


def seed(rng: torch.Generator) -> int:
    """A seed for a library that takes an int (scikit-learn's ``random_state``)."""
    return int(torch.randint(2**31 - 1, (1,), generator=rng, device=rng.device))


def categorical(weights: torch.Tensor, rng: torch.Generator, draws: int = 1) -> torch.Tensor:
    """Seeded draws (R, draws) from each row of ``weights`` (R, C), proportional to it.

    Inverse-CDF sampling on the weights' device (``torch.multinomial`` needs the generator
    on that device). A row of zeros yields its last column.
    """
    cdf = weights.cumsum(-1)
    u = uniform((weights.shape[0], draws), rng, cdf) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).clamp_max_(weights.shape[-1] - 1)


def top_k(scores: torch.Tensor, k: int, rng: torch.Generator) -> torch.Tensor:
    """Indices of the ``k`` highest ``scores``, best first; equal scores in seeded random order."""
    order = permutation(len(scores), rng, scores.device)
    ranked = torch.sort(scores[order], descending=True, stable=True).indices
    return order[ranked[:k]]


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Shannon entropy in nats, ``-sum p log p`` over the last dimension (0 log 0 = 0)."""
    return torch.special.entr(probs).sum(-1)


def labeled_embeddings(outputs: dict[str, torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    """The labeled set's embeddings (L, D); an empty (0, D) tensor when there are none yet."""
    labeled = outputs.get("labeled_embeddings")
    if labeled is None:
        return like.new_zeros((0, like.shape[1]))
    return labeled.to(device=like.device, dtype=like.dtype)


class NearestCenters:
    """Squared Euclidean distance from each point to its nearest center, as centers are added.

    The greedy loop of core-set and ranked batch. Adding a center costs one pass over the
    points that may move closer to it, found with the triangle inequality: a point x at
    distance d(x) from its nearest center g can only get closer to a new center c if
    ``|c - g| < 2 d(x)``, so whole groups of points (by nearest center) are skipped when
    ``|c - g|`` is at least twice their largest d. Exact: skipped points would not change.
    On clustered embeddings most groups are skipped; when over half the points remain,
    all are updated in one pass.

    Args:
        x: (N, D) points.
        centers: (L, D) initial centers (the labeled set); may be empty.
        capacity: How many points may be added as centers.

    Attributes:
        nearest: (N,) squared distance to the nearest center (``inf`` without centers),
            ``-inf`` at points made centers.
    """

    def __init__(self, x: torch.Tensor, centers: torch.Tensor, capacity: int) -> None:
        self.x = x
        self.x_sq = (x * x).sum(1)
        self.centers = x.new_empty((len(centers) + capacity, x.shape[1]))
        self.centers[: len(centers)] = centers
        self.centers_sq = x.new_empty(len(self.centers))
        self.centers_sq[: len(centers)] = (centers * centers).sum(1)
        self.count = len(centers)
        self.nearest = torch.full_like(self.x_sq, torch.inf)
        self.group = torch.zeros(len(x), dtype=torch.int64, device=x.device)
        if len(centers):
            rows = max(1, CHUNK // len(centers))
            for start in range(0, len(x), rows):
                part = torch.addmm(
                    self.centers_sq[: len(centers)], x[start : start + rows], centers.T, alpha=-2
                )
                nearest, self.group[start : start + rows] = part.min(1)
                self.nearest[start : start + rows] = nearest + self.x_sq[start : start + rows]
            self.nearest.clamp_min_(0)

    def add(self, j: torch.Tensor) -> None:
        """Make point ``j`` (a 0-d index) a center."""
        c = self.x[j]
        rows = None  # every point
        if self.count:
            known, known_sq = self.centers[: self.count], self.centers_sq[: self.count]
            between = torch.addmv(known_sq, known, c, alpha=-2) + self.x_sq[j]
            widest = self.nearest.new_full((self.count,), -torch.inf)
            widest.scatter_reduce_(0, self.group, self.nearest, "amax")
            # |c - g|^2 < 4 max d^2 (with 1% slack for rounding): the group may move
            near = (between < 4.04 * widest).index_select(0, self.group).nonzero().squeeze(1)
            if len(near) <= len(self.x) // 2:
                rows = near
        if rows is None:
            distance = torch.addmv(self.x_sq, self.x, c, alpha=-2).add_(self.x_sq[j])
            closer = distance < self.nearest
            self.nearest = torch.where(closer, distance.clamp_min_(0), self.nearest)
            self.group[closer] = self.count
        else:
            points = self.x.index_select(0, rows)  # index_select: much faster than x[rows]
            distance = torch.addmv(self.x_sq.index_select(0, rows), points, c, alpha=-2)
            distance.add_(self.x_sq[j])
            closer = distance < self.nearest.index_select(0, rows)
            moved = rows[closer]
            self.nearest[moved] = distance[closer].clamp_min_(0)
            self.group[moved] = self.count
        self.centers[self.count] = c
        self.centers_sq[self.count] = self.x_sq[j]
        self.count += 1
        self.nearest[j] = -torch.inf


class ScoredAcquisition(Acquisition):
    """An acquisition that scores each pool item and takes the ``k`` best."""

    @abstractmethod
    def scores(self, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """(N,) informativeness of each pool item; higher is picked first."""

    def select(
        self, outputs: dict[str, torch.Tensor], k: int, rng: torch.Generator
    ) -> torch.Tensor:
        """The ``k`` highest-scoring pool indices, best first; ties in seeded random order."""
        return top_k(self.scores(outputs), k, rng)


class PermutedAcquisition(Acquisition):
    """A greedy or clustering acquisition, run on a randomly permuted pool (see module doc)."""

    @abstractmethod
    def select_permuted(
        self, outputs: dict[str, torch.Tensor], k: int, rng: torch.Generator
    ) -> torch.Tensor:
        """``k`` distinct indices (``1 <= k <= N``) into ``outputs``' pool, best first.

        Ties may go to the lowest index. ``outputs`` holds this acquisition's ``needs``
        (``labeled_embeddings`` possibly absent), pool dimensions already permuted.
        """

    def select(
        self, outputs: dict[str, torch.Tensor], k: int, rng: torch.Generator
    ) -> torch.Tensor:
        """Up to ``k`` pool indices, best first, deterministic for the state of ``rng``."""
        n = pool_size(outputs, self.needs)
        device = outputs[next(name for name in self.needs if name in POOL_DIM)].device
        k = min(k, n)
        if k <= 0:
            return torch.empty(0, dtype=torch.int64, device=device)
        order = permutation(n, rng, device)
        permuted = {
            name: outputs[name].index_select(POOL_DIM[name], order)
            if name in POOL_DIM
            else outputs[name]
            for name in self.needs
            if name in outputs
        }
        return order[self.select_permuted(permuted, k, rng)]
