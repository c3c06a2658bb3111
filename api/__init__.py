"""Corral's web API (FastAPI) and command line. Depends on ``pipeline`` and ``storage``."""
