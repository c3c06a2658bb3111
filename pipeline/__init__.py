"""Corral's batch pipeline: ingest, detect, embed, project, cluster.

Each stage is a plain function with keyword-only options; the CLI, the API's jobs and the
notebooks call the same functions. Heavy libraries are imported inside the stages that use them,
so importing ``pipeline`` is cheap.
"""
