"""Text and pictures for people, shared by the CLI (`metalearn.cli`) and the dashboard.

`attempts`: a status and a prognosis in words, loss curves, comparisons; `studies`: a
study, its trials and its live table; `study_plots`: Optuna's plots of a study (imports
Optuna: import it late); `tokens`: roles. Nothing here makes a client or a channel, and
nothing here imports the CLI.
"""
