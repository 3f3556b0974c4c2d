"""Readers (one module per format family), the id check, writers and atomic publication."""
