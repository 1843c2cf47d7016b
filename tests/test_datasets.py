"""Loaders of the paper's datasets, each tested on a miniature copy in the real on-disk format built in tmp_path."""

from __future__ import annotations

import importlib
import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import crossgap_lib.datasets as ds
from crossgap_lib.datasets import text as text_module
from crossgap_lib.datasets.safe_pickle import UnsafePickleError, load_pickle_safely
from crossgap_lib.dryrun import write_miniature_datasets


# ----------------------------------------------------------------------------------------------------- builders
def jpeg(path: Path, value: int = 128, size: tuple[int, int] = (12, 10)) -> Path:
    """Write a tiny solid-colour JPEG (width, height = size)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, 255 - value, value // 2)).save(path, "JPEG")
    return path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def jsonl(path: Path, rows: list[dict]) -> Path:
    return write(path, "".join(json.dumps(r) + "\n" for r in rows))


def make_cub(root: Path) -> Path:
    folder = root / "CUB_200_2011"
    classes = ["001.Black_footed_Albatross", "002.Laysan_Albatross"]
    images, labels, split = [], [], []
    for image_id in range(1, 7):
        c = (image_id - 1) // 3
        rel = f"{classes[c]}/{classes[c][4:]}_{image_id:04d}.jpg"
        jpeg(folder / "images" / rel, 40 * image_id)
        images.append(f"{image_id} {rel}")
        labels.append(f"{image_id} {c + 1}")
        split.append(f"{image_id} {int(image_id % 3 != 0)}")  # ids 3 and 6 are test
    write(folder / "images.txt", "\n".join(images) + "\n")
    write(folder / "image_class_labels.txt", "\n".join(labels) + "\n")
    write(folder / "train_test_split.txt", "\n".join(split) + "\n")
    write(folder / "classes.txt", "".join(f"{i + 1} {c}\n" for i, c in enumerate(classes)))
    return folder


def make_revisited(root: Path, name: str = "roxford5k", protocol: int = 4) -> Path:
    folder = root / name
    imlist = [f"all_souls_{i:06d}" for i in range(5)]
    qimlist = ["all_souls_q1", "radcliffe_q2"]
    for n in imlist + qimlist:
        jpeg(folder / "jpg" / f"{n}.jpg", 90, size=(20, 16))
    gnd = [
        {"bbx": [2.0, 3.0, 12.0, 11.0], "easy": np.array([0, 2]), "hard": np.array([4]), "junk": np.array([1])},
        {"bbx": np.array([0.0, 0.0, 10.0, 10.0]), "easy": np.array([3], dtype=np.int64),
         "hard": np.array([], dtype=np.int64), "junk": np.array([], dtype=np.int64)},
    ]
    with open(folder / f"gnd_{name}.pkl", "wb") as f:
        pickle.dump({"imlist": imlist, "qimlist": qimlist, "gnd": gnd}, f, protocol=protocol)
    return folder


# ------------------------------------------------------------------------------------------------------ registry
def test_registry_lists_every_paper_dataset_with_a_layout_and_source():
    names = ds.list_datasets()
    for name in [*ds.IMAGE_RETRIEVAL_DATASETS, *ds.TEXT_RETRIEVAL_DATASETS, "20newsgroups", "imdb", "nanoscifact",
                 "imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r"]:
        assert name in names
        text = ds.describe(name)
        assert ds.DATASETS[name].folder in text and "http" in text and "CROSSGAP_DATA" in text
    assert len(ds.IMAGE_RETRIEVAL_DATASETS) == 15 and len(ds.CLASSIFICATION_DATASETS) == 11
    assert set(ds.list_datasets("image")) | set(ds.list_datasets("text")) == set(names)
    with pytest.raises(ValueError, match="modality"):
        ds.list_datasets("audio")


def test_retrieval_protocols_follow_the_paper():
    assert ds.retrieval_protocol("cub") == ("all", "all", True)
    assert ds.retrieval_protocol("sop") == ("test", "test", True)
    assert ds.retrieval_protocol("roxford5k") == ("query", "gallery", False)
    assert ds.retrieval_protocol("RParis") == ("query", "gallery", False)  # alias, case-insensitive
    for name in ds.CLASSIFICATION_DATASETS:
        assert ds.retrieval_protocol(name) == ("test", "train", False)
        assert ds.zero_shot_split(name) == "test"
    assert ds.retrieval_protocol("coco") == ("test_query", "test_gallery", False)
    assert ds.retrieval_protocol("flickr30k") == ("val_query", "val_gallery", False)
    assert ds.retrieval_protocol("nocaps") == ("val_query", "val_gallery", False)
    for name in ds.list_datasets():  # every protocol names real splits of its dataset
        spec = ds.DATASETS[name]
        if spec.protocol:
            assert spec.protocol[0] in spec.splits and spec.protocol[1] in spec.splits
    with pytest.raises(ValueError, match="no retrieval protocol"):
        ds.retrieval_protocol("imagenet_a")
    with pytest.raises(ValueError, match="zero-shot"):
        ds.zero_shot_split("cub")
    with pytest.raises(ValueError, match="not a known dataset"):
        ds.load_dataset("mnist")


def test_missing_root_and_missing_folder_errors_name_dataset_path_layout_and_source(tmp_path, monkeypatch):
    monkeypatch.delenv("CROSSGAP_DATA", raising=False)
    with pytest.raises(ds.DatasetNotFoundError, match="CROSSGAP_DATA is not set") as info:
        ds.load_dataset("cub")
    assert "image_class_labels.txt" in str(info.value)
    with pytest.raises(ds.DatasetNotFoundError) as info:
        ds.load_dataset("roxford5k", root=tmp_path, split="query")
    message = str(info.value)
    assert "Revisited Oxford5k" in message and str(tmp_path / "roxford5k") in message
    assert "gnd_roxford5k.pkl" in message and "cmp.felk.cvut.cz/revisitop" in message
    (tmp_path / "CUB_200_2011").mkdir()
    write(tmp_path / "CUB_200_2011" / "images.txt", "")
    with pytest.raises(ds.DatasetNotFoundError, match="missing image_class_labels.txt"):
        ds.load_dataset("cub", root=tmp_path)
    assert issubclass(ds.DatasetNotFoundError, FileNotFoundError)


def test_bad_split_and_on_corrupt_are_value_errors(tmp_path):
    make_cub(tmp_path)
    with pytest.raises(ValueError, match="split='val'.*'all', 'train', 'test'"):
        ds.load_dataset("cub", root=tmp_path, split="val")
    with pytest.raises(ValueError, match="on_corrupt='ignore'"):
        ds.load_dataset("cub", root=tmp_path, on_corrupt="ignore")


# ----------------------------------------------------------------------------------------------- image datasets
def test_cub_splits_labels_classnames_and_lazy_pil_images(tmp_path, monkeypatch):
    make_cub(tmp_path)
    monkeypatch.setenv("CROSSGAP_DATA", str(tmp_path))  # root from the environment
    full = ds.load_dataset("cub")
    assert full.split == "all" and len(full) == 6
    assert full.labels.dtype == torch.long and full.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert full.classnames == ["Black footed Albatross", "Laysan Albatross"]
    train, test = ds.load_dataset("cub", split="train"), ds.load_dataset("cub", split="test")
    assert len(train) == 4 and len(test) == 2 and test.labels.tolist() == [0, 1]
    image, label = test[1]
    assert isinstance(image, Image.Image) and image.mode == "RGB" and image.size == (12, 10) and label == 1
    assert test.paths[1].name == "Laysan_Albatross_0006.jpg" and test.paths[1].is_file()
    # the dataset folder itself also works as root
    direct = ds.load_dataset("cub", root=tmp_path / "CUB_200_2011", split="test")
    assert direct.relative_paths == test.relative_paths
    # fingerprint: cheap, stable, sensitive to split and labels
    assert full.fingerprint() == ds.load_dataset("cub").fingerprint()
    assert len({full.fingerprint(), train.fingerprint(), test.fingerprint()}) == 3
    clone = pickle.loads(pickle.dumps(test))  # DataLoader workers receive a pickled copy
    assert clone.fingerprint() == test.fingerprint() and clone[0][1] == test[0][1]
    assert "images.txt" in test.describe()
    relabelled = ds.load_dataset("cub", split="test")
    relabelled.labels = relabelled.labels.flip(0)
    assert relabelled.fingerprint() != test.fingerprint()


def test_incomplete_folder_names_the_missing_images(tmp_path):
    folder = make_cub(tmp_path)
    (folder / "images" / "002.Laysan_Albatross" / "Laysan_Albatross_0005.jpg").unlink()
    with pytest.raises(ds.DatasetNotFoundError, match="incomplete: 1 of 6 .*Laysan_Albatross_0005.jpg"):
        ds.load_dataset("cub", root=tmp_path)
    assert len(ds.load_dataset("cub", root=tmp_path, split="test")) == 2  # that image is not in the test split


def test_corrupt_image_raise_names_the_file_and_skip_drops_it_with_a_warning(tmp_path):
    folder = make_cub(tmp_path)
    bad = folder / "images" / "001.Black_footed_Albatross" / "Black_footed_Albatross_0002.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    data = ds.load_dataset("cub", root=tmp_path)  # default: raise, but only when the image is read
    data[0]
    with pytest.raises(ds.CorruptImageError, match="#1 .*Black_footed_Albatross_0002.jpg"):
        data[1]
    with pytest.raises(ds.CorruptImageError, match="Black_footed_Albatross_0002.jpg"):
        data.verify(progress=False)
    with pytest.warns(UserWarning, match="skipped 1 unreadable image"):
        skipped = ds.load_dataset("cub", root=tmp_path, on_corrupt="skip", progress=False)
    assert len(skipped) == 5 and skipped.skipped == [str(bad.relative_to(folder)).replace(os.sep, "/")]
    assert skipped.labels.tolist() == [0, 0, 1, 1, 1] and len(skipped.paths) == 5
    assert all(isinstance(skipped[i][0], Image.Image) for i in range(len(skipped)))
    assert skipped.fingerprint() != data.fingerprint()


def test_stanford_online_products(tmp_path):
    folder = tmp_path / "Stanford_Online_Products"
    header = "image_id class_id super_class_id path\n"
    rows = {"train": [(1, 1, 1, "bicycle_final/111_0.JPG"), (2, 1, 1, "bicycle_final/111_1.JPG")],
            "test": [(3, 11319, 2, "cabinet_final/222_0.JPG"), (4, 11319, 2, "cabinet_final/222_1.JPG"),
                     (5, 11320, 2, "cabinet_final/333_0.JPG")]}
    for split, items in rows.items():
        write(folder / f"Ebay_{split}.txt", header + "".join(f"{a} {b} {c} {p}\n" for a, b, c, p in items))
        for _, _, _, p in items:
            jpeg(folder / p)
    test = ds.load_dataset("sop", root=tmp_path, split="test")
    assert len(test) == 3 and test.labels.tolist() == [11318, 11318, 11319] and test.classnames is None
    assert len(ds.load_dataset("sop", root=tmp_path, split="all")) == 5
    assert ds.load_dataset("sop", root=tmp_path, split="train")[1][1] == 0


@pytest.mark.parametrize("name", ["roxford5k", "rparis6k"])
def test_revisited_query_gallery_and_ground_truth_from_a_numpy_pickle(tmp_path, name):
    make_revisited(tmp_path, name)
    query = ds.load_dataset(name, root=tmp_path, split="query")
    gallery = ds.load_dataset(name, root=tmp_path, split="gallery")
    assert len(query) == 2 and len(gallery) == 5
    assert query.labels.tolist() == [-1, -1] and gallery.relative_paths[0] == "jpg/all_souls_000000.jpg"
    assert query.gnd[0] == {"easy": [0, 2], "hard": [4], "junk": [1], "bbx": (2.0, 3.0, 12.0, 11.0)}
    assert query.gnd[1]["easy"] == [3] and query.gnd[1]["hard"] == [] and gallery.gnd == query.gnd
    assert query[0][0].size == (20, 16)
    cropped = ds.load_dataset(name, root=tmp_path, split="query", crop_queries=True)
    assert cropped[0][0].size == (10, 8) and cropped[1][0].size == (10, 10)
    assert gallery[0][0].size == (20, 16)  # gallery images are never cropped
    with pytest.raises(ValueError, match="shift the gallery"):
        ds.load_dataset(name, root=tmp_path, split="gallery", on_corrupt="skip")


def test_revisited_rejects_out_of_range_ground_truth(tmp_path):
    folder = make_revisited(tmp_path)
    raw = load_pickle_safely(folder / "gnd_roxford5k.pkl")
    raw["gnd"][0]["easy"] = np.array([7])
    with open(folder / "gnd_roxford5k.pkl", "wb") as f:
        pickle.dump(raw, f)
    with pytest.raises(ValueError, match="gallery index 7 out of range"):
        ds.load_dataset("roxford5k", root=tmp_path, split="query")


# ------------------------------------------------------------------------------------------------- safe pickle
@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_safe_pickle_loads_containers_and_numpy_at_every_protocol(tmp_path, protocol):
    obj = {"ints": np.arange(4), "floats": np.zeros((2, 3), np.float32), "scalar": np.float64(2.5), "set": {1, 2},
           "frozen": frozenset({"a"}), "bytes": b"\x00\xffab", "empty": b"", "nested": [(1, "x"), {"k": None}],
           "objects": np.array(["s", None], dtype=object)}
    path = tmp_path / "data.pkl"
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)
    loaded = load_pickle_safely(path)
    assert loaded["ints"].tolist() == [0, 1, 2, 3] and loaded["floats"].shape == (2, 3)
    assert loaded["floats"].dtype == np.float32 and loaded["scalar"] == 2.5
    assert loaded["set"] == {1, 2} and loaded["frozen"] == frozenset({"a"})
    assert loaded["bytes"] == b"\x00\xffab" and loaded["empty"] == b""
    assert loaded["nested"] == [(1, "x"), {"k": None}] and loaded["objects"].tolist() == ["s", None]


class _RunsShell:
    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class _CallsEval:
    def __reduce__(self):
        return eval, ("1 + 1",)


def test_safe_pickle_rejects_code_and_never_runs_it(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    with open(path, "wb") as f:
        pickle.dump({"imlist": [], "payload": _RunsShell(f"touch {marker}")}, f)
    with pytest.raises(UnsafePickleError, match=r"refusing to load (posix|nt|os)\.system"):
        load_pickle_safely(path)
    assert not marker.exists()
    with open(path, "wb") as f:
        pickle.dump([_CallsEval()], f)
    with pytest.raises(UnsafePickleError, match="builtins.eval"):
        load_pickle_safely(path)
    with open(path, "wb") as f:  # a class outside the allow-list, even a harmless one
        pickle.dump(Path("x"), f)
    with pytest.raises(pickle.UnpicklingError, match="pathlib"):
        load_pickle_safely(path)


def test_revisited_refuses_a_malicious_ground_truth_file(tmp_path):
    folder = make_revisited(tmp_path)
    marker = tmp_path / "pwned"
    with open(folder / "gnd_roxford5k.pkl", "wb") as f:
        pickle.dump({"imlist": [], "qimlist": [], "gnd": _RunsShell(f"touch {marker}")}, f)
    with pytest.raises(UnsafePickleError, match="gnd_roxford5k.pkl"):
        ds.load_dataset("roxford5k", root=tmp_path, split="query")
    assert not marker.exists()


# -------------------------------------------------------------------------------------- CoOp-style split files
@pytest.mark.parametrize("row", ds.SPLIT_JSON_SETS, ids=[r[0] for r in ds.SPLIT_JSON_SETS])
def test_split_json_classification_sets(tmp_path, row):
    name, _, folder_name, split_file, _, _ = row
    write_miniature_datasets(tmp_path, [name], images_per_class=2, n_classes=2, progress=False)  # CoOp file names
    table = json.loads((tmp_path / folder_name / split_file).read_text(encoding="utf-8"))
    stored = dict(sorted({label: classname for rows in table.values() for _, label, classname in rows}.items()))
    train = ds.load_dataset(name, root=tmp_path, split="train")
    test = ds.load_dataset(name, root=tmp_path, split="test")
    assert len(train) == 4 and len(test) == 2 and len(ds.load_dataset(name, root=tmp_path, split="val")) == 2
    assert train.labels.tolist() == [0, 0, 1, 1] and list(stored) == [0, 1]
    assert test.classnames == [c.replace("_", " ") for c in stored.values()]  # e.g. "apple_pie" -> "apple pie"
    image, label = test[1]
    assert image.mode == "RGB" and label == 1
    assert ds.load_dataset(name, root=tmp_path).split == "test"  # default split


def test_split_json_missing_split_file_says_where_to_get_it(tmp_path):
    (tmp_path / "dtd" / "images").mkdir(parents=True)
    with pytest.raises(ds.DatasetNotFoundError, match="split_zhou_DescribableTextures.json") as info:
        ds.load_dataset("dtd", root=tmp_path)
    assert "KaiyangZhou/CoOp" in str(info.value)


def test_fgvc_aircraft_variant_lists(tmp_path):
    folder = tmp_path / "fgvc_aircraft"
    write(folder / "variants.txt", "707-320\nA300B4\nBoeing 717\n")
    rows = {"train": [("1025794", "707-320"), ("1340192", "Boeing 717")], "val": [("0056978", "A300B4")],
            "test": [("1514522", "Boeing 717"), ("0062765", "707-320")]}
    for split, items in rows.items():
        write(folder / f"images_variant_{split}.txt", "".join(f"{i} {v}\n" for i, v in items))
        for i, _ in items:
            jpeg(folder / "images" / f"{i}.jpg")
    test = ds.load_dataset("fgvc_aircraft", root=tmp_path)
    assert test.labels.tolist() == [2, 0] and test.classnames == ["707-320", "A300B4", "Boeing 717"]
    assert test.relative_paths == ["images/1514522.jpg", "images/0062765.jpg"]
    assert ds.load_dataset("aircraft", root=tmp_path, split="train").labels.tolist() == [0, 2]


# ---------------------------------------------------------------------------------------------- ImageNet family
def test_imagenet_class_folders_with_built_in_names(tmp_path):
    folder = tmp_path / "imagenet"
    for split in ("train", "val"):
        for wnid in ("n01443537", "n01440764"):
            for k in range(2 if split == "train" else 1):
                jpeg(folder / "images" / split / wnid / f"{wnid}_{k}.JPEG")
    train = ds.load_dataset("imagenet", root=tmp_path, split="train")
    assert train.labels.tolist() == [0, 0, 1, 1] and len(train.classnames) == 1000
    assert train.classnames[:2] == ["tench", "goldfish"] and train[3][1] == 1
    test = ds.load_dataset("imagenet", root=tmp_path)  # test == val, as in CoOp
    assert test.relative_paths == ds.load_dataset("imagenet", root=tmp_path, split="val").relative_paths
    assert ds.imagenet_classnames()[:2] == ["tench", "goldfish"] and len(ds.imagenet_classnames()) == 1000
    wnids = ds.imagenet_wnids()
    assert len(wnids) == 1000 and wnids == sorted(wnids) and wnids[:2] == ["n01440764", "n01443537"]


def test_imagenet_classnames_file_and_layout_errors(tmp_path):
    folder = tmp_path / "imagenet"
    write(folder / "classnames.txt", "n01440764 tench fish\nn01443537 gold fish\n")
    jpeg(folder / "images" / "train" / "n01443537" / "a.JPEG")
    train = ds.load_dataset("imagenet", root=tmp_path, split="train")
    assert train.classnames == ["tench fish", "gold fish"] and train.labels.tolist() == [1]
    jpeg(folder / "images" / "val" / "ILSVRC2012_val_00000001.JPEG")  # val not sorted into class folders
    with pytest.raises(ds.DatasetNotFoundError, match="no class sub-folders"):
        ds.load_dataset("imagenet", root=tmp_path, split="val")
    jpeg(folder / "images" / "train" / "n99999999" / "b.JPEG")
    with pytest.raises(ds.DatasetNotFoundError, match="unknown class folders.*n99999999"):
        ds.load_dataset("imagenet", root=tmp_path, split="train")


def test_imagenet_variants(tmp_path):
    for k in ("0", "999"):
        jpeg(tmp_path / "imagenetv2" / "imagenetv2-matched-frequency-format-val" / k / "x.jpeg")
    v2 = ds.load_dataset("imagenetv2", root=tmp_path)
    assert v2.labels.tolist() == [0, 999] and len(v2.classnames) == 1000
    for wnid in ("n01484850", "n01443537"):  # goldfish (1), great white shark (2)
        jpeg(tmp_path / "imagenet-adversarial" / "imagenet-a" / wnid / "y.jpg")
        jpeg(tmp_path / "imagenet-sketch" / "images" / wnid / "z.JPEG")
    a = ds.load_dataset("imagenet_a", root=tmp_path)
    assert a.labels.tolist() == [0, 1] and a.classnames == ["goldfish", "great white shark"]
    sketch = ds.load_dataset("imagenet_sketch", root=tmp_path)
    assert sketch.labels.tolist() == [1, 2] and len(sketch.classnames) == 1000
    with pytest.raises(ds.DatasetNotFoundError, match="imagenet-rendition"):
        ds.load_dataset("imagenet_r", root=tmp_path)


# ------------------------------------------------------------------------------------------------ text datasets
def karpathy(images: list[tuple[str, int, list[str]]]) -> dict:
    sent_id = 0
    out = []
    for split, imgid, captions in images:
        sentences = []
        for c in captions:
            sentences.append({"raw": c, "sentid": sent_id, "tokens": c.lower().split(), "imgid": imgid})
            sent_id += 1
        out.append({"split": split, "imgid": imgid, "filename": f"{imgid}.jpg", "sentences": sentences})
    return {"images": out, "dataset": "coco"}


@pytest.mark.parametrize("name,file,main", [("coco", "dataset_coco.json", "test"),
                                            ("flickr30k", "dataset_flickr30k.json", "val")])
def test_karpathy_captions_query_gallery_split(tmp_path, name, file, main):
    other = "val" if main == "test" else "test"
    write(tmp_path / name / file, json.dumps(karpathy([
        (main, 10, ["A dog runs.", "A brown dog running.", "Dog on grass."]),
        (other, 11, ["A cat.", "Cat sleeping."]),
        (main, 12, [" Two men talk. ", "Men in suits."]),
        ("train", 13, ["A bus."]), ("restval", 14, ["A red bus.", "Bus stop."]),
    ])))
    query_split, gallery_split, exclude_self = ds.retrieval_protocol(name)
    query = ds.load_dataset(name, root=tmp_path, split=query_split)
    gallery = ds.load_dataset(name, root=tmp_path, split=gallery_split)
    assert query.texts == ["A dog runs.", "Two men talk."] and query.labels.tolist() == [10, 12]
    assert gallery.texts == ["A brown dog running.", "Dog on grass.", "Men in suits."]
    assert gallery.labels.tolist() == [10, 10, 12] and not exclude_self
    assert query.ids == ["0", "5"] and query[1] == ("Two men talk.", 12)
    assert len(ds.load_dataset(name, root=tmp_path, split=main)) == 5
    assert ds.load_dataset(name, root=tmp_path, split="train").labels.tolist() == [13, 14, 14]  # train + restval
    assert query.fingerprint() != gallery.fingerprint()


def test_nocaps_first_caption_per_image_is_the_query(tmp_path):
    annotations = [{"image_id": 7, "id": 1, "caption": "a lynx"}, {"image_id": 3, "id": 2, "caption": "a kayak"},
                   {"image_id": 7, "id": 3, "caption": "a wild cat"}, {"image_id": 3, "id": 4, "caption": "a boat"},
                   {"image_id": 7, "id": 5, "caption": "big cat"}]
    write(tmp_path / "nocaps" / "nocaps_val_4500_captions.json",
          json.dumps({"images": [{"id": 7}, {"id": 3}], "annotations": annotations}))
    query = ds.load_dataset("nocaps", root=tmp_path, split="val_query")
    gallery = ds.load_dataset("nocaps", root=tmp_path, split="val_gallery")
    assert query.texts == ["a lynx", "a kayak"] and query.labels.tolist() == [7, 3]
    assert gallery.texts == ["a wild cat", "big cat", "a boat"] and gallery.labels.tolist() == [7, 7, 3]
    assert len(ds.load_dataset("nocaps", root=tmp_path)) == 5


def test_twenty_newsgroups_bydate_folders(tmp_path):
    groups = [row["group"] for row in text_module._class_table("newsgroups_classes.csv")]
    assert len(groups) == 20 and groups == sorted(groups)
    for part in ("train", "test"):
        for g, group in enumerate(groups):
            for k in (10, 9):  # natural order: 9 before 10
                write(tmp_path / "20newsgroups" / f"20news-bydate-{part}" / group / str(k + 100 * g),
                      f"From: someone\nSubject: {group} {part} {k}\n")
    test = ds.load_dataset("20newsgroups", root=tmp_path)
    assert len(test) == 40 and test.labels.tolist() == [g for g in range(20) for _ in range(2)]
    assert test.ids[:2] == ["test/alt.atheism/9", "test/alt.atheism/10"] and "alt.atheism test 9" in test.texts[0]
    assert test.classnames[1] == "computer graphics"
    assert len(ds.load_dataset("newsgroups", root=tmp_path, split="all")) == 80
    classes = ds.load_dataset("20newsgroups", root=tmp_path, split="classes")
    assert len(classes) == 20 and classes.labels.tolist() == list(range(20)) and classes.ids == groups
    shutil.rmtree(tmp_path / "20newsgroups" / "20news-bydate-train" / "sci.space")
    with pytest.raises(ds.DatasetNotFoundError, match="20 group folders"):
        ds.load_dataset("20newsgroups", root=tmp_path, split="train")


def test_imdb_aclimdb_folders(tmp_path):
    for part in ("train", "test"):
        for folder, names in (("neg", ["10_2.txt", "2_1.txt"]), ("pos", ["0_9.txt"])):
            for n in names:
                write(tmp_path / "aclImdb" / part / folder / n, f"{part} {folder} {n}<br /><br />The end.")
    write(tmp_path / "aclImdb" / "train" / "unsup" / "0_0.txt", "unlabelled")  # ignored, as it has no label
    data = ds.load_dataset("imdb", root=tmp_path)
    assert len(data) == 6 and data.labels.tolist() == [0, 0, 1, 0, 0, 1]
    assert data.ids[:2] == ["train/neg/2_1.txt", "train/neg/10_2.txt"]
    assert data.texts[0] == "train neg 2_1.txt  The end." and data.classnames == ["negative", "positive"]
    classes = ds.load_dataset("imdb", root=tmp_path, split="classes")
    assert classes.labels.tolist() == [0, 1] and "review" in classes.texts[0]
    assert ds.retrieval_protocol("imdb") == ("classes", "all", False)


def make_nanobeir(folder: Path, qrels_format: str = "jsonl") -> None:
    jsonl(folder / "corpus.jsonl", [{"_id": "d1", "text": "Aspirin thins blood."}, {"_id": "d2", "text": "Cats purr."},
                                    {"_id": "d3", "text": " Heparin is an anticoagulant. "}])
    jsonl(folder / "queries.jsonl", [{"_id": "q1", "text": "blood thinners"}, {"_id": "q2", "text": "dogs"}])
    rows = [("q1", "d1", 1), ("q1", "d3", 1), ("q2", "d2", 0)]  # score 0: not relevant
    if qrels_format == "jsonl":
        jsonl(folder / "qrels.jsonl", [{"query-id": q, "corpus-id": d, "score": s} for q, d, s in rows])
    else:
        write(
            folder / "qrels" / "test.tsv",
            "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{s}\n" for q, d, s in rows),
        )


@pytest.mark.parametrize("qrels_format", ["jsonl", "tsv"])
def test_nanobeir_jsonl_and_relevance(tmp_path, qrels_format):
    make_nanobeir(tmp_path / "NanoNFCorpus", qrels_format)
    queries = ds.load_dataset("nanonfcorpus", root=tmp_path, split="queries")
    corpus = ds.load_dataset("nanonfcorpus", root=tmp_path, split="corpus")
    assert queries.texts == ["blood thinners", "dogs"] and corpus.texts[2] == "Heparin is an anticoagulant."
    assert corpus.ids == ["d1", "d2", "d3"] and corpus.labels.tolist() == [-1, -1, -1]
    relevance = queries.relevance(corpus)
    assert relevance.dtype == torch.bool and relevance.tolist() == [[True, False, True], [False, False, False]]
    with pytest.raises(ValueError, match="relevance"):
        corpus.relevance(queries)
    assert set(ds.NANOBEIR_PAPER) <= set(ds.NANOBEIR_SETS)


def test_nanobeir_parquet_without_reader_is_a_clear_error(tmp_path, monkeypatch):
    folder = tmp_path / "NanoSciFact"
    make_nanobeir(folder)
    (folder / "corpus.jsonl").unlink()
    write(folder / "corpus" / "train-00000-of-00001.parquet", "PAR1 placeholder")
    monkeypatch.setattr(text_module, "_parquet_engine", lambda: None)
    with pytest.raises(ImportError, match="pyarrow.*corpus.jsonl"):
        ds.load_dataset("nanoscifact", root=tmp_path, split="corpus")
    assert len(ds.load_dataset("nanoscifact", root=tmp_path, split="queries")) == 2  # jsonl parts still load
    (folder / "queries.jsonl").unlink()
    with pytest.raises(ds.DatasetNotFoundError, match="missing queries"):
        ds.load_dataset("nanoscifact", root=tmp_path, split="queries")


def test_nanobeir_parquet_hf_layout(tmp_path):
    pytest.importorskip("pyarrow")
    import pandas as pd

    folder = tmp_path / "NanoFEVER"
    for part, rows in (("corpus", [{"_id": "a", "text": "x"}, {"_id": "b", "text": "y"}]),
                       ("queries", [{"_id": "q", "text": "z"}]),
                       ("qrels", [{"query-id": "q", "corpus-id": "b"}])):
        (folder / part).mkdir(parents=True)
        pd.DataFrame(rows).to_parquet(folder / part / "train-00000-of-00001.parquet")
    queries = ds.load_dataset("nanofever", root=tmp_path, split="queries")
    corpus = ds.load_dataset("nanofever", root=tmp_path, split="corpus")
    assert queries.relevance(corpus).tolist() == [[False, True]]


def test_generated_dataset_is_re_exported_lazily_and_unknown_names_fail():
    shapes = importlib.import_module("crossgap_lib.datasets.shapes")
    assert ds.shapes is shapes and ds.make_shapes is shapes.make_shapes and ds.ShapesConfig is shapes.ShapesConfig
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        ds.nope  # noqa: B018


# ------------------------------------------------------------------------------ malformed files and replaced images
def test_fingerprint_notices_an_image_replaced_in_place(tmp_path):
    folder = make_cub(tmp_path)
    before = ds.load_dataset("cub", root=tmp_path, split="test")
    fingerprint = before.fingerprint()
    path = before.paths[0]
    stat = path.stat()
    jpeg(path, 7)  # same path, same label, new pixels
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # coarse file-system clocks
    assert ds.load_dataset("cub", root=tmp_path, split="test").fingerprint() != fingerprint
    assert (folder / "images.txt").is_file()


def test_malformed_gnd_pickles_are_format_errors_naming_the_file(tmp_path):
    folder = make_revisited(tmp_path)
    gnd = folder / "gnd_roxford5k.pkl"
    good = gnd.read_bytes()
    for content, problem in [(b"", "empty"), (good[: len(good) // 2], "truncated or malformed"),
                             (b"this is not a pickle at all", "truncated or malformed")]:
        gnd.write_bytes(content)
        with pytest.raises(ds.base.DatasetFormatError, match=rf"gnd_roxford5k.pkl.*{problem}.*download it again"):
            ds.load_dataset("roxford5k", root=tmp_path, split="query")
    with open(gnd, "wb") as f:
        pickle.dump({"imlist": [], "qimlist": ["q"], "gnd": ["not a dict"]}, f)
    with pytest.raises(ds.base.DatasetFormatError, match=r"gnd_roxford5k.pkl: gnd\[0\] should be a dict"):
        ds.load_dataset("roxford5k", root=tmp_path, split="query")


@pytest.mark.parametrize(
    "file, line, match",
    [
        ("images.txt", "7\n", r"images.txt, line 7: expected 2 whitespace-separated fields, got 1"),
        ("image_class_labels.txt", "7 two\n", r"image_class_labels.txt, line 7: field 2 should be an integer"),
        ("classes.txt", "x 003.Bird\n", r"classes.txt, line 3: field 1 should be an integer"),
    ],
)
def test_malformed_cub_line_names_the_file_and_line(tmp_path, file, line, match):
    folder = make_cub(tmp_path)
    with open(folder / file, "a", encoding="utf-8") as f:
        f.write(line)
    with pytest.raises(ds.base.DatasetFormatError, match=match) as info:
        ds.load_dataset("cub", root=tmp_path)
    assert "download it again" in str(info.value) and "images.txt" in str(info.value)  # the fix and the layout


def test_truncated_or_malformed_split_json_is_a_format_error(tmp_path):
    folder = tmp_path / "dtd"
    jpeg(folder / "images" / "a" / "1.jpg")
    table = json.dumps({"train": [["a/1.jpg", 0, "a"]], "val": [], "test": [["a/1.jpg", 0, "a"]]})
    write(folder / "split_zhou_DescribableTextures.json", table[:-9])
    with pytest.raises(ds.base.DatasetFormatError, match=r"split_zhou_DescribableTextures.json, line 1: invalid JSON"):
        ds.load_dataset("dtd", root=tmp_path)
    write(folder / "split_zhou_DescribableTextures.json", json.dumps({"train": [], "test": [["a/1.jpg", 0]]}))
    with pytest.raises(ds.base.DatasetFormatError, match=r"'test'\[0\] should be \[relative_path, label, classname\]"):
        ds.load_dataset("dtd", root=tmp_path)


def test_malformed_text_files_are_format_errors(tmp_path):
    write(tmp_path / "coco" / "dataset_coco.json", '{"images": [')
    with pytest.raises(ds.base.DatasetFormatError, match="dataset_coco.json, line 1: invalid JSON"):
        ds.load_dataset("coco", root=tmp_path)
    make_nanobeir(tmp_path / "NanoNFCorpus")
    with open(tmp_path / "NanoNFCorpus" / "corpus.jsonl", "a", encoding="utf-8") as f:
        f.write('{"_id": "d4", "text": \n')
    with pytest.raises(ds.base.DatasetFormatError, match=r"corpus.jsonl, line 4: invalid JSON"):
        ds.load_dataset("nanonfcorpus", root=tmp_path, split="corpus")
