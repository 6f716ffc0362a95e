"""The project's plumbing, shared by every wing: no torch, no MLflow, no Airflow at import.

- :mod:`~pipeline.project.config`: the ``params.yaml`` schema, checked before any stage does work;
- :mod:`~pipeline.project.layout`: every artifact's path and file name, and what each stage reads and writes;
- :mod:`~pipeline.project.io`: atomic writes;
- :mod:`~pipeline.project.errors`: the error root and the table from an error's kind to an exit code;
- :mod:`~pipeline.project.runs`: retrieval runs (TREC files) and their trec_eval scores;
- :mod:`~pipeline.project.report`: the quality report's tables and plots.
"""
