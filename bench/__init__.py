"""secretcache benchmarks: start-up, memory and read latency, side by side with the alternatives.

``./build.sh bench [--quick]`` (or ``python -m bench``) runs the built layer zip on the local
Lambda emulator with moto server as AWS, everything on loopback, prints one table of figures
against the targets in issue 6 and writes ``bench/results.json``. Figures, not assertions: the
run never fails because a target was missed.
"""
