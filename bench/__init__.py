"""Benchmarks for towpath: each prints a table of towpath beside its peers, measured in one run.

Benchmarks are not tests. Run them with ``python -m bench <suite>``; ``python -m bench --help``
lists the suites. See ``docs/benchmarks.md`` for results and how to read them.
"""
