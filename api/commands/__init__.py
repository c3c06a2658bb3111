"""One module per CLI command group; importing this package registers them all."""

from corral.api.commands import demo_cmd, embed_cmd  # noqa: F401
from corral.api.commands import serve_cmd, users_cmd  # noqa: F401
from corral.api.commands import export_cmd, labels_cmd, publish_cmd  # noqa: F401
from corral.api.commands import index_cmd  # noqa: F401
from corral.api.commands import map_cmd  # noqa: F401
from corral.api.commands import learn_cmd  # noqa: F401
from corral.api.commands import evaluate_cmd  # noqa: F401
