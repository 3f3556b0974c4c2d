"""Offline tooling for the trope classifier: annotation pools, label joins, training, evaluation."""
