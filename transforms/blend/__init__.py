"""Blending: units and token budgets, the blend plan, and exact deterministic sampling into shards."""
