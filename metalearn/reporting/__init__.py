"""Reporting runs of your own training code: `metalearn.start_run` (run.py); the
background sender (sender.py) and its spool file (spool.py); integrations
(lightning.py)."""

from metalearn.reporting.run import Run, start_run

__all__ = ["Run", "start_run"]
