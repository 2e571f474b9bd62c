"""Benchmarks of Agent BuildKit's hot paths, each against baselines measured in the same run.

Run all of them with ``make bench`` (``python -m bench``); results go to
``bench/results/*.json`` and ``bench/results/summary.md``.
"""
