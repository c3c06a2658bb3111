"""A misspelt embedder option is an error, not a silently ignored keyword."""

from __future__ import annotations

import pytest

from corral.pipeline.registry import create_embedder


def test_shared_options_are_accepted_by_every_family_and_a_misspelt_one_is_named():
    emb = create_embedder("pixels:8", weights=None, allow_random=False, compile=False, offline=None)
    assert emb.dim == 8 * 8  # grey 8x8 pixels
    with pytest.raises(ValueError, match=r"unknown option\(s\) wieghts"):
        create_embedder("pixels:8", wieghts="model.safetensors")
    with pytest.raises(ValueError, match=r"unknown option\(s\) jiters.*takes.*jitters"):
        create_embedder("dlib:face-resnet", jiters=2)
