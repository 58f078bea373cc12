"""One-off maintenance scripts kept for the committed results they touched (run from the repo root: `python -m tools.X`)."""
