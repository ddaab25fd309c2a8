"""Embedding-based curation scorers (entry point ``embedding-scorers``).

- ``dedup``: near-duplicate removal by kNN cosine similarity and connected components,
  and decontamination against an evaluation set (DINOv2, Oquab et al. 2023).
- ``retrieval``: the pool records nearest to a seed set, by kNN or shared k-means
  cluster (DINOv2).
- ``balanced``: balanced sampling over hierarchical k-means with resampling (Vo et al.
  2024).
- ``mode``: data experts from fine-then-coarse clustering of caption embeddings, and
  their ensemble weights for a task's class names (MoDE, Ma et al. 2024).

Each needs embeddings (an ``[embedder]`` section); each is two-pass: the first pass
writes the embeddings to the scorer's work folder, so memory stays bounded by one chunk
plus the index or the clustering.
"""
