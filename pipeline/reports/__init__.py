"""Human-readable results: the artifact table, report.md, report.html with plots, metrics.json."""
