"""colbert-pipeline: fine-tune, evaluate, index and ship ColBERT models.

The PyLate-shaped modules (``models``, ``losses``, ``evaluation``, ``indexes``, ``retrieve``, ``rank``,
``utils``) are imported on demand, so ``import pipeline`` stays cheap:

    >>> from pipeline import models, rank  # doctest: +SKIP
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
