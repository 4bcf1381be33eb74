"""Runs reported by users' own training code (ReportingService): checks.py (what a
reporter sends, checked whole), servicer.py (start, report, upload, finish, read),
lapses.py (runs whose reporter went silent fail)."""
