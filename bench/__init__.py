"""The dialer's benchmarks: `make bench` (or `python -m bench`) prints one table.

ceiling.py    (1) `dialer run` with no rate limit vs a bare httpx loop vs raw sockets
bigfile.py    (2) validate a big CSV vs pandas alone; (3) import and resume
pacing.py     (4) achieved rates, peak 1-second windows, a lower hidden limit
measure.py    wall time, peak memory and CPU of a step in a process of its own
step.py       the steps run in those processes (`python -m bench.step ...`)
data.py       campaign files and lead CSVs; gen_leads.py the big messy one
"""
