"""The quality comparison: PyLate 1.6 trained on our data with our settings, scored on a full BEIR test set.

``python -m bench.quality --config configs/scifact.yaml`` (:mod:`bench.quality.peer`, PyLate's side in
:mod:`bench.quality.worker`); ``make quality-*`` runs it after the quality stage unless ``PEER=0``.
"""
