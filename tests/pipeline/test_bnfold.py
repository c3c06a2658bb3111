"""Batch norms folded into convolutions: the vectors stay those of the model as trained."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from corral.pipeline import weights  # noqa: E402
from corral.pipeline.bnfold import TOLERANCE, fold_batchnorms  # noqa: E402
from corral.pipeline.decode import Preprocess  # noqa: E402
from corral.pipeline.registry import DEFAULT_MODEL, create_embedder  # noqa: E402
from corral.pipeline.sample import write_sample  # noqa: E402


def _trained_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every batch norm statistics and an affine part far from the identity, as training does."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g))
            m.running_var.copy_(torch.rand(n, generator=g) * 3 + 0.2)
            m.weight.data.copy_(torch.randn(n, generator=g))
            m.bias.data.copy_(torch.randn(n, generator=g))
    return model.eval()


class Plain(nn.Module):
    """conv -> norm -> relu, twice, then pooled: every norm can fold."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.n1 = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.c2, self.n2 = nn.Conv2d(8, 16, 3, stride=2, bias=True), nn.BatchNorm2d(16)

    def forward(self, x):
        x = torch.relu(self.n1(self.c1(x)))
        return torch.relu(self.n2(self.c2(x))).mean(dim=(2, 3))


class SharedOutput(nn.Module):
    """The conv's output feeds the norm and, unnormalised, the sum after it: folding would be wrong."""

    def __init__(self) -> None:
        super().__init__()
        self.c, self.n = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)

    def forward(self, x):
        y = self.c(x)
        return (self.n(y) + y).mean(dim=(2, 3))


def _probe(n: int = 2, side: int = 32) -> torch.Tensor:
    return torch.randn(n, 3, side, side, generator=torch.Generator().manual_seed(5))


def _l2(t: torch.Tensor) -> np.ndarray:
    return torch.nn.functional.normalize(t.float(), dim=1).numpy()


def test_every_norm_after_a_conv_folds_and_the_output_stays():
    model = _trained_norms(Plain())
    folded, count = fold_batchnorms(model, _probe())
    assert count == 2
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x = _probe(6, 40)  # other images and another size than the probe
    with torch.inference_mode():
        np.testing.assert_allclose(_l2(folded(x)), _l2(model(x)), rtol=0, atol=TOLERANCE)
        # The original is left as it was.
        assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_a_conv_whose_output_is_read_elsewhere_is_left_alone():
    model = _trained_norms(SharedOutput())
    folded, count = fold_batchnorms(model, _probe())
    assert count == 0 and folded is model


def test_a_model_in_training_mode_is_not_touched():
    model = _trained_norms(Plain()).train()
    folded, count = fold_batchnorms(model, _probe())
    assert count == 0 and folded is model


def test_the_default_embedder_gives_the_vectors_of_its_unfolded_model(tmp_path):
    """The embedder folds its norms, and its vectors equal those of the timm model built from the
    same weights without folding, on real images of the built-in sample."""
    import timm
    from PIL import Image

    from corral.pipeline.decode import resize_center_crop

    emb = create_embedder(DEFAULT_MODEL).to("cpu")
    assert emb.info["batchnorms_folded"] > 0
    assert not any(isinstance(m, nn.BatchNorm2d) for m in emb.model.modules())
    arch = DEFAULT_MODEL.split(":", 1)[1]
    plain = timm.create_model(arch, pretrained=False, num_classes=0)
    weights.load_into(plain, weights.load_state_dict(emb.source.path), source="test")
    plain.eval()

    sample = write_sample(tmp_path / "sample", count=10)
    pre: Preprocess = emb.preprocess
    files = sorted((tmp_path / "sample" / "images").rglob("*.png"))
    px = torch.from_numpy(np.stack([resize_center_crop(Image.open(f).convert("RGB"), pre) for f in files]))
    assert sample["images"] == len(files) == 10
    got = emb.embed(px).numpy()
    with torch.inference_mode():
        ref = _l2(plain(emb.normalise(px).contiguous()))
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5)
