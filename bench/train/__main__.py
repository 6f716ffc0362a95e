"""``python -m bench.train``: training throughput (:mod:`bench.train.compare`)."""

from bench.train.compare import main

main()
