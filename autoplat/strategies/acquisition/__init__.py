"""First-party acquisition functions of deep active learning (see docs/acquisitions.md).

- ``uncertainty``: random, least_confidence, margin, entropy (from ``probs``).
- ``bayesian``: bald, variation_ratios, mean_std, batchbald (from ``mc_probs``).
- ``diversity``: coreset, typiclust (from ``embeddings`` and ``labeled_embeddings``).
- ``hybrid``: badge, ranked_batch, cluster_margin (``probs`` and ``embeddings``; the last
  two also ``labeled_embeddings``).
- ``committee``: qbc_vote_entropy, qbc_kl (from ``committee_probs``).
"""
