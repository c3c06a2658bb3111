"""Settings of the web app: one typed object, from arguments or ``CORRAL_*`` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from corral.pipeline.decode import DEFAULT_MAX_PIXELS


class Settings(BaseSettings):
    """Everything :func:`corral.api.app.create_app` needs. Each field can be set as ``CORRAL_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="CORRAL_", extra="forbid")

    # The workspace folder the server curates (embeddings, maps, labels, users, cache).
    workspace: Path
    # The label store: None for the workspace's labels.sqlite, or a SQLite path / sqlite:PATH, or
    # postgresql://[user@]host[:port]/database so several servers share one store.
    labels: str | None = None
    # Address the server listens on (informational for the app; uvicorn binds it).
    host: str = "127.0.0.1"
    port: int = 8765
    # Largest request body of an upload route (POST /api/recognize: images, vectors), in bytes.
    max_request_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    # Largest request body of every other route, in bytes; larger bodies get 413 before they are
    # read. The server parses JSON on its event loop, where other requests wait meanwhile, so this
    # stays small: a label action on any selection of a map of up to about 6 million points fits,
    # as a bitmap ("bitmap:<base64>", 167 KB for a million points); lists of indices fit up to
    # about 150,000 points.
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    # Seconds a request's whole body may take to arrive (then 408 and the connection closes).
    body_timeout_s: float = Field(default=60.0, gt=0)
    # Seconds a connection may take to send a request's line and headers (then it is closed).
    header_timeout_s: float = Field(default=10.0, gt=0)
    # Largest single uploaded file, in bytes (image uploads to recognition).
    max_upload_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    # Edge of the per-item thumbnails served to the cluster panel, in pixels.
    thumb_size: int = Field(default=128, ge=16, le=512)
    # Memory, in bytes, that images being decoded at once may take (thumbnails, crops' parents,
    # recognition uploads; read from each image's header before decoding): a decode that would
    # pass it waits for its turn. An image larger than the whole budget decodes alone.
    decode_memory_bytes: int = Field(default=1 << 30, ge=16 << 20)
    # Seconds a decode waits for room in that budget before its request gets 503 with Retry-After.
    decode_wait_s: float = Field(default=30.0, gt=0)
    # Largest image the server decodes, in pixels; larger ones are refused as decompression bombs.
    max_image_pixels: int = Field(default=DEFAULT_MAX_PIXELS, ge=1)
    # Folders a curator may start embed jobs on; empty means any folder when ``allow_any_source``.
    source_roots: list[Path] = Field(default_factory=list)
    # Allow jobs on any folder (set by `corral serve` in local single-user mode).
    allow_any_source: bool = False
    # Compile the re-clustering code in the background at start-up so the first "split" is quick.
    warm_split: bool = False
    # Mark the session cookie Secure (serve behind HTTPS); it is also Secure on any request that
    # arrives over HTTPS (directly, or through a proxy `corral serve --trusted-proxy` believes).
    cookie_secure: bool = False
    # A browser session ends after this many days unused ...
    session_idle_days: float = Field(default=7.0, gt=0)
    # ... and this many days after sign-in, however much it is used.
    session_max_days: float = Field(default=30.0, gt=0)
    # Most jobs kept in the jobs list (finished ones beyond this are forgotten, oldest first).
    max_jobs: int = Field(default=50, ge=1)
    # Most points a single "points" or "search" answer lists.
    max_points_per_request: int = Field(default=2000, ge=1)

    @field_validator("workspace")
    @classmethod
    def _workspace_exists(cls, v: Path) -> Path:
        v = Path(v).expanduser().resolve()
        if not v.is_dir():
            raise ValueError(f"workspace={str(v)!r} is not a folder; run `corral embed SOURCE --workspace {v}` first")
        return v

    @field_validator("source_roots")
    @classmethod
    def _roots_resolved(cls, v: list[Path]) -> list[Path]:
        return [Path(p).expanduser().resolve() for p in v]
