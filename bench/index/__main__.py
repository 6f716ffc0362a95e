"""``python -m bench.index``: the index benchmark (:mod:`bench.index.compare`)."""

from bench.index.compare import main

main()
