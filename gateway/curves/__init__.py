"""Learning from loss curves, the gateway's side: live.py (each attempt's prognosis from
what is stored, the curve model's refits), watch.py (prognosis as a watcher of the epoch
path), servicer.py (CurveService). The maths is learning/curves."""
