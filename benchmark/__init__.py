"""Benchmark suite of this project: task variants (envs.py), sweep runner (run.py), suites
(suites.py) and tables/plots (report.py). See benchmark/README.md."""
