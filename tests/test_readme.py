"""The README documents what the product does: a stale CLI reference fails the suite."""

from __future__ import annotations

from corral.api import clidoc
from tests.conftest import REPO


def test_cli_reference_matches_the_parsers():
    readme = (REPO / "README.md").read_text()
    assert clidoc.readme_section(readme) == clidoc.reference(), "run `python -m corral.api.clidoc --write`"


def test_readme_opens_with_the_two_setup_commands():
    readme = (REPO / "README.md").read_text()
    first_block = readme.split("```bash", 1)[1].split("```", 1)[0]
    assert "corral demo" in first_block and "bash .ci/run" in first_block
    ci = (REPO / ".ci" / "run").read_text()
    assert "pytest" in ci and "constraints.txt" in ci


def test_every_doc_the_readme_links_exists():
    import re

    readme = (REPO / "README.md").read_text()
    for target in re.findall(r"\]\(((?:docs)/[^)#]+)\)", readme):
        assert (REPO / target).exists(), target
