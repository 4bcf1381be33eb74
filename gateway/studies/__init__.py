"""Studies: searches over training commands whose trials are attempts.

space.py     a search space: paths into the base command, checked; values applied
sampling.py  Optuna's samplers as a library over trials rebuilt from our tables
driver.py    asks for trials as slots free and ends studies, under a study row lock
servicer.py  StudyService
"""
