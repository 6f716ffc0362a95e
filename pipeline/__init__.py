"""colbert-pipeline: fine-tune, evaluate, index and ship ColBERT models.

Two wings. The library wing speaks PyLate's API (``models``, ``losses``, ``evaluation``, ``indexes``,
``retrieve``, ``rank``, ``scores``, ``utils``, plus ``indexing``); the ops wing (:mod:`pipeline.ops`) tracks,
registers, serves and orchestrates; ``data`` reads and builds datasets; ``stages`` are the pipeline's leaves
and ``layout`` names every artifact they read and write. Modules are imported on demand, so
``import pipeline`` stays cheap:

    >>> import subprocess, sys
    >>> code = "import sys, pipeline; print('torch' in sys.modules)"
    >>> done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    >>> done.stdout.split()
    ['False']
"""

from __future__ import annotations

#: The one version source: the wheel's metadata (hatch) and `colbert-pipeline --version` read it.
__version__ = "0.1.0"
__all__ = ["__version__"]
