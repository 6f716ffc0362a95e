"""Training benchmarks: the train stage's throughput against PyLate's, the two contrastive losses, one step.

- ``python -m bench.train --peer`` (or ``--stage``): whole trainers, interleaved (:mod:`bench.train.compare`,
  workers in :mod:`bench.train.trainers`); without either flag, Contrastive against CachedContrastive
  (:mod:`bench.train.losses`);
- ``python -m bench.train.step``: one forward + backward on a fixed batch, optionally profiled.

Their rows come from :mod:`bench.train.data`.
"""
