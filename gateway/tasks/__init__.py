"""Tasks, the gateway's side: profiler.py (hands new tasks to trainers to profile),
learner.py (similar tasks and suggestions from the store, trusting what provenance
allows), warm.py (warm starts of studies), servicer.py (TaskService). The maths is
learning/tasks."""
