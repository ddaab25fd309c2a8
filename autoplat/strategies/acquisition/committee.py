"""Query-by-committee over ``committee_probs`` (M, N, C) of M independently trained models."""

from __future__ import annotations

import torch

from autoplat.strategies.acquisition.base import ScoredAcquisition, entropy


class VoteEntropy(ScoredAcquisition):
    """Vote entropy (Dagan & Engelson 1995; McCallum & Nigam 1998) of the members' votes.

    Maximizes ``-sum_c (V_c / M) log(V_c / M)`` (nats), V_c the number of members whose
    most probable class is c. Returns the ``k`` highest, best first (ties are common and
    broken by the generator).
    """

    name = "qbc-vote-entropy"
    needs = ("committee_probs",)

    def scores(self, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """(N,) entropy of the vote distribution."""
        committee = outputs["committee_probs"]
        members, n, classes = committee.shape
        votes = committee.new_zeros((n, classes)).scatter_add_(
            1, committee.argmax(-1).T, committee.new_ones((n, members))
        )
        return entropy(votes / members)


class KLDisagreement(ScoredAcquisition):
    """KL divergence to the mean (McCallum & Nigam 1998).

    Maximizes ``(1/M) sum_m KL(p_m || p_avg)`` (nats), with ``p_avg`` the members' mean
    distribution: how far the average member is from the consensus. Returns the ``k``
    highest, best first.
    """

    name = "qbc-kl"
    needs = ("committee_probs",)

    def scores(self, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """(N,) mean KL divergence of the members from the consensus."""
        committee = outputs["committee_probs"]
        consensus = committee.mean(0, keepdim=True)
        kl = torch.special.xlogy(committee, committee) - torch.special.xlogy(committee, consensus)
        return kl.sum(-1).mean(0)
