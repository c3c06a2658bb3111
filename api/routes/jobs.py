"""Jobs: start an embed or map run from the viewer and follow its progress.

Curators and admins see a job as it is; a viewer sees it without absolute server paths (its source,
error, log and result name the last part of each path only), see :mod:`corral.api.redact`.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from corral.api.deps import Ctx, Reader, Writer
from corral.api.inputs import Text
from corral.api.jobs import JOB_OPTIONS, SERVER_ONLY
from corral.api.redact import for_user

router = APIRouter(prefix="/api/jobs", tags=["jobs"])


class JobRequest(BaseModel):
    """A job to start; a field it does not have is refused (422 naming it), never dropped."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["embed", "map"] = Field(description="embed a folder, or build/refresh the map")
    source: Text | None = Field(default=None, max_length=4096, description="embed: an absolute folder path on the server")
    options: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            f"embed: {', '.join(JOB_OPTIONS['embed'])}; map: {', '.join(JOB_OPTIONS['map'])}. A job's options are its command's, "
            "by their Python names (corral.pipeline.embed.EmbedConfig, corral.pipeline.mapping.MapConfig; a map's umap, hdbscan and faiss "
            "as objects of their libraries' settings), checked as the command checks them; an unknown name is refused, and so is an "
            f"embed option that names a file or a limit of the server's own ({', '.join(SERVER_ONLY['embed'])})"
        ),
    )


@router.get("", summary="Recent jobs, newest first")
def list_jobs(ctx: Ctx, user: Reader) -> dict[str, Any]:
    return {"jobs": for_user(ctx.jobs.list(), user)}


@router.post("", summary="Start a job", status_code=202)
def start(body: JobRequest, ctx: Ctx, user: Writer) -> dict[str, Any]:
    job = ctx.jobs.start(body.kind, user=user.name, source=body.source, options=body.options)
    return job.public()


@router.get("/{job_id}", summary="One job's status and progress")
def get_job(job_id: str, ctx: Ctx, user: Reader) -> dict[str, Any]:
    return for_user(ctx.jobs.get(job_id).public(), user)


@router.post("/{job_id}/cancel", summary="Stop a running job")
def cancel(job_id: str, ctx: Ctx, user: Writer) -> dict[str, Any]:
    return ctx.jobs.cancel(job_id).public()
