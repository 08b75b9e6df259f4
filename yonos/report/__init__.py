"""Reports from the tidy results table: tables (markdown, LaTeX, DVC metrics/plots files), figures,
and the published numbers placed beside ours. The `report` stage (yonos/stages/report.py) drives it."""
