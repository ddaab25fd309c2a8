"""First-party acquisition functions of deep active learning (see docs/acquisitions.md).

- ``uncertainty``: random, least_confidence, margin, entropy (from ``probs``).
- ``bayesian``: bald, variation_ratios, mean_std, batchbald (from ``mc_probs``).
- ``diversity``: coreset, typiclust (from ``embeddings`` and ``labeled_embeddings``).
- ``hybrid``: badge, ranked_batch, cluster_margin (``probs`` and ``embeddings``; the last
  two also ``labeled_embeddings``).
- ``committee``: qbc_vote_entropy, qbc_kl (from ``committee_probs``).
"""

from autoplat.core.hookspecs import Register, hookimpl
from autoplat.core.interfaces import Acquisition
from autoplat.strategies.acquisition.base import PermutedAcquisition, ScoredAcquisition
from autoplat.strategies.acquisition.bayesian import BALD, BatchBALD, MeanStd, VariationRatios
from autoplat.strategies.acquisition.committee import KLDisagreement, VoteEntropy
from autoplat.strategies.acquisition.diversity import CoreSet, TypiClust
from autoplat.strategies.acquisition.hybrid import BADGE, ClusterMargin, RankedBatch
from autoplat.strategies.acquisition.uncertainty import Entropy, LeastConfidence, Margin, Random

__all__ = [
    "BADGE",
    "BALD",
    "BatchBALD",
    "ClusterMargin",
    "CoreSet",
    "Entropy",
    "KLDisagreement",
    "LeastConfidence",
    "Margin",
    "MeanStd",
    "PermutedAcquisition",
    "Random",
    "RankedBatch",
    "ScoredAcquisition",
    "TypiClust",
    "VariationRatios",
    "VoteEntropy",
    "acquisitions",
]


def acquisitions() -> list[Acquisition]:
    """One instance of each first-party acquisition, with its default settings."""
    return [
        Random(),
        LeastConfidence(),
        Margin(),
        Entropy(),
        BALD(),
        VariationRatios(),
        MeanStd(),
        BatchBALD(),
        CoreSet(),
        TypiClust(),
        BADGE(),
        RankedBatch(),
        ClusterMargin(),
        VoteEntropy(),
        KLDisagreement(),
    ]


@hookimpl
def register_acquisitions(register: Register) -> None:
    """Register the first-party acquisition functions."""
    for acquisition in acquisitions():
        register(acquisition)
