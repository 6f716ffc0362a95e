"""``python -m bench.quality``: PyLate trained and scored as the quality stage scores ours
(:mod:`bench.quality.peer`)."""

from bench.quality.peer import main

main()
