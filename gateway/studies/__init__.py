"""Studies: searches over training commands whose trials are attempts.

learning/studies/ holds the maths: space.py (paths into the base command, checked;
values applied), arguments.py (each sampler's and pruner's arguments, bounded),
sampling.py (Optuna's samplers as a library over trials rebuilt from our tables).

pruners.py    Optuna's pruners, and a decision over a rebuilt study
checks.py     what CreateStudy checks; a trial's command
asking.py     a pass's asks, made before the study's lock is taken
(gateway/workers.py: the processes the CPU work above runs in, off the event loop)
driver.py     asks for trials as slots free and ends studies, under a study row lock
pruning.py    pruning decisions over a study's rows, a watcher of the epoch path
servicer.py   StudyService
"""
