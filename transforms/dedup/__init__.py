"""Deduplication: exact and MinHash LSH keys, candidate pairs, clusters and the dedup index."""
