"""Benchmarks of this package against PyLate 1.6, run as modules from the checkout's root.

- ``python -m bench.index`` (``make bench-index``): encoding, PLAID/Voyager build and search, recall at a
  target; ``bench.index.build``, ``bench.index.encode`` and ``bench.index.precision`` profile the parts;
- ``python -m bench.train`` (``make bench-train``): the train stage's throughput; ``bench.train.step``: one
  step, profiled;
- ``python -m bench.quality`` (``make bench-quality``): PyLate trained and scored as the quality stage
  scores ours;
- ``python -m bench.pylate_tests`` (``make bench-pylate-tests``): PyLate's own tests against ``pipeline``;
- ``python -m bench.serve`` (``make bench-serve``): ``colbert-pipeline serve`` under load on loopback;
- ``python -m bench.render`` (``make bench-render``): the records as Markdown tables.

What they share (paths, the environment a record names, record files, workers, PyLate's venv) is
:mod:`bench.common`. Committed records live in ``bench/records/`` (PyLate's quality runs in
``bench/records/peer/runs/``); caches and uncommitted results in ``bench/.cache/``. ``bench/gpu_pass.sh``
runs them on a GPU machine. Modules here import nothing heavy at module level: the same files run inside
PyLate's venv as workers.
"""
