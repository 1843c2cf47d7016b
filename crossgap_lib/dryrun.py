"""Dry-run assets: miniature copies of the paper's datasets and random-weight checkpoints of the paper's models.

The book's ``dryrun`` profile runs the ``paper`` profile's code path on CPU. Instead of the real data and weights it
points ``$CROSSGAP_DATA`` and ``$CROSSGAP_WEIGHTS`` at folders written here:

>>> write_miniature_datasets("/tmp/dry/data")          # every dataset of the registry, real on-disk layouts
>>> write_random_checkpoints("/tmp/dry/weights")       # {"CLIP B/32": Path(".../ViT-B-32__openai.pt"), ...}
>>> write_captioner_checkpoint("/tmp/dry/weights")     # .../coca_ViT-B-32__mscoco_finetuned_laion2b_s13b_b90k...

Datasets: noise images with class structure (a per-class low-frequency pattern mixed with a per-image one, plus pixel
noise; 40-64 px, varied aspect), realistic class names and file names, captions and documents built from per-class
vocabularies, so retrieval metrics are neither 0 nor 1. Each dataset folder holds a marker file with the arguments
that made it; a rerun with the same arguments skips it. Folders are built under a temporary name and renamed, so an
interrupted run never leaves half a dataset; a folder without the marker (real data) is never overwritten.

Checkpoints: the paper's real architectures with random weights (fp16 on disk, loaded into fp32), in the formats of
the real downloads: an OpenAI-layout state dict (``.pt``) for the OpenAI rows, open_clip safetensors for OpenCLIP and
SigLIP, the SLIP repository's checkpoint layout (``module.`` prefix, timm ``visual.*``, ``image_projection``, the
SimCLR head ``image_mlp.*``, ``args``) for SLIP. SigLIP's Hugging Face tokenizer cannot be had offline, so a small
stand-in (a Unigram tokenizer trained on the dry-run vocabulary, ids below SigLIP's 32000) is saved where the loader
looks for it. A sidecar ``<checkpoint>.crossgap-dryrun.json`` records the arguments; files without one are real
weights and are never overwritten.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import shutil
import string
import tempfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from . import datasets as ds
from .datasets.paper import SPLIT_JSON_SETS
from .datasets.text import _class_table

FORMAT_VERSION = 2  # 2: COCO's train + restval images (for fine-tuning)
MARKER = ".crossgap-dryrun.json"
SIDECAR_SUFFIX = ".crossgap-dryrun.json"
TOKENIZER_MARKER = "crossgap-dryrun.json"
# labels written when ``models=None``: the B-size rows (the L rows are supported too, but 0.7-0.9 GB each)
DRYRUN_MODELS = ("CLIP B/32", "OpenCLIP B/32", "SigLIP B/16", "SLIP B/16")

# ================================================================================================== datasets
# ------------------------------------------------------------------------------------------------ class names
_CLASSNAMES: dict[str, tuple[str, ...]] = {
    "cub": ("001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross", "004.Groove_billed_Ani",
            "005.Crested_Auklet", "006.Least_Auklet", "007.Parakeet_Auklet", "008.Rhinoceros_Auklet",
            "009.Brewer_Blackbird", "010.Red_winged_Blackbird", "011.Rusty_Blackbird", "012.Yellow_headed_Blackbird"),
    "sop": ("bicycle", "cabinet", "chair", "coffee_maker", "fan", "kettle", "lamp", "mug", "sofa", "stapler",
            "table", "toaster"),
    "roxford5k": ("all_souls", "ashmolean", "balliol", "bodleian", "christ_church", "cornmarket", "hertford",
                  "keble", "magdalen", "pitt_rivers", "radcliffe_camera"),
    "rparis6k": ("defense", "eiffel", "invalides", "louvre", "moulinrouge", "museedorsay", "notredame", "pantheon",
                 "pompidou", "sacrecoeur", "triomphe"),
    # CoOp split files: (folder on disk, class name stored in the split file)
    "caltech101": ("accordion", "airplanes:airplane", "anchor", "ant", "barrel", "bass", "beaver", "binocular",
                   "bonsai", "Faces:face", "Leopards:leopard", "Motorbikes:motorbike"),
    "dtd": ("banded", "blotchy", "braided", "bubbly", "bumpy", "chequered", "cobwebbed", "cracked", "crosshatched",
            "crystalline", "dotted", "fibrous"),
    "eurosat": ("AnnualCrop:Annual Crop Land", "Forest:Forest", "HerbaceousVegetation:Herbaceous Vegetation Land",
                "Highway:Highway or Road", "Industrial:Industrial Buildings", "Pasture:Pasture Land",
                "PermanentCrop:Permanent Crop Land", "Residential:Residential Buildings", "River:River",
                "SeaLake:Sea or Lake"),
    "food101": ("apple_pie", "baby_back_ribs", "baklava", "beef_carpaccio", "beef_tartare", "beet_salad", "beignets",
                "bibimbap", "bread_pudding", "breakfast_burrito", "bruschetta", "caesar_salad"),
    "flowers102": ("pink primrose", "hard-leaved pocket orchid", "canterbury bells", "sweet pea", "english marigold",
                   "tiger lily", "moon orchid", "bird of paradise", "monkshood", "globe thistle", "snapdragon",
                   "colt's foot"),
    "oxford_pets": ("Abyssinian:abyssinian", "american_bulldog", "american_pit_bull_terrier", "basset_hound",
                    "beagle", "Bengal:bengal", "Birman:birman", "Bombay:bombay", "boxer",
                    "British_Shorthair:british_shorthair", "chihuahua", "Egyptian_Mau:egyptian_mau"),
    "stanford_cars": ("2000 AM General Hummer SUV", "2012 Acura RL Sedan", "2012 Acura TL Sedan",
                      "2008 Acura TL Type-S", "2012 Acura TSX Sedan", "2001 Acura Integra Type R",
                      "2012 Acura ZDX Hatchback", "2012 Aston Martin V8 Vantage Convertible",
                      "2012 Aston Martin V8 Vantage Coupe", "2012 Aston Martin Virage Convertible",
                      "2012 Aston Martin Virage Coupe", "2008 Audi RS 4 Convertible"),
    "sun397": ("a/abbey:abbey", "a/airplane_cabin:airplane_cabin", "a/airport_terminal:airport_terminal",
               "a/alley:alley", "a/amphitheater:amphitheater", "a/amusement_arcade:amusement_arcade",
               "a/amusement_park:amusement_park", "a/anechoic_chamber:anechoic_chamber",
               "a/apartment_building/outdoor:outdoor apartment_building", "a/apse/indoor:indoor apse",
               "a/aquarium:aquarium", "a/aqueduct:aqueduct"),
    "ucf101": ("Apply_Eye_Makeup", "Apply_Lipstick", "Archery", "Baby_Crawling", "Balance_Beam", "Band_Marching",
               "Baseball_Pitch", "Basketball", "Basketball_Dunk", "Bench_Press", "Biking", "Billiards"),
    "fgvc_aircraft": ("707-320", "727-200", "737-200", "A300B4", "Boeing 717", "Cessna 172", "DHC-8-100", "F/A-18",
                      "Falcon 2000", "Gulfstream IV", "MD-80", "Tu-154"),
    "imagenet_a": ("n01498041", "n01531178", "n01534433", "n01558993", "n01580077", "n01614925", "n01616318",
                   "n01631663", "n01641577", "n01669191", "n01677366", "n01687978"),
    "imagenet_r": ("n01443537", "n01484850", "n01494475", "n01498041", "n01514859", "n01518878", "n01531178",
                   "n01534433", "n01614925", "n01616318", "n01630670", "n01632777"),
}

_CAPTION_SUBJECTS = (("dog", "puppy"), ("cat", "kitten"), ("man", "guy"), ("woman", "lady"), ("horse", "pony"),
                     ("bus", "coach"), ("train", "locomotive"), ("bird", "seagull"), ("boat", "sailboat"),
                     ("pizza", "pie"), ("giraffe", "giraffe"), ("skateboarder", "skater"))
_CAPTION_ATTRIBUTES = ("small", "large", "brown", "white", "black", "red", "young", "old", "happy", "wet", "striped",
                       "yellow")
_CAPTION_ACTIONS = ("running", "sitting", "standing", "jumping", "resting", "walking", "waiting", "playing",
                    "looking around", "turning")
_CAPTION_PLACES = ("on the grass", "near the water", "in a field", "on a city street", "at the beach", "in a kitchen",
                   "under a tree", "next to a fence", "in the snow", "on a wooden table", "by a building",
                   "in a park")
_CAPTION_TEMPLATES = ("A {attr} {s} {act} {place}.", "The {s2} is {act} {place}", "{Attr} {s} {act}.",
                      "a {s} {place}.", "There is a {attr} {s2} {act} {place}.", "An image of a {s} {act} {place}.",
                      "Close up of a {attr} {s2}.", "Someone photographed a {s} {place}.",
                      "A {s2} that is {act} {place}.", "A photo of a {attr} {s} {act}.")

_TOPICS = (("aspirin", "blood", "clotting", "dose", "heart", "platelets"),
           ("vaccine", "immune", "antibody", "infection", "trial", "dose"),
           ("climate", "warming", "carbon", "emissions", "temperature", "ocean"),
           ("football", "league", "goal", "season", "coach", "stadium"),
           ("galaxy", "telescope", "star", "orbit", "planet", "light"),
           ("protein", "gene", "cell", "expression", "mutation", "enzyme"),
           ("election", "vote", "party", "senate", "campaign", "policy"),
           ("bank", "interest", "loan", "mortgage", "rate", "credit"),
           ("river", "flood", "rain", "dam", "water", "valley"),
           ("novel", "author", "chapter", "poetry", "prize", "story"),
           ("battery", "lithium", "charge", "electric", "vehicle", "range"),
           ("volcano", "lava", "eruption", "ash", "magma", "island"))
_FILLER = ("the", "a", "of", "and", "in", "is", "for", "with", "that", "this", "study", "report", "new", "about",
           "shows", "between", "its", "many", "some", "recent")
_MOVIE_WORDS = ("plot", "acting", "director", "ending", "cast", "script", "soundtrack", "story", "camera work",
                "dialogue", "characters", "pacing")
_SENTIMENT = {"neg": ("boring", "awful", "terrible", "dull", "a waste of time", "the worst", "predictable", "bad",
                      "painful", "lifeless"),
              "pos": ("wonderful", "brilliant", "moving", "lovely", "superb", "great", "funny", "charming",
                      "gripping", "beautiful")}


def _class_entries(key: str, n: int) -> list[tuple[str, str]]:
    """``n`` (folder, class name) pairs for dataset ``key``, padded with numbered copies past the built-in list."""
    base = [(e.split(":", 1)[0], e.split(":", 1)[-1]) for e in _CLASSNAMES[key]]
    out = []
    for i in range(n):
        folder, name = base[i % len(base)]
        k = i // len(base)
        out.append((folder, name) if k == 0 else (f"{folder}_{k + 1}", f"{name} {k + 1}"))
    return out


# ------------------------------------------------------------------------------------------------ noise images
class _NoiseImages:
    """Noise images with class structure: a per-class low-frequency pattern mixed with a per-image one, plus noise."""

    GRID = 5  # low-frequency patterns are GRID x GRID x 3, upsampled bicubically

    def __init__(self, rng: np.random.Generator, n_classes: int, min_size: int = 40, max_size: int = 64):
        self.rng, self.min_size, self.max_size = rng, min_size, max_size
        self.patterns = rng.normal(size=(n_classes, self.GRID, self.GRID, 3))

    def image(self, label: int) -> Image.Image:
        """One RGB image of class ``label`` (a negative label: a distractor of no class)."""
        rng = self.rng
        own = rng.normal(size=(self.GRID, self.GRID, 3))
        weight = rng.uniform(0.2, 0.5) if label >= 0 else 0.0
        mix = weight * self.patterns[label] + (1 - weight) * own if label >= 0 else own
        low = np.clip(128 + 55 * mix, 0, 255).astype(np.uint8)
        width, height = (int(v) for v in rng.integers(self.min_size, self.max_size + 1, size=2))
        big = np.asarray(Image.fromarray(low).resize((width, height), Image.BICUBIC), dtype=np.float32)
        noisy = np.clip(big + rng.normal(scale=14, size=big.shape), 0, 255).astype(np.uint8)
        return Image.fromarray(noisy)

    def save(self, path: Path, label: int) -> tuple[int, int]:
        """Write an image of class ``label`` as JPEG at ``path``; returns its (width, height)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        image = self.image(label)
        image.save(path, "JPEG", quality=90)
        return image.size


@dataclass
class _Build:
    """What a dataset writer needs: its target folder, sizes and a seeded random generator."""

    folder: Path
    name: str
    n_classes: int
    images_per_class: int
    rng: np.random.Generator

    @property
    def n_eval(self) -> int:
        """Images per class in the val and test splits of the classification sets."""
        return max(1, self.images_per_class // 2)

    def noise(self, n_classes: int | None = None) -> _NoiseImages:
        """A noise image maker for ``n_classes`` (default: this dataset's)."""
        return _NoiseImages(self.rng, n_classes or self.n_classes)

    def write(self, relative: str, text: str, encoding: str = "utf-8") -> Path:
        """Write a text file under the dataset folder."""
        path = self.folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding=encoding)
        return path

    def token(self, length: int, alphabet: str = string.ascii_lowercase) -> str:
        """A random string of ``length`` characters."""
        return "".join(alphabet[i] for i in self.rng.integers(0, len(alphabet), size=length))


def _lines(rows: Sequence[Any]) -> str:
    """One line per row."""
    return "".join(f"{r}\n" for r in rows)


# ------------------------------------------------------------------------------------------------ image writers
def _write_cub(b: _Build) -> None:
    """CUB-200-2011: index files, ``classes.txt`` and ``images/<NNN.Class>/<Species>_<n>_<m>.jpg``."""
    noise = b.noise()
    classes = [folder for folder, _ in _class_entries("cub", b.n_classes)]
    images, labels, split = [], [], []
    image_id = 0
    for c, folder in enumerate(classes):
        species = folder.split(".", 1)[1].title().replace("-", "_")
        for k in range(b.images_per_class):
            image_id += 1
            rel = f"{folder}/{species}_{int(b.rng.integers(1, 9999)):04d}_{int(b.rng.integers(1, 99999))}.jpg"
            noise.save(b.folder / "images" / rel, c)
            images.append(f"{image_id} {rel}")
            labels.append(f"{image_id} {c + 1}")
            split.append(f"{image_id} {int(k % 2 == 0)}")  # every other image is train, as ~half in CUB
    b.write("images.txt", _lines(images))
    b.write("image_class_labels.txt", _lines(labels))
    b.write("train_test_split.txt", _lines(split))
    b.write("classes.txt", _lines(f"{i + 1} {c}" for i, c in enumerate(classes)))


def _write_sop(b: _Build) -> None:
    """Stanford Online Products: ``Ebay_train.txt`` / ``Ebay_test.txt`` and ``<super>_final/<product>_<k>.JPG``."""
    supers = [folder for folder, _ in _class_entries("sop", b.n_classes)]
    noise = b.noise(2 * b.n_classes)
    header = "image_id class_id super_class_id path"
    for part, first_class in (("train", 0), ("test", b.n_classes)):  # test products follow the train products
        rows, image_id = [header], 0
        for c in range(b.n_classes):
            class_id, super_id = first_class + c + 1, c % len(supers) + 1
            product = int(b.rng.integers(10**11, 10**12))
            for k in range(b.images_per_class):
                image_id += 1
                rel = f"{supers[super_id - 1]}_final/{product}_{k}.JPG"
                noise.save(b.folder / rel, first_class + c)
                rows.append(f"{image_id} {class_id} {super_id} {rel}")
        b.write(f"Ebay_{part}.txt", _lines(rows))


def _write_revisited(b: _Build) -> None:
    """Revisited Oxford/Paris: ``gnd_<name>.pkl`` (protocol 2, numpy arrays) and ``jpg/``, distractors included."""
    landmarks = [folder for folder, _ in _class_entries(b.name, b.n_classes)]
    prefix = "paris_" if b.name == "rparis6k" else ""
    noise = b.noise()
    number = iter(b.rng.permutation(10**6)[: 2 * b.n_classes * (b.images_per_class + 2) + b.images_per_class])
    imlist: list[str] = []
    members: list[list[int]] = []
    for c, landmark in enumerate(landmarks):
        members.append([])
        for _ in range(b.images_per_class):
            name = f"{prefix}{landmark}_{next(number):06d}"
            noise.save(b.folder / "jpg" / f"{name}.jpg", c)
            members[c].append(len(imlist))
            imlist.append(name)
    for _ in range(b.images_per_class):  # distractors: relevant to no query
        name = f"{'paris' if prefix else 'oxford'}_{next(number):06d}"
        noise.save(b.folder / "jpg" / f"{name}.jpg", -1)
        imlist.append(name)
    order = b.rng.permutation(len(imlist))  # the real lists are not grouped by landmark
    position = {int(old): new for new, old in enumerate(order)}
    imlist = [imlist[i] for i in order]
    qimlist, gnd = [], []
    k = b.images_per_class
    for c, landmark in enumerate(landmarks):
        positives = [position[i] for i in members[c]]
        easy, hard = positives[: k // 2], positives[k // 2: k - 1] if k >= 3 else positives[k // 2:]
        junk = positives[k - 1:] if k >= 3 else []
        for _ in range(b.n_eval):
            name = f"{prefix}{landmark}_{next(number):06d}"
            width, height = noise.save(b.folder / "jpg" / f"{name}.jpg", c)
            x1, y1 = float(b.rng.integers(0, width // 3)), float(b.rng.integers(0, height // 3))
            x2, y2 = float(b.rng.integers(2 * width // 3, width)), float(b.rng.integers(2 * height // 3, height))
            qimlist.append(name)
            gnd.append({"bbx": [x1, y1, x2, y2], "easy": np.array(sorted(easy), dtype=np.int64),
                        "hard": np.array(sorted(hard), dtype=np.int64), "junk": np.array(sorted(junk), dtype=np.int64)})
    with open(b.folder / f"gnd_{b.name}.pkl", "wb") as f:  # protocol 2, numpy arrays: like the published files
        pickle.dump({"imlist": imlist, "qimlist": qimlist, "gnd": gnd}, f, protocol=2)


def _coop_relative_path(b: _Build, folder: str, split: str, k: int) -> str:
    """A file name in the style of each CoOp dataset (relative to its image folder)."""
    n = int(b.rng.integers(1, 10**6))
    return {
        "caltech101": f"{folder}/image_{n % 10000:04d}.jpg",
        "dtd": f"{folder}/{folder}_{n % 10000:04d}.jpg",
        "eurosat": f"{folder}/{folder}_{n % 3000 + 1}.jpg",
        "food101": f"{folder}/{n + 10**6}.jpg",
        "flowers102": f"image_{n % 100000:05d}.jpg",
        "oxford_pets": f"{folder}_{n % 1000 + 1}.jpg",
        "stanford_cars": f"cars_{'test' if split == 'test' else 'train'}/{n % 100000:05d}.jpg",
        "sun397": f"{folder}/sun_{b.token(16)}.jpg",
        "ucf101": f"{folder}/v_{folder.replace('_', '')}_g{k + 1:02d}_c{n % 7 + 1:02d}.jpg",
    }[b.name]


def _write_split_json(b: _Build) -> None:
    """A CoOp split file ``split_zhou_<Name>.json`` and the images it lists."""
    _, _, _, split_file, image_dir, _ = next(row for row in SPLIT_JSON_SETS if row[0] == b.name)
    noise = b.noise()
    table: dict[str, list[list[Any]]] = {"train": [], "val": [], "test": []}
    used: set[str] = set()
    for label, (folder, classname) in enumerate(_class_entries(b.name, b.n_classes)):
        for split, count in (("train", b.images_per_class), ("val", b.n_eval), ("test", b.n_eval)):
            for k in range(count):
                rel = _coop_relative_path(b, folder, split, k)
                while rel in used:
                    rel = _coop_relative_path(b, folder, split, k)
                used.add(rel)
                noise.save(b.folder / image_dir / rel, label)
                table[split].append([rel, label, classname])
    b.write(split_file, json.dumps(table))


def _write_fgvc(b: _Build) -> None:
    """FGVC-Aircraft ``data/``: ``variants.txt``, ``images_variant_<split>.txt``, ``images/<id>.jpg``."""
    variants = [name for _, name in _class_entries("fgvc_aircraft", b.n_classes)]
    noise = b.noise()
    ids = iter(f"{i:07d}" for i in b.rng.permutation(10**7)[: b.n_classes * (b.images_per_class + 2 * b.n_eval)])
    b.write("variants.txt", _lines(variants))
    for split, count in (("train", b.images_per_class), ("val", b.n_eval), ("test", b.n_eval)):
        rows = []
        for label, variant in enumerate(variants):
            for _ in range(count):
                image_id = next(ids)
                noise.save(b.folder / "images" / f"{image_id}.jpg", label)
                rows.append(f"{image_id} {variant}")
        b.rng.shuffle(rows)
        b.write(f"images_variant_{split}.txt", _lines(rows))


def _spread_wnids(n: int) -> list[str]:
    """``n`` ImageNet wnids spread over the 1000 classes."""
    wnids = ds.imagenet_wnids()
    return [wnids[i] for i in np.linspace(0, len(wnids) - 1, n).round().astype(int)]


def _write_imagenet(b: _Build) -> None:
    """ImageNet in CoOp's layout: ``images/train|val/<wnid>/`` and the 1000-line ``classnames.txt``."""
    wnids, names = ds.imagenet_wnids(), ds.imagenet_classnames()
    b.write("classnames.txt", _lines(f"{w} {n}" for w, n in zip(wnids, names)))  # CoOp's file: all 1000 classes
    noise = b.noise()
    val_number = iter(b.rng.permutation(50000)[: b.n_classes * b.n_eval] + 1)
    for c, wnid in enumerate(_spread_wnids(b.n_classes)):
        for k in range(b.images_per_class):
            noise.save(b.folder / "images" / "train" / wnid / f"{wnid}_{int(b.rng.integers(1, 20000))}{k}.JPEG", c)
        for _ in range(b.n_eval):
            noise.save(b.folder / "images" / "val" / wnid / f"ILSVRC2012_val_{next(val_number):08d}.JPEG", c)


def _imagenet_variant_wnids(b: _Build) -> list[str]:
    """The variant's own classes (ImageNet-A/-R subsets) or wnids spread over the 1000."""
    if b.name not in _CLASSNAMES:
        return _spread_wnids(b.n_classes)
    listed = list(_CLASSNAMES[b.name])
    extra = [w for w in ds.imagenet_wnids() if w not in listed]
    return (listed + extra)[: b.n_classes]


def _write_imagenet_variant(b: _Build) -> None:
    """ImageNetV2 / -Sketch / -A / -R class folders with their file-name styles."""
    spec = ds.DATASETS[b.name]
    image_dir = spec.options["image_dirs"]["test"]
    index = {w: i for i, w in enumerate(ds.imagenet_wnids())}
    names = ds.imagenet_classnames()
    noise = b.noise()
    for c, wnid in enumerate(_imagenet_variant_wnids(b)):
        folder = str(index[wnid]) if spec.options.get("folder_names") == "index" else wnid
        for k in range(b.n_eval + 1):
            name = names[index[wnid]]
            file = {
                "imagenetv2": f"{b.token(40, '0123456789abcdef')}.jpeg",
                "imagenet_sketch": f"sketch_{k}.JPEG",
                "imagenet_a": f"0.{int(b.rng.integers(0, 10**6)):06d}_{name} _ {name}_0.{k}.jpg",
                "imagenet_r": f"{('art', 'cartoon', 'sketch', 'toy')[k % 4]}_{k}.jpg",
            }[b.name]
            noise.save(b.folder / image_dir / folder / file, c)


# ------------------------------------------------------------------------------------------------- text writers
def _captions(b: _Build, subject: int, count: int) -> list[str]:
    """``count`` captions of one image of class ``subject``: they share its attribute, action and place."""
    s, s2 = _CAPTION_SUBJECTS[subject % len(_CAPTION_SUBJECTS)]
    attr = _CAPTION_ATTRIBUTES[int(b.rng.integers(len(_CAPTION_ATTRIBUTES)))]
    act = _CAPTION_ACTIONS[int(b.rng.integers(len(_CAPTION_ACTIONS)))]
    place = _CAPTION_PLACES[int(b.rng.integers(len(_CAPTION_PLACES)))]
    templates = b.rng.permutation(len(_CAPTION_TEMPLATES))
    return [_CAPTION_TEMPLATES[templates[i % len(templates)]].format(s=s, s2=s2, attr=attr, Attr=attr.capitalize(),
                                                                     act=act, place=place) for i in range(count)]


def _caption_images(b: _Build, splits: Sequence[str], per_image: int) -> Iterator[tuple[str, int, list[str]]]:
    """(split, class, captions) for ``n_classes x images_per_class`` images in each split, classes interleaved."""
    for split in splits:
        for _ in range(b.images_per_class):
            for c in range(b.n_classes):
                yield split, c, _captions(b, c, per_image)


def _write_karpathy(b: _Build) -> None:
    """Karpathy ``dataset_coco.json`` / ``dataset_flickr30k.json`` with 5 captions per image; for COCO also the
    images of its ``train`` + ``restval`` split in ``train2014/`` and ``val2014/`` (for crossgap_lib.finetune)."""
    is_coco = b.name == "coco"
    splits = ("train", "restval", "val", "test") if is_coco else ("train", "val", "test")
    images, sentence_id, classes = [], 0, []
    for image_id, (split, subject, captions) in enumerate(_caption_images(b, splits, 5)):
        classes.append(subject)
        sentences = []
        for caption in captions:
            tokens = caption.lower().replace(".", "").split()
            sentences.append({"tokens": tokens, "raw": caption, "imgid": image_id, "sentid": sentence_id})
            sentence_id += 1
        entry: dict[str, Any] = {"sentids": [s["sentid"] for s in sentences], "imgid": image_id,
                                 "sentences": sentences, "split": split}
        if is_coco:
            cocoid = int(b.rng.integers(1, 600000))
            folder = "train2014" if split == "train" else "val2014"
            entry.update(filepath=folder, filename=f"COCO_{folder}_{cocoid:012d}.jpg", cocoid=cocoid)
        else:
            entry["filename"] = f"{int(b.rng.integers(10**6, 10**10))}.jpg"
        images.append(entry)
    b.write(f"dataset_{'coco' if is_coco else 'flickr30k'}.json",
            json.dumps({"images": images, "dataset": "coco" if is_coco else "flickr30k"}))
    if is_coco:  # drawn after the json, so its contents do not depend on the images
        noise = b.noise()
        for entry, subject in zip(images, classes):
            if entry["split"] in ("train", "restval"):
                noise.save(b.folder / entry["filepath"] / entry["filename"], subject)


def _write_nocaps(b: _Build) -> None:
    """NoCaps validation captions in COCO format, 10 per image."""
    images, annotations = [], []
    for image_id, (_, _, captions) in enumerate(_caption_images(b, ("val",), 10)):
        open_images_id = b.token(16, "0123456789abcdef")
        images.append({"id": image_id, "file_name": f"{open_images_id}.jpg", "height": 768, "width": 1024,
                       "open_images_id": open_images_id, "domain": ("in-domain", "near-domain",
                                                                    "out-domain")[image_id % 3]})
        annotations += [{"image_id": image_id, "id": len(annotations) + i, "caption": c}
                        for i, c in enumerate(captions)]
    info = {"description": "nocaps validation (crossgap dry-run miniature)", "version": "0.1"}
    b.write("nocaps_val_4500_captions.json", json.dumps({"info": info, "licenses": [], "images": images,
                                                          "annotations": annotations}))


def _sentence(b: _Build, words: Sequence[str], length: int) -> str:
    """Topic words interleaved with filler words."""
    picks = [words[int(i)] for i in b.rng.integers(0, len(words), size=length)]
    fill = [_FILLER[int(i)] for i in b.rng.integers(0, len(_FILLER), size=length)]
    return " ".join(w for pair in zip(fill, picks) for w in pair)


def _write_newsgroups(b: _Build) -> None:
    """20 Newsgroups bydate: the 20 group folders of both parts, latin-1 messages with headers."""
    table = _class_table("newsgroups_classes.csv")  # the 20 groups are fixed by the format
    numbers = iter(b.rng.permutation(np.arange(10000, 99999))[: 40 * b.images_per_class])
    hosts = ("cs.cmu.edu", "netcom.com", "mit.edu", "uiuc.edu", "sei.cmu.edu", "ohio-state.edu")
    for part in ("train", "test"):
        for row in table:
            words = [w.strip(".,").lower() for w in row["description"].split() if len(w) > 3] + row["group"].split(".")
            for _ in range(b.images_per_class):
                user, host = b.token(6), hosts[int(b.rng.integers(len(hosts)))]
                body = "\n".join(_sentence(b, words, 8) + "." for _ in range(3))
                message = (f"From: {user}@{host} ({user.capitalize()} {b.token(7).capitalize()})\n"
                           f"Subject: Re: {_sentence(b, words, 2)}\nOrganization: {host}\n"
                           f"Lines: {body.count(chr(10)) + 1}\n\n{body}\n")
                b.write(f"20news-bydate-{part}/{row['group']}/{next(numbers)}", message, encoding="latin-1")


def _write_imdb(b: _Build) -> None:
    """aclImdb: ``train|test/neg|pos/<id>_<rating>.txt`` reviews with ``<br />`` breaks."""
    review_id = iter(b.rng.permutation(12500)[: 2 * b.images_per_class * 2])
    for part in ("train", "test"):
        for folder, ratings in (("neg", (1, 2, 3, 4)), ("pos", (7, 8, 9, 10))):
            for _ in range(b.images_per_class):
                sentences = []
                for _ in range(3):
                    noun = _MOVIE_WORDS[int(b.rng.integers(len(_MOVIE_WORDS)))]
                    mood = _SENTIMENT[folder][int(b.rng.integers(len(_SENTIMENT[folder])))]
                    sentences.append(f"The {noun} was {mood}.")
                rating = ratings[int(b.rng.integers(len(ratings)))]
                b.write(f"{part}/{folder}/{next(review_id)}_{rating}.txt", "<br /><br />".join(sentences))


def _write_nanobeir(b: _Build) -> None:
    """NanoBEIR in the Hugging Face layout: ``corpus/``, ``queries/``, ``qrels/`` parquet files."""
    import pandas as pd

    corpus, queries, qrels = [], [], []
    for t in range(b.n_classes):
        words = _TOPICS[(t + zlib.crc32(b.name.encode())) % len(_TOPICS)]
        documents = []
        for _ in range(b.images_per_class):
            doc_id = f"doc{int(b.rng.integers(10**5, 10**6))}"
            documents.append(doc_id)
            corpus.append({"_id": doc_id, "text": _sentence(b, words, 6).capitalize() + "."})
        for _ in range(b.n_eval):
            query_id = str(int(b.rng.integers(10**3, 10**4)))
            queries.append({"_id": query_id, "text": f"what is known about {_sentence(b, words, 2)}?"})
            qrels += [{"query-id": query_id, "corpus-id": d} for d in documents[: max(1, len(documents) - 1)]]
    for part, rows in (("corpus", corpus), ("queries", queries), ("qrels", qrels)):
        (b.folder / part).mkdir(parents=True, exist_ok=True)  # the Hugging Face layout of zeta-alpha-ai/Nano*
        pd.DataFrame(rows).to_parquet(b.folder / part / "train-00000-of-00001.parquet", index=False)


def _writer(name: str) -> Callable[[_Build], None]:
    """The writer for registry entry ``name``, chosen by its loader class."""
    spec = ds.DATASETS[name]
    loader = spec.loader.__name__
    return {
        "CUB": _write_cub, "StanfordOnlineProducts": _write_sop, "Revisited": _write_revisited,
        "SplitJson": _write_split_json, "FGVCAircraft": _write_fgvc,
        "ImageFolders": _write_imagenet if name == "imagenet" else _write_imagenet_variant,
        "KarpathyCaptions": _write_karpathy, "NoCapsCaptions": _write_nocaps, "Newsgroups": _write_newsgroups,
        "IMDB": _write_imdb, "NanoBEIR": _write_nanobeir,
    }[loader]


# ---------------------------------------------------------------------------------------------- public: datasets
def _canonical(name: str) -> str:
    """The registry name of ``name`` (aliases and case accepted)."""
    try:
        return ds._spec(name).name
    except ValueError:
        raise ValueError(f"datasets: {name!r} is not a known dataset; expected names from "
                         f"crossgap_lib.datasets.list_datasets(): {ds.list_datasets()}") from None


def _read_json(path: Path) -> Any:
    """The parsed JSON file, or None when missing or unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _seed_for(seed: int, name: str) -> list[int]:
    """A seed sequence specific to ``seed`` and ``name``."""
    return [int(seed), zlib.crc32(name.encode("utf-8"))]


def _replace_folder(built: Path, target: Path) -> None:
    """Move ``built`` to ``target``, removing a previous miniature there (never anything without the marker)."""
    if target.exists():
        if not (target / MARKER).is_file():
            raise FileExistsError(f"{target} exists and is not a crossgap dry-run miniature (no {MARKER}); "
                                  "refusing to overwrite it: use another root")
        trash = target.with_name(f".{target.name}.old-{os.getpid()}")
        target.rename(trash)
        built.rename(target)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        built.rename(target)


def miniature_settings(name: str, images_per_class: int = 4, n_classes: int = 5, seed: int = 0) -> dict[str, Any]:
    """The marker contents of dataset ``name`` written with these arguments."""
    return {"format": FORMAT_VERSION, "dataset": _canonical(name), "images_per_class": int(images_per_class),
            "n_classes": int(n_classes), "seed": int(seed)}


def write_miniature_datasets(
    root: str | os.PathLike,
    datasets: list[str] | None = None,
    images_per_class: int = 4,
    n_classes: int = 5,
    seed: int = 0,
    progress: bool = True,
) -> Path:
    """Write miniature copies of ``datasets`` (default: all registered) in their real layouts under ``root``."""
    if int(n_classes) < 2 or int(images_per_class) < 2:
        raise ValueError(f"n_classes={n_classes}, images_per_class={images_per_class}: both must be >= 2 (retrieval "
                         "needs other classes and other images of the same class)")
    names = list(dict.fromkeys(_canonical(n) for n in (ds.list_datasets() if datasets is None else datasets)))
    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    for name in tqdm(names, desc="miniature datasets", disable=not progress):
        settings = miniature_settings(name, images_per_class, n_classes, seed)
        target = root / ds.DATASETS[name].folder
        if _read_json(target / MARKER) == settings:
            continue
        built = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=root))
        try:
            rng = np.random.default_rng(_seed_for(seed, name))
            _writer(name)(_Build(built, name, int(n_classes), int(images_per_class), rng))
            (built / MARKER).write_text(json.dumps(settings, indent=1) + "\n", encoding="utf-8")
            built.chmod(0o755)  # mkdtemp makes it private
            _replace_folder(built, target)
        except BaseException:
            shutil.rmtree(built, ignore_errors=True)
            raise
    return root


# ================================================================================================ checkpoints
@dataclass(frozen=True)
class _CheckpointPlan:
    """Which file a paper model's random checkpoint goes to, and in which format."""

    label: str
    arch: str
    tag: str
    kind: str  # "openai" | "open_clip" | "slip"

    @property
    def filename(self) -> str:
        """The file name the loader looks for in ``$CROSSGAP_WEIGHTS``."""
        return f"{self.arch}__{self.tag}{'.safetensors' if self.kind == 'open_clip' else '.pt'}"


def _plans() -> dict[str, _CheckpointPlan]:
    """Label -> checkpoint plan for every row of the paper's settings."""
    from .paper import model_settings, paper_labels

    plans = {}
    for model in map(model_settings, paper_labels()):
        kind = "slip" if model.open_clip_name.startswith("slip-") else "openai" if model.pretrained == "openai" \
            else "open_clip"
        plans[model.label] = _CheckpointPlan(model.label, model.open_clip_name, model.pretrained, kind)
    return plans


def supported_checkpoint_labels() -> list[str]:
    """Paper model labels ``write_random_checkpoints`` can write (every row of the paper's settings)."""
    return list(_plans())


@contextmanager
def _seeded(seed: list[int]) -> Iterator[None]:
    """Seed torch's CPU generator for the block, restoring its state afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(np.random.SeedSequence(seed).generate_state(1)[0]))
        yield


def _random_state_dict(arch: str) -> dict[str, torch.Tensor]:
    """A randomly initialised open_clip ``arch`` state dict, floats as fp16."""
    import open_clip

    from .models import quiet_random_init

    with quiet_random_init():
        model = open_clip.create_model(arch, pretrained=None)
    return {k: v.detach().to(torch.float16) if v.is_floating_point() else v.detach()
            for k, v in model.state_dict().items()}


def _slip_checkpoint(arch: str, state_dict: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The SLIP repository's checkpoint layout for an open_clip ``slip-*`` state dict (plus a random SimCLR head)."""
    import argparse

    slip: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key.startswith("visual.trunk."):
            slip["visual." + key[len("visual.trunk."):]] = value
        elif key == "visual.head.proj.weight":
            slip["image_projection"] = value.t().contiguous()
        else:
            slip[key] = value
    width, hidden, out = slip["image_projection"].shape[0], 4096, 256  # SLIP's ssl_mlp_dim, ssl_emb_dim
    for name, (n_in, n_out) in {"layer1": (width, hidden), "layer2": (hidden, hidden), "layer3": (hidden, out)}.items():
        slip[f"image_mlp.{name}.weight"] = (torch.randn(n_out, n_in) * n_in**-0.5).half()
        slip[f"image_mlp.{name}.bias"] = torch.zeros(n_out, dtype=torch.float16)
    for bn in ("bn1", "bn2"):
        slip[f"image_mlp.{bn}.weight"] = torch.ones(hidden, dtype=torch.float16)
        slip[f"image_mlp.{bn}.bias"] = torch.zeros(hidden, dtype=torch.float16)
        slip[f"image_mlp.{bn}.running_mean"] = torch.zeros(hidden, dtype=torch.float16)
        slip[f"image_mlp.{bn}.running_var"] = torch.ones(hidden, dtype=torch.float16)
        slip[f"image_mlp.{bn}.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
    model = "SLIP_VITL16" if "-l-" in arch else "SLIP_VITB16"
    args = argparse.Namespace(model=model, ssl_mlp_dim=hidden, ssl_emb_dim=out, ssl_scale=1.0, ssl_temp=0.1,
                              epochs=100, batch_size=64, lr=3e-3, wd=0.1, betas=(0.9, 0.98), dataset="yfcc15m")
    return {"epoch": 100, "state_dict": {"module." + k: v for k, v in slip.items()}, "best_acc1": 0.0, "args": args}


def _save_checkpoint(plan: _CheckpointPlan, path: Path) -> None:
    """Write the random checkpoint of ``plan`` to ``path`` in its format."""
    state_dict = _random_state_dict(plan.arch)
    if "text_decoder.text_projection" in state_dict:  # CoCa starts it at zero: equal logits, empty captions
        width = state_dict["text_decoder.text_projection"].shape[0]
        state_dict["text_decoder.text_projection"] = (torch.randn_like(state_dict["text_decoder.text_projection"],
                                                                       dtype=torch.float32) * width**-0.5).half()
    if plan.kind == "open_clip":
        from safetensors.torch import save_file

        save_file(state_dict, str(path), metadata={"crossgap_dryrun": plan.label})
    elif plan.kind == "openai":  # OpenAI's ViT keys are open_clip's; their files are fp16 state dicts
        torch.save(state_dict, path)
    else:
        torch.save(_slip_checkpoint(plan.arch, state_dict), path)


def _is_ours(path: Path) -> bool:
    """Whether ``path`` has a dry-run sidecar (was written by this module)."""
    return Path(str(path) + SIDECAR_SUFFIX).is_file()


def _write_checkpoint(plan: _CheckpointPlan, root: Path, seed: int) -> Path:
    """Write (or keep, when the sidecar matches) the checkpoint of ``plan`` under ``root``."""
    from .models import WEIGHT_SUFFIXES

    path = root / plan.filename
    sidecar = Path(str(path) + SIDECAR_SUFFIX)
    settings = {"format": FORMAT_VERSION, "label": plan.label, "arch": plan.arch, "tag": plan.tag, "kind": plan.kind,
                "seed": int(seed), "dtype": "float16"}
    recorded = _read_json(sidecar)
    if path.is_file() and isinstance(recorded, dict) and recorded.get("settings") == settings \
            and recorded.get("bytes") == path.stat().st_size:
        return path
    stem = root / f"{plan.arch}__{plan.tag}"
    for other in (Path(f"{stem}{s}") for s in WEIGHT_SUFFIXES):  # real weights (no sidecar) are never touched
        if other.exists() and not _is_ours(other):
            raise FileExistsError(f"{other} exists and was not written by crossgap_lib.dryrun (no {other.name}"
                                  f"{SIDECAR_SUFFIX}); refusing to write random weights next to real ones: use "
                                  "another root")
    for other in (Path(f"{stem}{s}") for s in WEIGHT_SUFFIXES):  # a stale dry-run file of another format
        if other != path and other.exists():
            other.unlink()
            Path(str(other) + SIDECAR_SUFFIX).unlink(missing_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=root)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with _seeded(_seed_for(seed, plan.label)):
            _save_checkpoint(plan, tmp)
        tmp.chmod(0o644)  # mkstemp makes it private
        record = {"settings": settings, "bytes": tmp.stat().st_size}
        sidecar.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")  # claims the path first
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _tokenizer_corpus() -> list[str]:
    """Texts the stand-in tokenizer is trained on: every word the dry run feeds the models."""
    texts = [ds.imagenet_classnames(), [n for v in _CLASSNAMES.values() for n in v], _CAPTION_ATTRIBUTES,
             _CAPTION_ACTIONS, _CAPTION_PLACES, _CAPTION_TEMPLATES, [w for pair in _CAPTION_SUBJECTS for w in pair],
             [w for topic in _TOPICS for w in topic], _FILLER, _MOVIE_WORDS, *_SENTIMENT.values(),
             [row["description"] for row in _class_table("newsgroups_classes.csv")],
             ["a photo of a", "what is known about", string.ascii_lowercase, string.digits]]
    return [str(t).lower() for group in texts for t in group]


def write_standin_tokenizer(root: str | os.PathLike, arch: str = "ViT-B-16-SigLIP") -> Path | None:
    """Save a Unigram stand-in for ``arch``'s Hugging Face tokenizer where the loader looks; a real one is kept."""
    import open_clip

    text_cfg = (open_clip.get_model_config(arch) or {}).get("text_cfg", {})
    hf_name = text_cfg.get("hf_tokenizer_name")
    if not hf_name:
        return None
    folder = Path(root).expanduser() / hf_name.replace("/", "__")
    settings = {"format": FORMAT_VERSION, "arch": arch, "vocab_size": int(text_cfg.get("vocab_size", 32000))}
    if folder.is_dir() and (_read_json(folder / TOKENIZER_MARKER) == settings or not (folder / TOKENIZER_MARKER)
                            .is_file()):
        return folder
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors, trainers
    from tokenizers import models as tokenizer_models
    from transformers import PreTrainedTokenizerFast

    special = ["<pad>", "</s>", "<unk>"]
    backend = Tokenizer(tokenizer_models.Unigram())
    backend.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=min(2000, settings["vocab_size"]), special_tokens=special,
                                      unk_token="<unk>", initial_alphabet=list(string.ascii_lowercase + string.digits),
                                      show_progress=False)
    backend.train_from_iterator(_tokenizer_corpus(), trainer=trainer)
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="</s>",
                                        unk_token="<unk>", model_max_length=int(text_cfg.get("context_length", 64)))
    built = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        tokenizer.save_pretrained(str(built))
        (built / TOKENIZER_MARKER).write_text(json.dumps(settings, indent=1) + "\n", encoding="utf-8")
        built.chmod(0o755)
        if folder.exists():
            shutil.rmtree(folder)
        built.rename(folder)
    except BaseException:
        shutil.rmtree(built, ignore_errors=True)
        raise
    return folder


def write_random_checkpoints(
    root: str | os.PathLike,
    models: list[str] | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Path]:
    """Write random-weight checkpoints of paper models (default ``DRYRUN_MODELS``) for ``$CROSSGAP_WEIGHTS=root``."""
    plans = _plans()
    labels = list(dict.fromkeys(DRYRUN_MODELS if models is None else models))
    unknown = [label for label in labels if label not in plans]
    if unknown:
        raise ValueError(f"models: {unknown} cannot be written; supported labels (the paper's settings rows): "
                         f"{list(plans)}")
    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    written = {}
    for label in tqdm(labels, desc="random checkpoints", disable=not progress):
        plan = plans[label]
        written[label] = _write_checkpoint(plan, root, seed)
        write_standin_tokenizer(root, plan.arch)
    return written


def write_captioner_checkpoint(root: str | os.PathLike, arch: str = "coca_ViT-B-32",
                               tag: str = "mscoco_finetuned_laion2b_s13b_b90k", seed: int = 0) -> Path:
    """A random-weight open_clip checkpoint of a captioning model (default: the smallest CoCa) saved as
    ``root/<arch>__<tag>.safetensors``, where :func:`crossgap_lib.models.load_clip` finds tag ``tag`` under
    ``$CROSSGAP_WEIGHTS=root`` (the dry run's stand-in for the paper profile's captioner)."""
    from .models import resolve_model_name

    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    arch = resolve_model_name(arch)
    return _write_checkpoint(_CheckpointPlan(f"captioner {arch}", arch, tag, "open_clip"), root, seed)


def write_checkpoint_file(root: str | os.PathLike, arch: str, file_name: str, seed: int = 0,
                          temperature: float | None = None) -> Path:
    """A random open_clip ``arch`` state dict saved as ``root/file_name`` (e.g. a stand-in for a fine-tuned
    checkpoint the paper profile reads from ``$CROSSGAP_WEIGHTS``), its logit scale fixed at 1/``temperature``."""
    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    path = root / file_name
    sidecar = Path(str(path) + SIDECAR_SUFFIX)
    settings = {"format": FORMAT_VERSION, "arch": arch, "file": file_name, "seed": int(seed),
                "temperature": temperature}
    recorded = _read_json(sidecar)
    if path.is_file() and isinstance(recorded, dict) and recorded.get("settings") == settings:
        return path
    if path.exists() and not _is_ours(path):
        raise FileExistsError(f"{path} exists and was not written by crossgap_lib.dryrun; refusing to overwrite it "
                              "with random weights: use another root")
    with _seeded(_seed_for(seed, file_name)):
        state_dict = _random_state_dict(arch)
    if temperature is not None:
        state_dict["logit_scale"] = torch.tensor(math.log(1.0 / temperature), dtype=state_dict["logit_scale"].dtype)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=root)
    os.close(fd)
    torch.save(state_dict, tmp_name)
    Path(tmp_name).chmod(0o644)
    sidecar.write_text(json.dumps({"settings": settings}, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp_name, path)
    return path


__all__ = [
    "DRYRUN_MODELS",
    "write_captioner_checkpoint",
    "write_checkpoint_file",
    "miniature_settings",
    "supported_checkpoint_labels",
    "write_miniature_datasets",
    "write_random_checkpoints",
    "write_standin_tokenizer",
]
