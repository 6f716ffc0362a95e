"""Running the pipeline as a deployment: orchestration, registry, serving, services (no torch at import)."""
