"""The API's try-it page at ``/docs``: Swagger UI served by this server, not by a public CDN.

FastAPI's own page loads Swagger UI's script and style from a CDN and starts it with an inline
script. A page on the API's origin that runs a third party's script can do anything a signed-in
user can, so the files come from the ``swagger-ui-bundle-v2`` package (Swagger UI's release files,
Apache-2.0) and the start-up code is a small file of ours: the page then works under the one
Content-Security-Policy every page gets (:mod:`corral.api.headers`), which allows no inline script
and no other host.
"""

from __future__ import annotations

import html
import logging
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response

logger = logging.getLogger(__name__)

#: the files of Swagger UI the page uses, by the name they are served under
ASSETS = {"swagger-ui.css": "text/css", "swagger-ui-bundle.js": "text/javascript"}

#: the start-up code: reads the document's URL from the page and starts Swagger UI on it
INIT_JS = """// Corral's try-it page: start Swagger UI on this server's OpenAPI document.
window.addEventListener("load", () => {
  const root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.openapi,
    dom_id: "#swagger-ui",
    layout: "BaseLayout",
    deepLinking: true,
    showExtensions: true,
    showCommonExtensions: true,
    validatorUrl: null, // the default sends the document to a public validator
    presets: [SwaggerUIBundle.presets.apis],
  });
});
"""


def swagger_ui_dir() -> Path | None:
    """Where the installed Swagger UI files are, or None without the package."""
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:
        return None
    return Path(str(swagger_ui_path))


def mount_docs(app: FastAPI, *, openapi_url: str = "/openapi.json", path: str = "/docs") -> None:
    """Serve the try-it page at ``path`` and its files under ``path/``. Create ``app`` with
    ``docs_url=None`` so FastAPI's CDN page is not served as well."""
    ui = swagger_ui_dir()
    version = ui.name.rsplit("-", 1)[-1] if ui is not None else ""
    page = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{html.escape(app.title)} API</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="{path}/swagger-ui.css?v={version}">
<script src="{path}/swagger-ui-bundle.js?v={version}"></script>
<script src="{path}/init.js?v={version}"></script>
</head>
<body>
<div id="swagger-ui" data-openapi="{html.escape(openapi_url)}"></div>
</body>
</html>
"""

    @app.get(path, include_in_schema=False)
    def docs_page() -> Response:
        if ui is None:
            return JSONResponse({"error": f"the try-it page needs the swagger-ui-bundle-v2 package; the API's document is at {openapi_url}", "status": 404}, status_code=404)
        return HTMLResponse(page, headers={"Cache-Control": "no-cache"})

    @app.get(f"{path}/init.js", include_in_schema=False)
    def docs_init() -> Response:
        return Response(INIT_JS, media_type="text/javascript", headers={"Cache-Control": "no-cache"})

    @app.get(f"{path}/{{name}}", include_in_schema=False)
    def docs_asset(name: str) -> Response:
        if ui is None or name not in ASSETS:
            return JSONResponse({"error": f"no file {name[:100]!r} of the try-it page", "status": 404}, status_code=404)
        return FileResponse(ui / name, media_type=ASSETS[name], headers={"Cache-Control": "public, max-age=86400"})

    if ui is None:
        logger.warning("the swagger-ui-bundle-v2 package is missing: %s answers 404 (the API's document is still at %s)", path, openapi_url)
