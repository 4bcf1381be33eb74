"""Bringing runs recorded by other systems into metalearn as reported attempts.

`metalearn import mlflow` (mlflow.py) reads an MLflow tracking store through MLflow's
own client and reports each run through ReportingService, with its origin kept. What
other systems keep is a claim, as every reported number is: nothing here was trained
by metalearn.
"""
