"""Bayesian acquisitions over S MC-dropout samples ``mc_probs`` (S, N, C).

Each sample s is a draw of the weights w_s; expectations over w are means over s.
"""

from __future__ import annotations

import math

import torch

from autoplat.strategies.acquisition.base import (
    CHUNK,
    PermutedAcquisition,
    ScoredAcquisition,
    categorical,
    entropy,
)


class BALD(ScoredAcquisition):
    """BALD (Houlsby et al. 2011; Gal et al. 2017): the mutual information I[y; w | x].

    Maximizes ``H[E_w p(y|x,w)] - E_w H[p(y|x,w)]`` (nats): high when the samples are each
    confident but disagree; 0 when they all agree. Returns the ``k`` highest, best first.
    """

    name = "bald"
    needs = ("mc_probs",)

    def scores(self, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """(N,) mutual information between the label and the weights."""
        mc = outputs["mc_probs"]
        return entropy(mc.mean(0)) - entropy(mc).mean(0)


class VariationRatios(ScoredAcquisition):
    """Variation ratios (Freeman 1965; Gal et al. 2017) of the samples' predicted classes.

    Maximizes ``1 - f_m / S``, where f_m is how many of the S samples predict the modal
    class. Returns the ``k`` highest, best first (many ties: broken by the generator).
    """

    name = "variation-ratios"
    needs = ("mc_probs",)

    def scores(self, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """(N,) one minus the share of samples that vote for the most voted class."""
        mc = outputs["mc_probs"]
        samples, n, classes = mc.shape
        votes = mc.new_zeros((n, classes)).scatter_add_(
            1, mc.argmax(-1).T, mc.new_ones((n, samples))
        )
        return 1 - votes.amax(1) / samples


class MeanStd(ScoredAcquisition):
    """Mean standard deviation (Kampffmeyer et al. 2016; Gal et al. 2017).

    Maximizes ``(1/C) sum_c sqrt(E_w[p(c|x,w)^2] - E_w[p(c|x,w)]^2)``: the per-class
    standard deviation over the samples (population, not Bessel-corrected), averaged over
    classes. Returns the ``k`` highest, best first.
    """

    name = "mean-std"
    needs = ("mc_probs",)

    def scores(self, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """(N,) class-averaged standard deviation of the probabilities over the samples."""
        return outputs["mc_probs"].std(0, correction=0).mean(1)


class _JointLabels:
    """The joint distribution of the labels y_A of a selected set A, given each w_k.

    Holds distinct configurations c of y_A (all of them while there are few, the distinct
    ones among sampled ones after) as ``weights`` (R, K): p(c|w_k) normalized over k,
    ``log_p`` (R,): log p(c) with p(c) = mean_k p(c|w_k), and ``mass`` (R,): the weight
    of c in an expectation over y_A (p(c) when exact; when sampled, the share of the
    samples equal to c, so duplicate samples cost nothing).
    """

    def __init__(self, samples: int, max_configs: int, like: torch.Tensor) -> None:
        self.samples = samples
        self.max_configs = max_configs
        self.weights = like.new_full((1, samples), 1 / samples)
        self.log_p = like.new_zeros(1)
        self.mass = like.new_ones(1)
        self.exact = True
        self.config = torch.zeros(0, dtype=torch.int64, device=like.device)  # per sample
        self.scratch = like.new_empty(0)

    def entropy(self) -> torch.Tensor:
        """H[y_A] (exact, or the Monte Carlo estimate ``-mean log p(c)`` once sampled)."""
        return -(self.mass @ self.log_p)

    def conditional_entropy(self, probs: torch.Tensor) -> torch.Tensor:
        """H[y_n | y_A] = E_c H[p(y_n | y_A = c)] for items with ``probs`` (K, B, C).

        With r_c(y) = p(y_n = y | y_A = c) = sum_k p(c|w_k) p(y|w_k) / sum_k p(c|w_k), so
        that H[y_A, y_n] = H[y_A] + H[y_n | y_A]: exact while every configuration is held,
        a Monte Carlo estimate over configurations sampled from p(y_A) after.
        """
        flat = probs.reshape(self.samples, -1)
        size = len(self.weights) * flat.shape[1]
        if len(self.scratch) < 2 * size:  # reused: allocating large tensors is slow
            self.scratch = flat.new_empty(2 * size)
        r = self.scratch[:size].view(len(self.weights), -1)
        torch.mm(self.weights, flat, out=r)  # r_c(y) for (c, (n, y))
        r_log_r = self.scratch[size : 2 * size].view_as(r)
        torch.clamp_min(r, torch.finfo(r.dtype).tiny, out=r_log_r).log_().mul_(r)
        return -(self.mass @ r_log_r).view(-1, probs.shape[2]).sum(1)

    def add(self, probs: torch.Tensor, rng: torch.Generator) -> None:
        """Add the label of one item with ``probs`` (K, C) = p(y|w_k) to the set."""
        classes = probs.shape[1]
        if self.exact and len(self.log_p) * classes > self.max_configs:
            self._sample(rng)
        if self.exact:  # every configuration (c, y), c-major
            parent = torch.arange(len(self.log_p), device=probs.device).repeat_interleave(classes)
            label = torch.arange(classes, device=probs.device).repeat(len(self.log_p))
        else:  # one y per sample, drawn given its mixture component; then deduplicated
            y = self._draw(probs.T, rng)
            keys, self.config, counts = torch.unique(
                self.config * classes + y, return_inverse=True, return_counts=True
            )
            parent, label = keys // classes, keys % classes
            self.mass = counts.to(probs) / len(self.config)
        joint = self.weights[parent] * probs[:, label].T
        total = joint.sum(-1).clamp_min(torch.finfo(joint.dtype).tiny)
        self.weights = joint / total[:, None]
        self.log_p = self.log_p[parent] + total.log()
        if self.exact:
            self.mass = self.log_p.exp()

    def _sample(self, rng: torch.Generator) -> None:
        """Replace the exact configurations by ``max_configs`` draws from p(y_A).

        Stratified over the K components of the mixture p(c) = mean_k p(c|w_k): draw m
        comes from p(c|w_{m mod K}), as in the reference implementation (BlackHC/BatchBALD).
        """
        drawn = self._draw(self.weights * self.log_p.exp()[:, None], rng)  # p(c|w_k) up to k
        kept, self.config, counts = torch.unique(drawn, return_inverse=True, return_counts=True)
        self.weights = self.weights[kept]
        self.log_p = self.log_p[kept]
        self.mass = counts.to(self.log_p) / self.max_configs
        self.exact = False

    def _draw(self, given_w: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        """For each sample m, a draw from column ``m mod K`` of ``given_w`` (R, K)."""
        per_component = -(-self.max_configs // self.samples)
        drawn = categorical(given_w.T, rng, per_component)  # (K, draws)
        return drawn.T.reshape(-1)[: self.max_configs]  # sample m = s K + k: draw s of k


class BatchBALD(PermutedAcquisition):
    """BatchBALD (Kirsch et al. 2019): greedy maximization of I[y_1, ..., y_b; w].

    Step i adds the item n maximizing ``a(A + n) = H[y_A, y_n] - sum_{j in A + n}
    E_w H[y_j|w]``, where A holds the i - 1 items already picked (step 1 is BALD). The
    joint entropy is exact while the C^|A| configurations of y_A number at most
    ``num_configs``; after that it is estimated from ``num_configs`` configurations
    sampled from p(y_A) (each extended by one draw per added item), as in the paper's
    reference code and baal. Returns ``k`` indices in the order they were picked.

    Args:
        num_configs: Configurations held (exact enumeration limit and Monte Carlo sample
            size M). Time and memory per step grow as M * N * C.
    """

    name = "batchbald"
    needs = ("mc_probs",)

    def __init__(self, num_configs: int = 10_000) -> None:
        self.num_configs = num_configs

    def select_permuted(
        self, outputs: dict[str, torch.Tensor], k: int, rng: torch.Generator
    ) -> torch.Tensor:
        """The greedy batch of ``k`` items (see ``greedy``)."""
        return self.greedy(outputs["mc_probs"], k, rng)[0]

    def greedy(
        self, mc_probs: torch.Tensor, k: int, rng: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Pick ``k`` items greedily; ties go to the lowest index.

        Args:
            mc_probs: (K, N, C) probabilities of K MC-dropout samples.
            k: Items to pick (at most N).
            rng: Draws the sampled configurations.

        Returns:
            The picked indices (k,) in order, and a(first i picks) for i = 1..k (nats).
        """
        samples, n, classes = mc_probs.shape
        conditional = entropy(mc_probs).mean(0)  # E_w H[y_n | w]
        joint = _JointLabels(samples, self.num_configs, mc_probs)
        bound = torch.full_like(conditional, math.inf)  # the last gain computed, or inf
        picked = torch.empty(k, dtype=torch.int64, device=mc_probs.device)
        values = mc_probs.new_empty(k)
        shared = mc_probs.new_zeros(())
        for i in range(k):
            best, gain = self._best_gain(joint, mc_probs, conditional, bound, n - i)
            picked[i], values[i] = best, joint.entropy() + gain - shared
            bound[best] = -math.inf
            shared = shared + conditional[best]
            if i + 1 < k:
                joint.add(mc_probs[:, best], rng)
        return picked, values

    @staticmethod
    def _best_gain(
        joint: _JointLabels,
        mc_probs: torch.Tensor,
        conditional: torch.Tensor,
        bound: torch.Tensor,
        remaining: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The item of largest gain ``I[y_n; w | y_A] = H[y_n | y_A] - E_w H[y_n | w]``.

        Lazy greedy (Minoux 1978): a gain never grows as A grows (BatchBALD is
        submodular), so items are evaluated in blocks in decreasing order of their last
        gain (``bound``, updated in place), stopping once the best gain found is at least
        the bound of every item not evaluated. Exact for exact joint entropies.
        """
        order = torch.sort(bound, descending=True, stable=True).indices[:remaining]
        block = max(1, CHUNK // (len(joint.weights) * mc_probs.shape[2]))
        best, best_gain = order[0], conditional.new_tensor(-math.inf)
        for start in range(0, remaining, block):
            items = order[start : start + block]
            if best_gain >= bound[items[0]]:
                break
            gains = joint.conditional_entropy(mc_probs[:, items]) - conditional[items]
            bound[items] = gains
            top = gains.argmax()
            if gains[top] > best_gain:
                best, best_gain = items[top], gains[top]
        return best, best_gain
