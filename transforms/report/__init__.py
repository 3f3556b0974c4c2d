"""Accounting and the run report: counts, the ledger, conservation, metrics and report.html."""
