"""``python -m pipeline`` runs the ``colbert-pipeline`` command line."""

from pipeline.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
