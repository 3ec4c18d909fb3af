"""Monitoring: metrics now; drift, feedback and output baselines build on them."""
