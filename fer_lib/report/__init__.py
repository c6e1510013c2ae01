"""The paper's tables and figures, the verdicts on its claims, their replication with other seeds,
and the report's landing page."""
