"""The benchmarks, each a module run from the repository root: ``python -m bench.<name>``
(``python -m bench.run_all``, or ``fastwsol bench``, runs them all and prints one summary)."""
