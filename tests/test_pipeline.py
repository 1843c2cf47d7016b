"""Tests for crossgap_lib.pipeline: features and inversions, cached, resumed after a crash, sharded over ranks."""

from __future__ import annotations

import functools
import os
import sys
import types
from dataclasses import dataclass

import open_clip
import pytest
import torch
import torch.nn.functional as F
from open_clip import CLIPTextCfg, CLIPVisionCfg
from open_clip.transform import PreprocessCfg, image_transform_v2
from PIL import Image

import crossgap_lib
from crossgap_lib import pipeline
from crossgap_lib.models import LoadedClip

torch.set_num_threads(1)


def make_clip(seed: int = 0) -> LoadedClip:
    torch.manual_seed(seed)
    model = open_clip.CLIP(
        embed_dim=16,
        vision_cfg=CLIPVisionCfg(image_size=32, patch_size=8, width=32, layers=1, head_width=16),
        text_cfg=CLIPTextCfg(context_length=16, vocab_size=49408, width=32, heads=2, layers=1),
    ).eval()
    preprocess = image_transform_v2(PreprocessCfg(size=32), is_train=False)
    tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=16)
    return LoadedClip(model=model, preprocess=preprocess, tokenizer=tokenizer, name="test-micro", pretrained=None)


@pytest.fixture(scope="module")
def clip() -> LoadedClip:
    return make_clip()


def make_images(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def to_pil(image: torch.Tensor) -> Image.Image:
    return Image.fromarray(image.permute(1, 2, 0).numpy())


class PilDataset:
    def __init__(self, images: torch.Tensor):
        self.images = images
        self.reads = 0

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        self.reads += 1
        return to_pil(self.images[i]), i % 3


# ----------------------------------------------------------------------------------------------------------------------
# a stand-in for crossgap_lib.inversion with the contract's signatures: cheap, deterministic per global sample index


@dataclass
class FakeInversionResult:
    features: torch.Tensor
    pseudo_tokens: torch.Tensor
    losses: torch.Tensor
    history: torch.Tensor | None = None
    history_steps: list[int] | None = None


def _fake_invert(clip, targets, num_pseudo_tokens=1, steps=5, lr=2e-2, weight_decay=0.01, batch_size=64, seed=0,
                 record_every=None, progress=True, index_offset=0, template=None):
    n, dim = targets.shape
    tokens = torch.stack([
        torch.randn(num_pseudo_tokens, 8, generator=torch.Generator().manual_seed(seed * 100003 + index_offset + i))
        for i in range(n)
    ])
    FAKE_CALLS.append((index_offset, n))
    mixed = targets + lr * tokens.sum(1).repeat(1, dim // 8 + 1)[:, :dim]
    losses = torch.stack([1.0 / (s + 1) + mixed.norm(dim=-1) * weight_decay for s in range(steps)], dim=1)
    history = history_steps = None
    if record_every:
        history_steps = list(range(0, steps, record_every))
        history = torch.stack([F.normalize(mixed * (s + 1), dim=-1) for s in history_steps])
    return FakeInversionResult(F.normalize(mixed, dim=-1), tokens, losses, history, history_steps)


def fake_oti(clip, image_features, config, *, progress=True, index_offset=0):
    c = config
    return _fake_invert(clip, image_features, c.num_pseudo_tokens, c.steps, c.lr, c.weight_decay, c.batch_size,
                        c.seed, c.record_every, progress, index_offset, c.template)


def fake_ovi(clip, text_features, config, *, progress=True, index_offset=0):
    c = config
    return _fake_invert(clip, text_features, c.num_pseudo_tokens, c.steps, c.lr, c.weight_decay, c.batch_size,
                        c.seed, c.record_every, progress, index_offset)


FAKE_CALLS: list[tuple[int, int]] = []
FAKE_MODULE = types.ModuleType("crossgap_lib.inversion")
FAKE_MODULE.oti, FAKE_MODULE.ovi, FAKE_MODULE.InversionResult = fake_oti, fake_ovi, FakeInversionResult


def install_fake_inversion() -> None:
    sys.modules["crossgap_lib.inversion"] = FAKE_MODULE
    crossgap_lib.inversion = FAKE_MODULE


@pytest.fixture
def fake_inversion(monkeypatch):
    monkeypatch.setitem(sys.modules, "crossgap_lib.inversion", FAKE_MODULE)
    monkeypatch.setattr(crossgap_lib, "inversion", FAKE_MODULE, raising=False)
    FAKE_CALLS.clear()
    return FAKE_CALLS


def targets(n: int = 10, dim: int = 16, seed: int = 1) -> torch.Tensor:
    return F.normalize(torch.randn(n, dim, generator=torch.Generator().manual_seed(seed)), dim=-1)


def assert_results_equal(a, b, atol: float = 0.0) -> None:
    for name in ("features", "pseudo_tokens", "losses"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), atol=atol, rtol=0 if atol == 0 else 1e-5)
    assert (a.history is None) == (b.history is None)
    if a.history is not None:
        torch.testing.assert_close(a.history, b.history, atol=atol, rtol=0 if atol == 0 else 1e-5)
        assert a.history_steps == b.history_steps


# ----------------------------------------------------------------------------------------------------------------------
# feature extraction


def test_encode_images_matches_model_for_every_input_kind(clip):
    images = make_images(7)
    preprocessed = torch.stack([clip.preprocess(to_pil(im)) for im in images])
    with torch.no_grad():
        expected = F.normalize(clip.model.encode_image(preprocessed), dim=-1)
    from_pil = pipeline.encode_images(clip, PilDataset(images), batch_size=3, progress=False)
    from_uint8 = pipeline.encode_images(clip, images, batch_size=4, progress=False)
    from_float = pipeline.encode_images(clip, [(x, 0) for x in preprocessed], batch_size=2, progress=False)
    assert from_pil.shape == (7, 16) and from_pil.dtype == torch.float32 and from_pil.device.type == "cpu"
    torch.testing.assert_close(from_pil.norm(dim=-1), torch.ones(7))
    for got in (from_pil, from_uint8, from_float):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_encode_images_cache_loads_and_keys_on_content(clip, tmp_path, monkeypatch):
    images = make_images(6)
    first = pipeline.encode_images(clip, PilDataset(images), cache_dir=tmp_path, chunk_size=4, progress=False)
    assert len(list((tmp_path / "image_features").glob("*/result.pt"))) == 1

    calls = []
    original = clip.model.encode_image
    monkeypatch.setattr(clip.model, "encode_image", lambda *a, **k: calls.append(1) or original(*a, **k))
    again = pipeline.encode_images(clip, PilDataset(images), cache_dir=tmp_path, chunk_size=4, progress=False)
    assert calls == [] and torch.equal(again, first)

    images[0, 0, 0, 0] ^= 1  # one pixel changed: a new key, computed again
    changed = pipeline.encode_images(clip, PilDataset(images), cache_dir=tmp_path, chunk_size=4, progress=False)
    assert calls and len(list((tmp_path / "image_features").glob("*/result.pt"))) == 2
    assert torch.allclose(changed[1:], first[1:], atol=1e-6)


def test_encode_images_uses_dataset_fingerprint_when_present(clip, tmp_path):
    class Fingerprinted(PilDataset):
        def fingerprint(self) -> str:
            return "v1"

    dataset = Fingerprinted(make_images(4))
    pipeline.encode_images(clip, dataset, cache_dir=tmp_path, progress=False)
    reads = dataset.reads
    pipeline.encode_images(clip, dataset, cache_dir=tmp_path, progress=False)
    assert reads == 4 and dataset.reads == 4  # second call: neither hashed nor encoded
    plain = PilDataset(dataset.images)
    assert pipeline.dataset_fingerprint(plain) == pipeline.dataset_fingerprint(PilDataset(dataset.images.clone()))
    assert plain.reads == 4


def test_encode_texts_matches_model_and_caches(clip, tmp_path, monkeypatch):
    texts = [f"a photo of a {w}" for w in ("cat", "dog", "red square", "blue circle", "tree")]
    with torch.no_grad():
        expected = F.normalize(clip.model.encode_text(clip.tokenizer(texts)), dim=-1)
    got = pipeline.encode_texts(clip, texts, batch_size=2, progress=False)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)

    cached = pipeline.encode_texts(clip, texts, batch_size=2, cache_dir=tmp_path, chunk_size=2, progress=False)
    torch.testing.assert_close(cached, expected, atol=1e-5, rtol=1e-5)
    calls = []
    original = clip.model.encode_text
    monkeypatch.setattr(clip.model, "encode_text", lambda *a, **k: calls.append(1) or original(*a, **k))
    assert torch.equal(pipeline.encode_texts(clip, texts, cache_dir=tmp_path, chunk_size=2, progress=False), cached)
    assert calls == []
    pipeline.encode_texts(clip, texts[:-1] + ["a tree"], cache_dir=tmp_path, chunk_size=2, progress=False)
    assert calls


def test_weights_fingerprint_is_memoised_and_follows_in_place_changes():
    clip = make_clip()
    first = pipeline.weights_fingerprint(clip.model)
    assert pipeline.weights_fingerprint(clip.model) == first == pipeline.weights_fingerprint(make_clip().model)
    with torch.no_grad():
        clip.model.text_projection.add_(1e-3)
    assert pipeline.weights_fingerprint(clip.model) != first


def test_feature_inputs_are_validated(clip, tmp_path):
    with pytest.raises(ValueError, match="dataset is empty"):
        pipeline.encode_images(clip, [], progress=False)
    with pytest.raises(ValueError, match="texts is empty"):
        pipeline.encode_texts(clip, [], progress=False)
    with pytest.raises(ValueError, match="list of str"):
        pipeline.encode_texts(clip, "a cat", progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        pipeline.encode_texts(clip, ["a"], batch_size=0, progress=False)
    with pytest.raises(ValueError, match="model expects"):
        pipeline.encode_images(clip, [(torch.zeros(3, 16, 16), 0)], progress=False)
    with pytest.raises(ValueError, match="item 0.*str"):
        pipeline.encode_images(clip, [("not an image", 0)], progress=False)


def test_encode_images_on_the_generated_dataset_with_load_clip(tmp_path, monkeypatch):
    from crossgap_lib.datasets.shapes import make_shapes
    from crossgap_lib.models import load_clip

    micro = load_clip("crossgap-micro")
    shapes = make_shapes("test", n=6, seed=0)
    features = pipeline.encode_images(micro, shapes, cache_dir=tmp_path, batch_size=4, progress=False)
    torch.testing.assert_close(features, pipeline.encode_images(micro, shapes.images, progress=False))
    monkeypatch.setattr(type(shapes), "__getitem__", lambda *a: pytest.fail("cache hit must not read images"))
    assert torch.equal(pipeline.encode_images(micro, shapes, cache_dir=tmp_path, progress=False), features)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_autocast_features_close_to_cpu_and_keyed_apart(tmp_path):
    cpu_clip, cuda_clip = make_clip(), make_clip()
    cuda_clip.model.cuda()
    images, texts = make_images(5), ["a red square", "a blue circle"]
    for encode, data in ((pipeline.encode_images, images), (pipeline.encode_texts, texts)):
        on_cpu = encode(cpu_clip, data, cache_dir=tmp_path, progress=False)
        on_cuda = encode(cuda_clip, data, cache_dir=tmp_path, progress=False)
        assert on_cuda.device.type == "cpu" and on_cuda.dtype == torch.float32
        torch.testing.assert_close(on_cuda, on_cpu, atol=3e-2, rtol=0)
    assert len(list(tmp_path.glob("*_features/*/result.pt"))) == 4  # fp32 and autocast results stored apart


# ----------------------------------------------------------------------------------------------------------------------
# inversion machinery (stand-in inversion)


@pytest.mark.parametrize("method", ["oti", "ovi"])
def test_invert_dataset_chunking_does_not_change_results(clip, fake_inversion, method):
    features = targets(11)
    whole = pipeline.invert_dataset(clip, method, features, chunk_size=64, progress=False, steps=3, record_every=1)
    chunked = pipeline.invert_dataset(clip, method, features, chunk_size=4, progress=False, steps=3, record_every=1)
    assert whole.features.shape == (11, 16) and whole.losses.shape == (11, 3) and whole.history.shape == (3, 11, 16)
    assert whole.history_steps == [0, 1, 2]
    assert [c[0] for c in fake_inversion] == [0, 0, 4, 8]  # one call for the whole set, then three chunks
    assert_results_equal(whole, chunked)


def test_invert_dataset_cache_hit_and_parameter_change(clip, fake_inversion, tmp_path):
    features = targets(6)
    first = pipeline.invert_dataset(clip, "oti", features, cache_dir=tmp_path, chunk_size=4, progress=False, steps=3)
    assert len(fake_inversion) == 2
    again = pipeline.invert_dataset(clip, "oti", features, cache_dir=tmp_path, chunk_size=4, progress=False, steps=3)
    assert len(fake_inversion) == 2  # loaded, not recomputed
    assert_results_equal(first, again)
    assert again.history is None and again.history_steps is None
    # a default passed explicitly is the same key; another chunk size reuses the merged result
    pipeline.invert_dataset(clip, "oti", features, cache_dir=tmp_path, chunk_size=3, progress=False, steps=3, lr=2e-2)
    assert len(fake_inversion) == 2
    changed = pipeline.invert_dataset(clip, "oti", features, cache_dir=tmp_path, chunk_size=4, progress=False,
                                      steps=3, lr=0.5)
    assert len(fake_inversion) == 4 and not torch.allclose(changed.features, first.features)
    pipeline.invert_dataset(clip, "ovi", features, cache_dir=tmp_path, chunk_size=4, progress=False, steps=3)
    assert len(fake_inversion) == 6  # another method, another key
    assert len(list(tmp_path.glob("inversion_*/*/result.pt"))) == 3


def test_invert_dataset_resumes_after_a_crash(clip, fake_inversion, tmp_path, monkeypatch):
    features = targets(10)
    reference = pipeline.invert_dataset(clip, "oti", features, chunk_size=3, progress=False, steps=2)
    fake_inversion.clear()

    @functools.wraps(fake_oti)
    def crash_after_two_chunks(*args, **kwargs):
        if len(fake_inversion) == 2:
            raise KeyboardInterrupt("killed")
        return fake_oti(*args, **kwargs)

    monkeypatch.setattr(FAKE_MODULE, "oti", crash_after_two_chunks)
    with pytest.raises(KeyboardInterrupt):
        pipeline.invert_dataset(clip, "oti", features, cache_dir=tmp_path, chunk_size=3, progress=False, steps=2)
    folder = next(tmp_path.glob("inversion_oti/*"))
    assert sorted(p.name for p in folder.glob("chunk_*.pt")) == ["chunk_000000.pt", "chunk_000001.pt"]
    assert not list(folder.glob(".*.tmp")) and not (folder / "result.pt").exists()

    monkeypatch.setattr(FAKE_MODULE, "oti", fake_oti)
    fake_inversion.clear()
    resumed = pipeline.invert_dataset(clip, "oti", features, cache_dir=tmp_path, chunk_size=3, progress=False, steps=2)
    assert fake_inversion == [(6, 3), (9, 1)]  # only the two missing chunks were computed
    assert_results_equal(resumed, reference)
    assert not list(folder.glob("chunk_*.pt")) and (folder / "result.pt").exists()


def test_corrupt_chunk_is_recomputed_with_a_warning(clip, fake_inversion, tmp_path, monkeypatch):
    features = targets(8)
    reference = pipeline.invert_dataset(clip, "ovi", features, chunk_size=4, progress=False, steps=2)

    @functools.wraps(fake_ovi)
    def crash_on_second_chunk(*args, **kwargs):
        if kwargs["index_offset"] > 0:
            raise RuntimeError("stop")
        return fake_ovi(*args, **kwargs)

    monkeypatch.setattr(FAKE_MODULE, "ovi", crash_on_second_chunk)
    with pytest.raises(RuntimeError, match="stop"):
        pipeline.invert_dataset(clip, "ovi", features, cache_dir=tmp_path, chunk_size=4, progress=False, steps=2)
    chunk = next(tmp_path.glob("inversion_ovi/*/chunk_000000.pt"))
    chunk.write_bytes(b"this is not a torch file")
    monkeypatch.setattr(FAKE_MODULE, "ovi", fake_ovi)
    fake_inversion.clear()
    with pytest.warns(UserWarning, match="corrupt"):
        result = pipeline.invert_dataset(clip, "ovi", features, cache_dir=tmp_path, chunk_size=4, progress=False,
                                         steps=2)
    assert [c[0] for c in fake_inversion] == [0, 4]  # the garbage chunk was recomputed, not used
    assert_results_equal(result, reference)


def test_corrupt_result_is_recomputed(clip, fake_inversion, tmp_path):
    features = targets(5)
    first = pipeline.invert_dataset(clip, "oti", features, cache_dir=tmp_path, progress=False, steps=2)
    next(tmp_path.glob("inversion_oti/*/result.pt")).write_bytes(b"\x00garbage")
    with pytest.warns(UserWarning, match="corrupt"):
        again = pipeline.invert_dataset(clip, "oti", features, cache_dir=tmp_path, progress=False, steps=2)
    assert len(fake_inversion) == 2
    assert_results_equal(first, again)


def test_invert_dataset_validates_input(clip, fake_inversion, tmp_path):
    with pytest.raises(ValueError, match="method must be one of"):
        pipeline.invert_dataset(clip, "sgd", targets(3))
    with pytest.raises(ValueError, match=r"features must have shape \(N, 16\).*\(3, 8\)"):
        pipeline.invert_dataset(clip, "oti", targets(3, dim=8))
    with pytest.raises(ValueError, match="features is empty"):
        pipeline.invert_dataset(clip, "oti", torch.zeros(0, 16))
    with pytest.raises(ValueError, match="features is required"):
        pipeline.invert_dataset(clip, "ovi")
    with pytest.raises(ValueError, match="finite"):
        pipeline.invert_dataset(clip, "oti", torch.full((2, 16), float("nan")))
    with pytest.raises(ValueError, match=r"unknown inversion setting.*\['stepz'\]"):
        pipeline.invert_dataset(clip, "ovi", targets(3), stepz=3)
    with pytest.raises(ValueError, match=r"unknown inversion setting.*\['index_offset'\]"):  # chunks set it
        pipeline.invert_dataset(clip, "oti", targets(3), index_offset=5)
    with pytest.raises(ValueError, match="chunk_size"):
        pipeline.invert_dataset(clip, "oti", targets(3), chunk_size=0)
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    with pytest.raises(PermissionError, match=f"{not_a_folder}.*CROSSGAP_CACHE"):
        pipeline.invert_dataset(clip, "oti", targets(3), cache_dir=not_a_folder, progress=False, steps=1)
    assert fake_inversion == []


# ----------------------------------------------------------------------------------------------------------------------
# the real crossgap_lib.inversion


def test_real_oti_and_ovi_are_independent_of_chunking(clip, tmp_path):
    from crossgap_lib import inversion

    image_features = pipeline.encode_images(clip, make_images(5), progress=False)
    text_features = pipeline.encode_texts(clip, [f"a photo of {w}" for w in ("a", "b", "c", "d", "e")], progress=False)
    for method, target in (("oti", image_features), ("ovi", text_features)):
        direct = getattr(inversion, method)(clip, target, steps=3, batch_size=5, record_every=2, progress=False)
        chunked = pipeline.invert_dataset(clip, method, target, chunk_size=2, progress=False, steps=3, batch_size=5,
                                          record_every=2)
        cached = pipeline.invert_dataset(clip, method, target, cache_dir=tmp_path, chunk_size=3, progress=False,
                                         steps=3, batch_size=5, record_every=2)
        assert isinstance(chunked, inversion.InversionResult)
        assert chunked.losses.shape == (5, 3) and chunked.history_steps == direct.history_steps
        assert_results_equal(chunked, direct, atol=1e-5)
        assert_results_equal(cached, direct, atol=1e-5)
        assert not torch.allclose(direct.pseudo_tokens[0], direct.pseudo_tokens[1])  # per-sample initialisations


# ----------------------------------------------------------------------------------------------------------------------
# sharding: two real gloo processes


def _sharded_worker(rank: int, world: int, init_file: str, cache_dir: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    install_fake_inversion()
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        clip = make_clip()
        features = targets(9)
        cached = pipeline.invert_dataset(clip, "oti", features, cache_dir=cache_dir, chunk_size=2, progress=False,
                                         steps=2, record_every=1)
        in_memory = pipeline.invert_dataset(clip, "ovi", features, chunk_size=2, progress=False, steps=2)
        texts = pipeline.encode_texts(clip, [f"text {i}" for i in range(5)], cache_dir=cache_dir, chunk_size=2,
                                      progress=False)
        torch.save({"cached": cached, "in_memory": in_memory, "texts": texts, "calls": list(FAKE_CALLS)},
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow  # two spawned processes importing torch: 10-20 s on 2 shared cores
def test_two_rank_run_equals_single_process(clip, fake_inversion, tmp_path):
    import torch.multiprocessing as mp

    out_dir = tmp_path / "out"
    out_dir.mkdir()
    mp.spawn(_sharded_worker, args=(2, str(tmp_path / "init"), str(tmp_path / "cache"), str(out_dir)), nprocs=2,
             join=True)
    clip0 = make_clip()
    features = targets(9)
    reference_oti = pipeline.invert_dataset(clip0, "oti", features, chunk_size=2, progress=False, steps=2,
                                            record_every=1)
    reference_ovi = pipeline.invert_dataset(clip0, "ovi", features, chunk_size=2, progress=False, steps=2)
    reference_texts = pipeline.encode_texts(clip0, [f"text {i}" for i in range(5)], progress=False)
    ranks = [torch.load(out_dir / f"rank{r}.pt", weights_only=False) for r in range(2)]
    for out in ranks:
        assert_results_equal(out["cached"], reference_oti)
        assert_results_equal(out["in_memory"], reference_ovi)
        torch.testing.assert_close(out["texts"], reference_texts, atol=1e-6, rtol=1e-6)
    # rank r inverted chunks r, r + 2, ...: each chunk once over both ranks
    assert sorted(c[0] for c in ranks[0]["calls"][:3]) == [0, 4, 8]
    assert sorted(c[0] for c in ranks[1]["calls"][:2]) == [2, 6]
    folder = next((tmp_path / "cache" / "inversion_oti").glob("*"))
    assert (folder / "result.pt").exists() and not list(folder.glob("chunk_*.pt"))


# ----------------------------------------------------------------------------------------------------------------------
# stale cache entries and non-finite values


def _write_cub(root, images: torch.Tensor) -> None:
    """A minimal CUB-200-2011 folder (one class, PNG files: lossless, so new pixels mean new features)."""
    folder = root / "CUB_200_2011"
    (folder / "images" / "001.A").mkdir(parents=True, exist_ok=True)
    lines = {"images.txt": [], "image_class_labels.txt": [], "train_test_split.txt": []}
    for i, image in enumerate(images, 1):
        to_pil(image).save(folder / "images" / "001.A" / f"{i}.png")
        lines["images.txt"].append(f"{i} 001.A/{i}.png")
        lines["image_class_labels.txt"].append(f"{i} 1")
        lines["train_test_split.txt"].append(f"{i} 0")
    for name, rows in lines.items():
        (folder / name).write_text("\n".join(rows) + "\n")
    (folder / "classes.txt").write_text("1 001.A\n")


def test_encode_images_notices_an_image_replaced_in_place(clip, tmp_path):
    from crossgap_lib.datasets import load_dataset

    images = make_images(3)
    _write_cub(tmp_path / "data", images)
    first = pipeline.encode_images(clip, load_dataset("cub", root=tmp_path / "data"), cache_dir=tmp_path / "cache",
                                   progress=False)
    path = tmp_path / "data" / "CUB_200_2011" / "images" / "001.A" / "2.png"
    old = path.stat()
    to_pil(make_images(1, seed=9)[0]).save(path)  # same path, same label, new pixels
    os.utime(path, ns=(old.st_atime_ns, old.st_mtime_ns + 1_000_000_000))  # whatever the file-system clock
    again = pipeline.encode_images(clip, load_dataset("cub", root=tmp_path / "data"), cache_dir=tmp_path / "cache",
                                   progress=False)
    assert not torch.allclose(again[1], first[1], atol=1e-4)  # before the fix: the stale features of the old image
    torch.testing.assert_close(again[[0, 2]], first[[0, 2]])


def test_non_finite_images_and_features_are_refused_and_never_cached(clip, tmp_path, monkeypatch):
    preprocessed = torch.stack([clip.preprocess(to_pil(im)) for im in make_images(3)])
    preprocessed[1, 0, 2, 2] = float("nan")
    with pytest.raises(ValueError, match=r"dataset item 1: the image tensor holds NaN or inf"):
        pipeline.encode_images(clip, preprocessed, cache_dir=tmp_path, progress=False)
    original = clip.model.encode_image
    monkeypatch.setattr(clip.model, "encode_image", lambda x: original(x) * float("nan"))  # a diverged model
    with pytest.raises(ValueError, match=r"encode_images: the model returned NaN/inf features .*nothing was cached"):
        pipeline.encode_images(clip, make_images(3), cache_dir=tmp_path, progress=False)
    assert not list(tmp_path.rglob("*.pt"))


def test_invert_dataset_names_non_finite_rows_not_the_dtype(clip, fake_inversion):
    bad = targets(4)
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError, match=r"features must be finite: 1 row\(s\) hold NaN or inf values \(e.g. row 2\)"):
        pipeline.invert_dataset(clip, "oti", bad)
    with pytest.raises(ValueError, match="features must be floating-point features, got dtype torch.int64"):
        pipeline.invert_dataset(clip, "oti", torch.ones(2, 16, dtype=torch.long))
