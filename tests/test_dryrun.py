"""crossgap_lib.dryrun: miniature datasets and random checkpoints, read back through the real loaders on CPU."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import crossgap_lib.datasets as ds
from crossgap_lib import dryrun, metrics
from crossgap_lib.models import convert_slip_state_dict, is_slip_state_dict, read_checkpoint
from crossgap_lib.paper import load_model, model_settings, paper_labels

N_CLASSES, PER_CLASS = 5, 4  # the defaults of write_miniature_datasets
N_EVAL = PER_CLASS // 2  # images per class in val / test / queries


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """All miniature datasets, written once for this module."""
    return dryrun.write_miniature_datasets(tmp_path_factory.mktemp("dryrun_data"), progress=False)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """The default random checkpoints (about 1.3 GB, removed after the module)."""
    root = tmp_path_factory.mktemp("dryrun_weights")
    paths = dryrun.write_random_checkpoints(root, progress=False)
    yield root, paths
    shutil.rmtree(root, ignore_errors=True)


def pixel_features(dataset) -> torch.Tensor:
    """Centred, unit-norm 24x24 pixel vectors of every image."""
    rows = []
    for i in range(len(dataset)):
        image, _ = dataset[i]
        x = torch.from_numpy(np.asarray(image.resize((24, 24)), dtype=np.float32)).flatten()
        rows.append(x - x.mean())
    return torch.nn.functional.normalize(torch.stack(rows), dim=1)


def bag_of_words(texts: list[str], vocabulary: dict[str, int]) -> torch.Tensor:
    """Unit-norm word-count vectors."""
    counts = torch.zeros(len(texts), len(vocabulary))
    for i, text in enumerate(texts):
        for word in re.findall(r"[a-z]+", text.lower()):
            counts[i, vocabulary[word]] += 1
    return torch.nn.functional.normalize(counts, dim=1)


# -------------------------------------------------------------------------------------------------- datasets
def test_every_registered_dataset_has_a_complete_miniature(data_root):
    for name in ds.list_datasets():
        folder = data_root / ds.DATASETS[name].folder
        assert dryrun._read_json(folder / dryrun.MARKER) == dryrun.miniature_settings(name), name
    assert not [p for p in data_root.iterdir() if p.name.startswith(".")]  # no temporary folders left
    size = sum(p.stat().st_size for p in data_root.rglob("*") if p.is_file())
    assert size < 8e6


@pytest.mark.parametrize("name", ds.list_datasets("image"))
def test_image_miniature_loads_every_split_with_counts_labels_and_structure(data_root, name):
    spec = ds.DATASETS[name]
    loaded = {split: ds.load_dataset(name, root=data_root, split=split) for split in spec.splits}
    for split, data in loaded.items():
        assert len(data) > 0 and len(data.labels) == len(data) and all(p.is_file() for p in data.paths), split
    first = next(iter(loaded.values()))
    if name in ds.CLASSIFICATION_DATASETS:
        assert len(loaded["train"]) == N_CLASSES * PER_CLASS
        assert len(loaded["test"]) == len(loaded["val"]) == N_CLASSES * N_EVAL
        assert sorted(set(loaded["test"].labels.tolist())) == sorted(set(loaded["train"].labels.tolist()))
        assert len(set(loaded["train"].labels.tolist())) == N_CLASSES
        assert len(first.classnames) == (1000 if name == "imagenet" else N_CLASSES)
    elif name == "cub":
        assert len(loaded["all"]) == len(loaded["train"]) + len(loaded["test"]) == N_CLASSES * PER_CLASS
        assert first.classnames[:2] == ["Black footed Albatross", "Laysan Albatross"]
    elif name == "sop":
        assert len(loaded["test"]) == len(loaded["train"]) == N_CLASSES * PER_CLASS and first.classnames is None
        assert loaded["test"].labels.min() == N_CLASSES  # test products follow the train products, as in SOP
    elif name in ("roxford5k", "rparis6k"):
        query, gallery = loaded["query"], loaded["gallery"]
        assert len(query) == N_CLASSES * N_EVAL and len(gallery) == N_CLASSES * PER_CLASS + PER_CLASS
        assert set(query.labels.tolist()) == {-1} and len(query.gnd) == len(query)
        assert all(g["easy"] and g["hard"] and g["bbx"] is not None for g in query.gnd)
        cropped = ds.load_dataset(name, root=data_root, split="query", crop_queries=True)
        assert cropped[0][0].size[0] < query[0][0].size[0]
    else:  # ImageNet variants: zero-shot only
        assert len(first) == N_CLASSES * (N_EVAL + 1) and len(set(first.labels.tolist())) == N_CLASSES
        assert len(first.classnames) == (N_CLASSES if name in ("imagenet_a", "imagenet_r") else 1000)
    if first.classnames:
        names = [first.classnames[y] for y in set(first.labels.tolist())]
        assert all(re.search("[A-Za-z0-9]{3}", n) for n in names) and len(set(names)) == len(names)

    image, label = first[0]
    assert isinstance(image, Image.Image) and image.mode == "RGB" and 40 <= min(image.size) <= max(image.size) <= 64
    same = [i for i in range(1, len(first)) if first.labels[i] == label]
    assert same, "no second image of the same class"
    pixels = [np.asarray(im.resize((32, 32))) for im in (image, first[same[0]][0])]
    assert not np.array_equal(*pixels)

    if spec.protocol is not None:  # raw-pixel retrieval is informative but not perfect
        query_split, gallery_split, exclude_self = spec.protocol
        queries, gallery = loaded[query_split], loaded[gallery_split]
        q, g = pixel_features(queries), pixel_features(gallery)
        if hasattr(queries, "gnd"):
            score = metrics.revisited_map(q @ g.T, queries.gnd)["medium"]
        else:
            score = metrics.retrieval_scores(q, g, queries.labels, gallery.labels, exclude_self=exclude_self)["mAP"]
        assert 0.3 < score < 1.0, score


@pytest.mark.parametrize("name", ds.list_datasets("text"))
def test_text_miniature_loads_every_split_and_text_retrieval_is_not_degenerate(data_root, name):
    spec = ds.DATASETS[name]
    loaded = {split: ds.load_dataset(name, root=data_root, split=split) for split in spec.splits}
    for split, data in loaded.items():
        assert len(data) > 0 and all(t.strip() for t in data.texts), split
    query_split, gallery_split, exclude_self = spec.protocol
    queries, gallery = loaded[query_split], loaded[gallery_split]
    if name in ds.TEXT_RETRIEVAL_DATASETS:
        per_image = 10 if name == "nocaps" else 5
        assert len(queries) == N_CLASSES * PER_CLASS and len(gallery) == len(queries) * (per_image - 1)
        assert sorted(set(gallery.labels.tolist())) == sorted(queries.labels.tolist())  # one query per image
        assert 2 <= len(queries.texts[0].split()) <= 12
    elif name == "20newsgroups":
        assert len(queries) == 20 and len(gallery) == 20 * PER_CLASS and gallery.texts[0].startswith("From: ")
    elif name == "imdb":
        assert len(queries) == 2 and gallery.labels.tolist().count(1) == 2 * PER_CLASS
        assert all(re.fullmatch(r"(train|test)/(neg|pos)/\d+_\d+\.txt", i) for i in gallery.ids)
    else:
        assert len(queries) == N_CLASSES * N_EVAL and len(gallery) == N_CLASSES * PER_CLASS
    words = {w for t in queries.texts + gallery.texts for w in re.findall(r"[a-z]+", t.lower())}
    vocabulary = {w: i for i, w in enumerate(sorted(words))}
    scores = bag_of_words(queries.texts, vocabulary) @ bag_of_words(gallery.texts, vocabulary).T
    if hasattr(queries, "relevance"):
        relevance = queries.relevance(gallery)
        assert relevance.any(dim=1).all()
        score = metrics.retrieval_scores_from_relevance(scores, relevance)["mAP"]
    else:
        relevance = queries.labels[:, None] == gallery.labels[None, :]
        score = metrics.retrieval_scores_from_relevance(scores, relevance)["mAP"]
    assert 0.0 < score < 1.0, score


def test_rerun_with_the_same_arguments_is_a_no_op(data_root):
    marker = data_root / "CUB_200_2011" / dryrun.MARKER
    before = {p: p.stat().st_mtime_ns for p in (marker, data_root / "coco" / "dataset_coco.json")}
    start = time.perf_counter()
    dryrun.write_miniature_datasets(data_root, progress=False)
    assert time.perf_counter() - start < 2.0
    assert {p: p.stat().st_mtime_ns for p in before} == before


def test_changed_arguments_rewrite_only_that_dataset(tmp_path):
    small = {"images_per_class": 2, "n_classes": 2, "progress": False}
    dryrun.write_miniature_datasets(tmp_path, ["cub", "nocaps"], **small)
    nocaps = (tmp_path / "nocaps" / dryrun.MARKER).stat().st_mtime_ns
    first = ds.load_dataset("cub", root=tmp_path).relative_paths
    dryrun.write_miniature_datasets(tmp_path, ["cub_200_2011"], seed=1, **small)  # names go through the aliases
    assert ds.load_dataset("cub", root=tmp_path).relative_paths != first
    assert dryrun._read_json(tmp_path / "CUB_200_2011" / dryrun.MARKER)["seed"] == 1
    dryrun.write_miniature_datasets(tmp_path, ["cub", "nocaps"], **small)
    assert ds.load_dataset("cub", root=tmp_path).relative_paths == first  # same arguments, same files
    assert (tmp_path / "nocaps" / dryrun.MARKER).stat().st_mtime_ns == nocaps
    assert sorted(p.name for p in tmp_path.iterdir()) == ["CUB_200_2011", "nocaps"]


def test_interrupted_run_leaves_no_half_dataset_and_real_data_is_never_overwritten(tmp_path, monkeypatch):
    def broken(build):
        (build.folder / "Ebay_train.txt").write_text("image_id class_id super_class_id path\n")
        raise KeyboardInterrupt

    monkeypatch.setattr(dryrun, "_write_sop", broken)
    with pytest.raises(KeyboardInterrupt):
        dryrun.write_miniature_datasets(tmp_path, ["sop"], progress=False)
    assert list(tmp_path.iterdir()) == []
    real = tmp_path / "dtd"
    real.mkdir()
    (real / "split_zhou_DescribableTextures.json").write_text("{}")
    with pytest.raises(FileExistsError, match="not a crossgap dry-run miniature"):
        dryrun.write_miniature_datasets(tmp_path, ["dtd"], progress=False)
    assert [p.name for p in real.iterdir()] == ["split_zhou_DescribableTextures.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dtd"]
    with pytest.raises(ValueError, match="not a known dataset.*cub"):
        dryrun.write_miniature_datasets(tmp_path, ["mnist"])
    with pytest.raises(ValueError, match=">= 2"):
        dryrun.write_miniature_datasets(tmp_path, n_classes=1)


# ------------------------------------------------------------------------------------------------ checkpoints
@pytest.mark.parametrize("label", dryrun.DRYRUN_MODELS)
def test_load_clip_reads_each_random_checkpoint_from_crossgap_weights(weights, data_root, monkeypatch, label):
    root, paths = weights
    monkeypatch.setenv("CROSSGAP_WEIGHTS", str(root))
    model = model_settings(label)
    clip = load_model(model, device="cpu")  # the paper profile's own call, tag -> file in $CROSSGAP_WEIGHTS
    assert clip.weights_path == str(paths[label]) and Path(clip.weights_path).parent == root

    state_dict, meta = read_checkpoint(paths[label])
    if label.startswith("SLIP"):  # the SLIP repository's layout, SimCLR head and args included
        assert is_slip_state_dict(state_dict) and any(k.startswith("image_mlp.") for k in state_dict)
        assert isinstance(meta["args"], argparse.Namespace) and meta["args"].model == "SLIP_VITB16"
        state_dict = convert_slip_state_dict(state_dict)
    else:
        assert paths[label].suffix == (".pt" if model.pretrained == "openai" else ".safetensors") and not meta
    loaded = clip.model.state_dict()
    assert set(state_dict) == set(loaded)
    for key in ("logit_scale", *sorted(state_dict)[:: max(1, len(state_dict) // 25)]):
        assert torch.equal(loaded[key], state_dict[key].float()), key

    image, _ = ds.load_dataset("cub", root=data_root)[0]
    tokens = clip.tokenizer(["a photo of a Laysan Albatross.", "A brown dog running on the grass."])
    assert tokens.dtype == torch.long and int(tokens.max()) < clip.model.vocab_size
    with torch.no_grad():
        image_features = clip.model.encode_image(clip.preprocess(image)[None])
        text_features = clip.model.encode_text(tokens)
    assert image_features.shape[0] == 1 and text_features.shape == (2, image_features.shape[1])
    assert torch.isfinite(image_features).all() and torch.isfinite(text_features).all()
    assert not torch.allclose(text_features[0], text_features[1])


def test_checkpoints_differ_per_label_and_rerun_skips(weights):
    root, paths = weights
    assert set(paths) == set(dryrun.DRYRUN_MODELS)
    openai, _ = read_checkpoint(paths["CLIP B/32"])
    openclip, _ = read_checkpoint(paths["OpenCLIP B/32"])
    assert set(openai) == set(openclip) and not torch.equal(openai["text_projection"], openclip["text_projection"])
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    start = time.perf_counter()
    assert dryrun.write_random_checkpoints(root, progress=False) == paths
    assert time.perf_counter() - start < 2.0
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before
    siglip = root / "timm__ViT-B-16-SigLIP"
    assert (siglip / "tokenizer.json").is_file() and (siglip / dryrun.TOKENIZER_MARKER).is_file()


def test_captioner_checkpoint_is_a_random_coca_with_a_live_decoder(tmp_path, monkeypatch):
    from safetensors import safe_open

    from crossgap_lib.preflight import find_weights

    path = dryrun.write_captioner_checkpoint(tmp_path)
    assert path.name == "coca_ViT-B-32__mscoco_finetuned_laion2b_s13b_b90k.safetensors"
    assert Path(str(path) + dryrun.SIDECAR_SUFFIX).is_file()
    written = path.stat().st_mtime_ns
    assert dryrun.write_captioner_checkpoint(tmp_path) == path and path.stat().st_mtime_ns == written  # kept
    with safe_open(str(path), "pt") as f:
        projection = f.get_tensor("text_decoder.text_projection")
    assert projection.dtype == torch.float16 and float(projection.float().std()) > 0  # CoCa's init is zero
    monkeypatch.setenv("CROSSGAP_WEIGHTS", str(tmp_path))
    assert find_weights("coca_ViT-B-32", "mscoco_finetuned_laion2b_s13b_b90k")[0] == str(path)  # load_clip's lookup


def test_unknown_labels_and_real_weights_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"\['CLIP B/64'\].*supported.*'CLIP L/14'.*'SLIP L/16'"):
        dryrun.write_random_checkpoints(tmp_path, ["CLIP B/32", "CLIP B/64"])
    assert list(tmp_path.iterdir()) == []
    real = tmp_path / "ViT-B-32__openai.safetensors"
    real.write_bytes(b"real weights")
    with pytest.raises(FileExistsError, match="not written by crossgap_lib.dryrun"):
        dryrun.write_random_checkpoints(tmp_path, ["CLIP B/32"], progress=False)
    assert real.read_bytes() == b"real weights" and sorted(os.listdir(tmp_path)) == [real.name]
    assert set(dryrun.supported_checkpoint_labels()) == set(paper_labels())


def test_a_real_siglip_tokenizer_in_the_weights_folder_is_kept(tmp_path):
    folder = tmp_path / "timm__ViT-B-16-SigLIP"
    folder.mkdir()
    (folder / "tokenizer.json").write_text("{}")
    assert dryrun.write_standin_tokenizer(tmp_path) == folder
    assert [p.name for p in folder.iterdir()] == ["tokenizer.json"]
    assert dryrun.write_standin_tokenizer(tmp_path, "ViT-B-32") is None  # open_clip's own tokenizer: nothing to do
