"""The dashboard: one page over the REST API (plots of yield, defects, problems, learning)."""
