"""First-party acquisition functions of deep active learning (see docs/acquisitions.md).

- ``uncertainty``: random, least-confidence, margin, entropy (from ``probs``).
- ``bayesian``: bald, variation-ratios, mean-std, batchbald (from ``mc_probs``).
- ``diversity``: coreset, typiclust (from ``embeddings`` and ``labeled_embeddings``).
- ``hybrid``: badge, ranked-batch, cluster-margin (``probs`` and ``embeddings``; the last
  two also ``labeled_embeddings``).
- ``committee``: qbc-vote-entropy, qbc-kl (from ``committee_probs``).
"""
