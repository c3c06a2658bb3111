"""Corral's storage side: workspace files, the label store, exports, S3 and the FAISS index.

Imports none of Corral's other packages."""

from corral.storage.workspace import EmbeddingSet, Workspace, WorkspaceError

__all__ = ["EmbeddingSet", "Workspace", "WorkspaceError"]
