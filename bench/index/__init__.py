"""Index benchmarks: encoding, PLAID/Voyager build and search against PyLate, build and encode profiles.

- ``python -m bench.index``: the comparison (:mod:`bench.index.compare`, steps in :mod:`bench.index.workers`);
- ``python -m bench.index.build``: a PLAID build under cProfile, and k-means settings by time and recall;
- ``python -m bench.index.encode``: where encoding spends its time (ours or PyLate's, cProfile);
- ``python -m bench.index.precision``: int8 / half / bf16-autocast encoding: speed against nDCG@10.
"""
