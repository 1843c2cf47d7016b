"""Image datasets of the paper in their published on-disk formats.

One class per format family: CUB-200-2011 index files, Stanford Online Products ``Ebay_*.txt``, revisited
Oxford/Paris (``gnd_*.pkl`` + ``jpg/``), CoOp split files (``split_zhou_<Name>.json`` with ``[relative_path, label,
classname]`` rows; the table ``SPLIT_JSON_SETS``), FGVC-Aircraft variant lists, ImageNet class folders and its variants.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

from PIL import Image

from .base import DatasetSpec, ImageDataset, PathLike, bad_format, not_found, read_json
from .safe_pickle import UnsafePickleError, load_pickle_safely

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
COOP_DATASETS_MD = "https://github.com/KaiyangZhou/CoOp/blob/main/DATASETS.md"


def _read_rows(
    spec: DatasetSpec, path: Path, n_fields: int, ints: tuple[int, ...] = (), header: str | None = None
) -> list[list]:
    """Whitespace-separated rows of ``n_fields`` (the last keeps its inner spaces); fields at ``ints`` become int.

    A first line starting with ``header`` is skipped. A line with too few fields or a non-integer where an int is
    expected is a :class:`DatasetFormatError` naming the file and the line.
    """
    rows = []
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                text = line.strip()
                if not text or (number == 1 and header is not None and text.startswith(header)):
                    continue
                fields: list = text.split(maxsplit=n_fields - 1)
                if len(fields) != n_fields:
                    raise bad_format(spec, path, f"expected {n_fields} whitespace-separated fields, got "
                                                 f"{len(fields)} in {text[:80]!r}", number)
                for k in ints:
                    try:
                        fields[k] = int(fields[k])
                    except ValueError:
                        raise bad_format(spec, path, f"field {k + 1} should be an integer, got {fields[k]!r}",
                                         number) from None
                rows.append(fields)
    except UnicodeDecodeError as err:
        raise bad_format(spec, path, f"not UTF-8 text ({err.reason} at byte {err.start})") from err
    return rows


def _readable(name: str) -> str:
    """Class name as used in prompts: underscores become spaces."""
    return name.replace("_", " ").strip()


# --------------------------------------------------------------------------------------------- CUB, SOP, revisited
class CUB(ImageDataset):
    """CUB-200-2011: ``images.txt``, ``image_class_labels.txt``, ``train_test_split.txt``, ``classes.txt``,
    ``images/``."""

    def _read_index(self) -> tuple[list[str], list[int], list[str]]:
        spec, root = self.spec, self.root
        paths = {str(i): path for i, path in _read_rows(spec, root / "images.txt", 2, ints=(0,))}
        labels = {str(i): y - 1 for i, y in _read_rows(spec, root / "image_class_labels.txt", 2, ints=(0, 1))}
        is_train = {str(i): flag == 1 for i, flag in _read_rows(spec, root / "train_test_split.txt", 2, ints=(0, 1))}
        classes = sorted((i, name) for i, name in _read_rows(spec, root / "classes.txt", 2, ints=(0,)))
        classnames = [_readable(name.split(".", 1)[-1]) for _, name in classes]  # "001.Black_footed_Albatross"
        keep = {"all": lambda i: True, "train": lambda i: is_train[i], "test": lambda i: not is_train[i]}[self.split]
        missing = [i for i in paths if i not in is_train] if self.split != "all" else []
        if missing:
            raise not_found(self.spec, self.root, f"train_test_split.txt lacks image ids {missing[:3]}")
        ids = sorted((i for i in paths if keep(i)), key=int)
        missing = [i for i in ids if i not in labels]
        if missing:
            raise not_found(self.spec, self.root, f"image_class_labels.txt lacks image ids {missing[:3]}")
        return [f"images/{paths[i].strip()}" for i in ids], [labels[i] for i in ids], classnames


class StanfordOnlineProducts(ImageDataset):
    """Stanford Online Products: ``Ebay_train.txt`` / ``Ebay_test.txt`` (image_id class_id super_class_id path)."""

    def _read_index(self) -> tuple[list[str], list[int], None]:
        files = {"train": ["Ebay_train.txt"], "test": ["Ebay_test.txt"], "all": ["Ebay_train.txt", "Ebay_test.txt"]}
        paths, labels = [], []
        for file in self._require(*files[self.split]):
            for _, class_id, _, path in _read_rows(self.spec, file, 4, ints=(1,), header="image_id"):
                paths.append(path.strip())
                labels.append(class_id - 1)
        return paths, labels, None  # 22,634 products: no prompt-usable class names


class Revisited(ImageDataset):
    """Revisited Oxford/Paris: ``gnd_<name>.pkl`` (``imlist``, ``qimlist``, ``gnd``) and ``jpg/<name>.jpg``.

    There are no class labels (``labels`` is all -1); relevance is in ``.gnd``: one dict per query with gallery
    indices ``easy``, ``hard``, ``junk`` (lists of int) and the query box ``bbx``. ``crop_queries=True`` crops
    query images to ``bbx`` as the revisited protocol does (the paper's code uses full query images).
    """

    def __init__(self, spec: DatasetSpec, root: PathLike | None, split: str, crop_queries: bool = False, **kwargs):
        if kwargs.get("on_corrupt", "raise") == "skip":
            raise ValueError(
                f"on_corrupt='skip' is not supported for {spec.name!r}: dropping images would shift the gallery "
                "indices in the ground truth; repair the file instead"
            )
        self.crop_queries = crop_queries
        super().__init__(spec, root, split, **kwargs)

    def _read_index(self) -> tuple[list[str], list[int], None]:
        gnd_path = self.root / self.spec.options["file"]
        try:
            raw = load_pickle_safely(gnd_path)
        except UnsafePickleError:
            raise  # a refused global: the message already names the file and the object
        except (pickle.UnpicklingError, EOFError) as err:
            raise bad_format(self.spec, gnd_path, f"not a readable pickle ({err})") from err
        if not isinstance(raw, dict) or not {"imlist", "qimlist", "gnd"} <= set(raw):
            found = f"a dict with keys {sorted(map(str, raw))[:5]}" if isinstance(raw, dict) else type(raw).__name__
            raise bad_format(self.spec, gnd_path, f"expected a dict with keys 'imlist', 'qimlist', 'gnd', got {found}")
        try:
            imlist, qimlist, entries = [str(x) for x in raw["imlist"]], [str(x) for x in raw["qimlist"]], raw["gnd"]
            n_entries = len(entries)
        except TypeError as err:
            raise bad_format(self.spec, gnd_path, f"'imlist', 'qimlist' and 'gnd' must be lists ({err})") from err
        if n_entries != len(qimlist):
            raise bad_format(self.spec, gnd_path, f"{n_entries} ground-truth entries for {len(qimlist)} queries")
        self.gnd = [self._clean_entry(self.spec, q, g, len(imlist), gnd_path) for q, g in enumerate(entries)]
        names = qimlist if self.split == "query" else imlist
        return [f"jpg/{n}.jpg" for n in names], [-1] * len(names), None

    @staticmethod
    def _clean_entry(spec: DatasetSpec, query: int, entry: dict, n_gallery: int, source: Path) -> dict:
        if not isinstance(entry, dict):
            raise bad_format(spec, source, f"gnd[{query}] should be a dict with 'easy', 'hard', 'junk', got "
                                           f"{type(entry).__name__}")
        try:
            clean = {k: sorted(int(i) for i in entry.get(k, [])) for k in ("easy", "hard", "junk")}
            bbx = entry.get("bbx")
            box = None if bbx is None or len(bbx) != 4 else tuple(float(v) for v in bbx)
        except (TypeError, ValueError) as err:
            raise bad_format(spec, source, f"gnd[{query}] holds a non-numeric index list or box ({err})") from err
        bad = [i for k in clean for i in clean[k] if not 0 <= i < n_gallery]
        if bad:
            raise bad_format(spec, source, f"gnd[{query}]: gallery index {bad[0]} out of range [0, {n_gallery})")
        clean["bbx"] = box
        return clean

    def _open(self, index: int) -> Image.Image:
        image = super()._open(index)
        box = self.gnd[index]["bbx"] if self.split == "query" and self.crop_queries else None
        return image.crop(tuple(round(v) for v in box)) if box is not None else image


# ---------------------------------------------------------------------------------------- CoOp-style split files
class SplitJson(ImageDataset):
    """CoOp split file ``split_zhou_<Name>.json``:
    ``{"train"|"val"|"test": [[relative_path, label, classname], ...]}``."""

    def _read_index(self) -> tuple[list[str], list[int], list[str]]:
        split_file, image_dir = self.spec.options["file"], self.spec.options["image_dir"]
        path = self.root / split_file
        table = read_json(self.spec, path)
        if not isinstance(table, dict) or self.split not in table:
            raise not_found(self.spec, self.root, f"{split_file} has no {self.split!r} list")
        names: dict[int, str] = {}
        for part, rows in table.items():
            for k, row in enumerate(rows if isinstance(rows, list) else [rows]):
                if not (isinstance(row, (list, tuple)) and len(row) == 3 and isinstance(row[0], str)):
                    raise bad_format(self.spec, path, f"{part!r}[{k}] should be [relative_path, label, classname], "
                                                      f"got {str(row)[:80]}")
                try:
                    names.setdefault(int(row[1]), _readable(str(row[2])))
                except (TypeError, ValueError):
                    raise bad_format(self.spec, path, f"{part!r}[{k}] has a non-integer label {row[1]!r}") from None
        if sorted(names) != list(range(len(names))):
            raise bad_format(self.spec, path, f"labels are not 0..{len(names) - 1}")
        rows = table[self.split]
        prefix = f"{image_dir}/" if image_dir else ""
        return [prefix + p for p, _, _ in rows], [int(y) for _, y, _ in rows], [names[i] for i in range(len(names))]


class FGVCAircraft(ImageDataset):
    """FGVC-Aircraft 2013b ``data/``: ``variants.txt``, ``images_variant_<split>.txt`` (``<id> <variant>``),
    ``images/``."""

    def _read_index(self) -> tuple[list[str], list[int], list[str]]:
        with open(self.root / "variants.txt", encoding="utf-8") as f:
            variants = [line.strip() for line in f if line.strip()]
        index = {v: i for i, v in enumerate(variants)}
        (split_file,) = self._require(f"images_variant_{self.split}.txt")
        rows = _read_rows(self.spec, split_file, 2)
        unknown = sorted({v.strip() for _, v in rows} - set(index))
        if unknown:
            raise ValueError(f"{split_file}: variants not in variants.txt: {unknown[:3]}")
        return [f"images/{i}.jpg" for i, _ in rows], [index[v.strip()] for _, v in rows], variants


# ------------------------------------------------------------------------------------------------ ImageNet family
def imagenet_classnames() -> list[str]:
    """The 1000 ImageNet class names in label order (open_clip's CLIP-style names)."""
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    return list(IMAGENET_CLASSNAMES)


def imagenet_wnids() -> list[str]:
    """The 1000 ImageNet-1k WordNet ids in label order (sorted), from timm's bundled metadata."""
    from timm.data import ImageNetInfo

    return list(ImageNetInfo("imagenet-1k").label_names())


def _wnids_and_names(spec: DatasetSpec, folder: Path) -> tuple[list[str], list[str]]:
    """``classnames.txt`` (``<wnid> <name>`` per line, CoOp) when present, else the built-in wnids and names."""
    file = folder / "classnames.txt"
    if file.is_file():
        rows = _read_rows(spec, file, 2)
        return [w for w, _ in rows], [n.strip() for _, n in rows]
    return imagenet_wnids(), imagenet_classnames()


def _list_class_folders(spec: DatasetSpec, folder: Path) -> list[tuple[str, list[str]]]:
    """``[(class folder, sorted image file names)]`` for every sub-folder of ``folder``."""
    if not folder.is_dir():
        raise not_found(spec, folder.parent, f"missing {folder.name}/")
    classes = sorted(e.name for e in os.scandir(folder) if e.is_dir())
    if not classes:
        raise not_found(spec, folder, "no class sub-folders (images must be sorted into one folder per class)")
    listing = []
    for name in classes:
        files = sorted(e.name for e in os.scandir(folder / name) if e.name.lower().endswith(IMAGE_EXTENSIONS))
        listing.append((name, files))
    return listing


class ImageFolders(ImageDataset):
    """ImageNet and variants: ``<image_dir>/<class>/<image>``, class = wnid or (ImageNetV2) label index.

    Options: ``image_dirs`` maps split -> folder; ``folder_names`` is ``"wnid"`` or ``"index"``; ``subset`` relabels
    to the classes present (ImageNet-A/-R: 200 classes, labels 0..199 in wnid order, as CoOp does).
    """

    def __init__(self, spec: DatasetSpec, root: PathLike | None, split: str, check_files: bool = False, **kwargs):
        super().__init__(spec, root, split, check_files=check_files, **kwargs)  # files come from listing the disk

    def _read_index(self) -> tuple[list[str], list[int], list[str]]:
        image_dir = self.spec.options["image_dirs"][self.split]
        wnids, names = _wnids_and_names(self.spec, self.root)
        listing = _list_class_folders(self.spec, self.root / image_dir)
        if self.spec.options.get("folder_names", "wnid") == "index":
            to_label = {str(i): i for i in range(len(wnids))}
        else:
            to_label = {w: i for i, w in enumerate(wnids)}
        unknown = [c for c, _ in listing if c not in to_label]
        if unknown:
            raise not_found(self.spec, self.root / image_dir, f"unknown class folders {unknown[:3]}")
        classnames = names
        if self.spec.options.get("subset", False):
            present = sorted(to_label[c] for c, _ in listing)
            to_label = {c: present.index(to_label[c]) for c, _ in listing}
            classnames = [names[i] for i in present]
        paths, labels = [], []
        for c, files in listing:
            paths += [f"{image_dir}/{c}/{f}" for f in files]
            labels += [to_label[c]] * len(files)
        return paths, labels, classnames


# ------------------------------------------------------------------------------------------------------ the specs
_CLASSIFICATION = {"splits": ("test", "train", "val"), "protocol": ("test", "train", False), "zero_shot_split": "test"}

# name, title, folder, split file, image folder (paths in the split file are relative to it), original source
SPLIT_JSON_SETS: tuple[tuple[str, str, str, str, str, str], ...] = (
    ("caltech101", "Caltech101", "caltech-101", "split_zhou_Caltech101.json", "101_ObjectCategories",
     "https://data.caltech.edu/records/mzrjq-6wc02"),
    ("dtd", "DTD", "dtd", "split_zhou_DescribableTextures.json", "images",
     "https://www.robots.ox.ac.uk/~vgg/data/dtd/"),
    ("eurosat", "EuroSAT", "eurosat", "split_zhou_EuroSAT.json", "2750", "https://github.com/phelber/EuroSAT"),
    ("food101", "Food101", "food-101", "split_zhou_Food101.json", "images",
     "https://data.vision.ee.ethz.ch/cvl/datasets_extra/food-101/"),
    ("flowers102", "Flowers102", "oxford_flowers", "split_zhou_OxfordFlowers.json", "jpg",
     "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/"),
    ("oxford_pets", "Oxford-IIIT Pets", "oxford_pets", "split_zhou_OxfordPets.json", "images",
     "https://www.robots.ox.ac.uk/~vgg/data/pets/"),
    ("stanford_cars", "Stanford Cars", "stanford_cars", "split_zhou_StanfordCars.json", "",
     "https://ai.stanford.edu/~jkrause/cars/car_dataset.html"),
    ("sun397", "SUN397", "sun397", "split_zhou_SUN397.json", "SUN397", "https://vision.princeton.edu/projects/2010/SUN/"),
    ("ucf101", "UCF101 (middle frames)", "ucf101", "split_zhou_UCF101.json", "UCF-101-midframes",
     "https://www.crcv.ucf.edu/data/UCF101.php"),
)

_IMAGENET_NAMES = (
    "classnames.txt               # optional: '<wnid> <class name>' per line (CoOp); built-in names otherwise\n"
)


def _split_json_spec(name: str, title: str, folder: str, split_file: str, image_dir: str, source: str) -> DatasetSpec:
    layout = (f"{split_file}   # {{'train'|'val'|'test': [[relative_path, label, classname], ...]}}\n"
              f"{image_dir + '/' if image_dir else ''}<relative_path>   # every image listed in the split file\n")
    return DatasetSpec(
        name, title, "image", folder, layout, f"{source} ; split file and layout: {COOP_DATASETS_MD}", loader=SplitJson,
        required=(split_file,) + ((image_dir,) if image_dir else ()),
        options={"file": split_file, "image_dir": image_dir},
        **_CLASSIFICATION,
    )


def _imagenet_variant(name: str, title: str, folder: str, image_dir: str, source: str, **options) -> DatasetSpec:
    kind = "0..999 (label index)" if options.get("folder_names") == "index" else "<wnid>"
    return DatasetSpec(
        name, title, "image", folder, f"{image_dir}/{kind}/<image>\n{_IMAGENET_NAMES}",
        f"{source} ; layout: {COOP_DATASETS_MD}", loader=ImageFolders, splits=("test",), required=(image_dir,),
        zero_shot_split="test", options={"image_dirs": {"test": image_dir}, **options},
    )


IMAGE_SPECS: tuple[DatasetSpec, ...] = (
    DatasetSpec(
        "cub", "CUB-200-2011", "image", "CUB_200_2011",
        "images.txt                  # <image_id> <relative path under images/>\n"
        "image_class_labels.txt      # <image_id> <class_id, 1-based>\n"
        "train_test_split.txt        # <image_id> <1 = train, 0 = test>\n"
        "classes.txt                 # <class_id> <NNN.Class_name>\n"
        "images/<NNN.Class_name>/<image>.jpg\n",
        "https://www.vision.caltech.edu/datasets/cub_200_2011/", loader=CUB, splits=("all", "train", "test"),
        required=("images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt", "images"),
        protocol=("all", "all", True),
    ),
    DatasetSpec(
        "sop", "Stanford Online Products", "image", "Stanford_Online_Products",
        "Ebay_train.txt              # header 'image_id class_id super_class_id path', then one row per image\n"
        "Ebay_test.txt\n"
        "<super_class>_final/<image>.JPG   # the paths listed in the two files\n",
        "https://cvgl.stanford.edu/projects/lifted_struct/", loader=StanfordOnlineProducts,
        splits=("test", "train", "all"), required=("Ebay_train.txt", "Ebay_test.txt"), protocol=("test", "test", True),
    ),
    *(
        DatasetSpec(
            name, title, "image", name,
            f"gnd_{name}.pkl            # revisited ground truth: dict with 'imlist', 'qimlist', 'gnd'\n"
            "jpg/<image name>.jpg        # every name in imlist and qimlist\n",
            f"http://cmp.felk.cvut.cz/revisitop/ (gnd_{name}.pkl) ; images: {images}", loader=Revisited,
            splits=("query", "gallery"), required=(f"gnd_{name}.pkl", "jpg"), protocol=("query", "gallery", False),
            options={"file": f"gnd_{name}.pkl"},
        )
        for name, title, images in (
            ("roxford5k", "Revisited Oxford5k", "https://www.robots.ox.ac.uk/~vgg/data/oxbuildings/"),
            ("rparis6k", "Revisited Paris6k", "https://www.robots.ox.ac.uk/~vgg/data/parisbuildings/"),
        )
    ),
    *(_split_json_spec(*row) for row in SPLIT_JSON_SETS),
    DatasetSpec(
        "fgvc_aircraft", "FGVC-Aircraft", "image", "fgvc_aircraft",
        "variants.txt                # one variant (class) name per line: label order\n"
        "images_variant_train.txt    # '<image_id> <variant>' per line; also _val.txt and _test.txt\n"
        "images/<image_id>.jpg       # the data/ folder of fgvc-aircraft-2013b, renamed\n",
        f"https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/ ; layout: {COOP_DATASETS_MD}", loader=FGVCAircraft,
        required=("variants.txt", "images"), **_CLASSIFICATION,
    ),
    DatasetSpec(
        "imagenet", "ImageNet-1k", "image", "imagenet",
        f"images/train/<wnid>/<image>.JPEG\nimages/val/<wnid>/<image>.JPEG   # val sorted into class folders; "
        f"split 'test' is val\n{_IMAGENET_NAMES}",
        f"https://image-net.org/download.php ; layout: {COOP_DATASETS_MD}", loader=ImageFolders,
        required=("images",),
        options={"image_dirs": {"train": "images/train", "val": "images/val", "test": "images/val"}},
        **_CLASSIFICATION,
    ),
    _imagenet_variant("imagenetv2", "ImageNetV2 (matched frequency)", "imagenetv2",
                      "imagenetv2-matched-frequency-format-val", "https://github.com/modestyachts/ImageNetV2",
                      folder_names="index"),
    _imagenet_variant("imagenet_sketch", "ImageNet-Sketch", "imagenet-sketch", "images",
                      "https://github.com/HaohanWang/ImageNet-Sketch"),
    _imagenet_variant("imagenet_a", "ImageNet-A", "imagenet-adversarial", "imagenet-a",
                      "https://github.com/hendrycks/natural-adv-examples", subset=True),
    _imagenet_variant("imagenet_r", "ImageNet-R", "imagenet-rendition", "imagenet-r",
                      "https://github.com/hendrycks/imagenet-r", subset=True),
)
