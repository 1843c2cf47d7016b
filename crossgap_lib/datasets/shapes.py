"""Built-in offline captioned image dataset: coloured shapes on cluttered backgrounds.

Design (why it makes the paper's question meaningful offline):

* **Classes are semantic attributes**: shape x colour (x pattern, optional). Class names ("red circle") work as
  zero-shot prompts, and every caption names the class attributes through varied templates and synonyms
  ("a picture of a crimson round disk", "red, circular"), so captions of one class are paraphrases of each other
  and text-to-text retrieval by class is well posed.
* **Strong nuisance the captions do not mention**: background colour and texture (most of the pixels), object size,
  position and rotation, and clutter of small distractor shapes. Raw image-image similarity is dominated by nuisance,
  while image-text training only rewards what captions carry: the intra-modal misalignment the paper studies.
* **Nuisance is discrete and named** (stored in ``.attributes`` with names in ``.attribute_names``), so a share
  ``nuisance_caption_rate`` of captions can also name one nuisance value (size, position, background colour or
  texture) to test whether a CLIP keeps every attribute that some caption mentions. Images do not depend on the
  caption settings: the same seed gives the same pixels at every rate.
* **Deterministic and fast**: images are drawn in blocks of 256, each from its own numpy stream keyed on
  (seed, split, block), so the same seed/config gives identical bytes, train/val/test never share a stream, and the
  first k images of a larger draw equal a draw of k. Shapes are masks evaluated on coordinate grids for a whole
  batch at once (no per-pixel Python loops). Captions stay short enough for a 16-token text context.
"""

from __future__ import annotations

import copy
import functools
import itertools
import re
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
from PIL import Image

from crossgap_lib.cache import cache_key

GENERATOR_VERSION = 1
BLOCK = 256
SPLITS = {"train": 0, "test": 1, "val": 2}

# name -> (nouns, adjectives); no word of one entry occurs in another
SHAPE_WORDS = {
    "circle": (("circle", "round disk", "disc"), ("circular", "round")),
    "square": (("square", "box", "square block"), ("square", "boxy")),
    "triangle": (("triangle", "wedge", "pyramid"), ("triangular",)),
    "star": (("star", "starburst", "star shape"), ("star-shaped",)),
    "hexagon": (("hexagon", "hex tile"), ("hexagonal",)),
    "cross": (("cross", "plus sign"), ("cross-shaped",)),
    "diamond": (("diamond", "kite"), ("diamond-shaped",)),
    "ring": (("ring", "hoop", "annulus"), ("ring-shaped",)),
}
COLOUR_RGB = {
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (240, 210, 40),
    "orange": (245, 140, 30), "purple": (140, 60, 190), "pink": (245, 130, 190), "cyan": (40, 200, 210),
}
COLOUR_WORDS = {
    "red": ("red", "crimson", "scarlet"), "green": ("green", "emerald", "lime"), "blue": ("blue", "azure", "cobalt"),
    "yellow": ("yellow", "golden", "lemon"), "orange": ("orange", "tangerine", "amber"),
    "purple": ("purple", "violet", "lilac"), "pink": ("pink", "rose", "salmon"), "cyan": ("cyan", "turquoise", "aqua"),
}
PATTERN_WORDS = {
    "solid": ("solid", "filled", "flat"), "striped": ("striped", "banded", "lined"),
    "dotted": ("dotted", "spotted"), "checkered": ("checkered", "chequered", "checked"),
}
BACKGROUND_RGB = {
    "black": (25, 25, 25), "white": (235, 235, 235), "grey": (128, 128, 128), "beige": (215, 200, 165),
    "brown": (105, 70, 45),
}
TEXTURES = ("plain", "gradient", "noisy", "wavy")
SIZE_RADIUS = {"small": 0.16, "medium": 0.24, "large": 0.32}  # circumradius as a fraction of the image side
POSITIONS = ("centre", "top left", "top right", "bottom left", "bottom right")
TEMPLATES = (
    "a {d} {s}", "a picture of a {d} {s}", "a photo of a {d} {s}", "an image showing a {d} {s}",
    "there is a {d} {s}", "{d}, {a}", "a {s} in {d}", "a drawing of a {d} {s}",
)
NUISANCE_PHRASES = {
    "size": "of {} size", "position": "in the {}", "background": "on a {} background", "texture": "on a {} background",
}


@dataclass(frozen=True)
class ShapesConfig:
    """Class factors, nuisance factors and their strength, and caption settings of the shapes dataset."""

    image_size: int = 64
    shapes: tuple[str, ...] = ("circle", "square", "triangle", "star")
    colours: tuple[str, ...] = ("red", "green", "blue", "yellow")
    patterns: tuple[str, ...] | None = None  # optional third class factor, e.g. ("solid", "striped")
    backgrounds: tuple[str, ...] = tuple(BACKGROUND_RGB)  # nuisance: background colour
    textures: tuple[str, ...] = TEXTURES  # nuisance: background texture
    sizes: tuple[str, ...] = tuple(SIZE_RADIUS)  # nuisance: object size
    positions: tuple[str, ...] = POSITIONS  # nuisance: object position
    n_rotations: int = 8  # nuisance: rotation in n equal steps of 360 degrees (1 = upright)
    max_distractors: int = 3  # nuisance: 0..max small distractor shapes
    texture_strength: float = 45.0  # amplitude of background textures (0..255 scale)
    position_jitter: float = 0.06  # uniform jitter of the object centre, fraction of the image side
    size_jitter: float = 0.1  # uniform relative jitter of the object radius
    colour_jitter: float = 20.0  # uniform per-channel jitter of the object colour (0..255 scale)
    pixel_noise: float = 6.0  # std of Gaussian pixel noise (0..255 scale)
    n_captions: int = 5
    nuisance_caption_rate: float = 0.0  # share of captions that also name one nuisance value

    def __post_init__(self) -> None:
        known = {"shapes": SHAPE_WORDS, "colours": COLOUR_RGB, "patterns": PATTERN_WORDS, "backgrounds": BACKGROUND_RGB,
                 "textures": TEXTURES, "sizes": SIZE_RADIUS, "positions": POSITIONS}
        for name, options in known.items():
            given = getattr(self, name)
            if given is None and name == "patterns":
                continue
            if isinstance(given, str) or not given or len(set(given)) != len(given) or not set(given) <= set(options):
                raise ValueError(f"{name}: got {given!r}; expected a list of distinct names from {list(options)}")
            object.__setattr__(self, name, tuple(given))  # lists (from YAML/JSON) become hashable tuples
        for name, low in (("image_size", 16), ("n_rotations", 1), ("max_distractors", 0), ("n_captions", 1)):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < low:
                raise ValueError(f"{name}: got {getattr(self, name)!r}; expected an int >= {low}")
        for name, high in (("texture_strength", 255), ("position_jitter", 0.5), ("size_jitter", 0.5),
                           ("colour_jitter", 255), ("pixel_noise", 255), ("nuisance_caption_rate", 1)):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 <= value <= high:
                raise ValueError(f"{name}: got {value!r}; expected a number in [0, {high}]")

    @property
    def class_factors(self) -> dict[str, tuple[str, ...]]:
        """Class-defining factors in label order (the last factor varies fastest)."""
        factors = {"pattern": self.patterns} if self.patterns else {}
        return {**factors, "colour": self.colours, "shape": self.shapes}

    @property
    def class_names(self) -> list[str]:
        """One name per class, usable in prompts ("red circle", "striped red circle")."""
        return [" ".join(combo) for combo in itertools.product(*self.class_factors.values())]

    def without_nuisance(self) -> ShapesConfig:
        """The same classes with every nuisance factor fixed: a control where pixels carry only the class."""
        return replace(self, backgrounds=("grey",), textures=("plain",), sizes=("large",), positions=("centre",),
                       n_rotations=1, max_distractors=0, position_jitter=0.0, size_jitter=0.0, colour_jitter=0.0,
                       pixel_noise=0.0)


# ------------------------------------------------------------------------------------------------ rendering
def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Boolean mask (..., H, W) of a unit-circumradius shape in object coordinates (u right, v down)."""
    if shape == "circle":
        return u * u + v * v <= 0.85**2
    if shape == "ring":
        rho2 = u * u + v * v
        return (rho2 <= 1.0) & (rho2 >= 0.55**2)
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.75
    if shape == "diamond":
        return np.abs(u) / 0.65 + np.abs(v) <= 1.0
    if shape == "cross":
        au, av = np.abs(u), np.abs(v)
        return ((au <= 0.3) & (av <= 0.95)) | ((av <= 0.3) & (au <= 0.95))
    if shape in ("triangle", "hexagon"):  # regular polygon as an intersection of half-planes
        sides, apothem = (3, 0.55) if shape == "triangle" else (6, 0.87)
        mask = np.ones(u.shape, dtype=bool)
        for k in range(sides):
            angle = np.pi / 2 + 2 * np.pi * k / sides
            mask &= u * np.cos(angle) + v * np.sin(angle) <= apothem
        return mask
    if shape == "star":  # five points, tip up; edge from tip (1, 0) to inner vertex at radius 0.45
        sector = 2 * np.pi / 5
        alpha = np.abs((np.arctan2(u, -v) + sector / 2) % sector - sector / 2)
        inner = 0.45 * np.array([np.cos(sector / 2), np.sin(sector / 2)])
        normal = np.array([inner[1], 1.0 - inner[0]])
        rho = np.sqrt(u * u + v * v)
        return rho * (np.cos(alpha) * normal[0] + np.sin(alpha) * normal[1]) <= normal[0]
    raise ValueError(f"shape: got {shape!r}; expected one of {list(SHAPE_WORDS)}")


def _pattern_mask(pattern: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Boolean mask of the darker half of a fill pattern in object coordinates."""
    if pattern == "striped":
        return np.floor(u * 2.5) % 2 == 0
    if pattern == "dotted":
        return ((u * 2.5) % 1 - 0.5) ** 2 + ((v * 2.5) % 1 - 0.5) ** 2 < 0.09
    if pattern == "checkered":
        return (np.floor(u * 2) + np.floor(v * 2)) % 2 == 0
    return np.zeros(u.shape, dtype=bool)


def _paint(canvas, rows, cx, cy, radius, angle, shapes, shape_idx, rgb, patterns=None, pattern_idx=None) -> None:
    """Paint one shape into each canvas[rows] (canvas (B, S, S, 3)) in place, with masks evaluated in a window."""
    size, rows = canvas.shape[1], rows[:, None, None]
    cx, cy, radius, angle, rgb = (np.asarray(a, np.float32) for a in (cx, cy, radius, angle, rgb))
    w = min(size, int(np.ceil(2.2 * radius.max())) + 2)  # shapes reach at most 1.1 radii from their centre
    xs, ys = (np.clip(np.floor(c - w / 2), 0, size - w).astype(np.int64)[:, None] + np.arange(w) for c in (cx, cy))
    dx, dy = (xs + 0.5 - cx[:, None])[:, None, :], (ys + 0.5 - cy[:, None])[:, :, None]
    cos, sin, scale = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None], 1 / radius[:, None, None]
    u, v = (dx * cos + dy * sin) * scale, (dy * cos - dx * sin) * scale  # (B, w, w) object coordinates
    patch = canvas[rows, ys[:, :, None], xs[:, None, :]]  # (B, w, w, 3) copy
    for k, shape in enumerate(shapes):
        sel = np.flatnonzero(shape_idx == k)
        if sel.size == 0:
            continue
        fill = np.broadcast_to(rgb[sel, None, None, :], (sel.size, w, w, 3))
        if patterns is not None:
            shade = np.ones((sel.size, w, w), np.float32)
            for j, pattern in enumerate(patterns):
                sub = np.flatnonzero(pattern_idx[sel] == j)
                shade[sub] = np.where(_pattern_mask(pattern, u[sel[sub]], v[sel[sub]]), 0.35, 1.0)
            fill = fill * shade[..., None]
        patch[sel] = np.where(_shape_mask(shape, u[sel], v[sel])[..., None], fill, patch[sel])
    canvas[rows, ys[:, :, None], xs[:, None, :]] = patch


def _render_block(config: ShapesConfig, class_idx: dict[str, np.ndarray], rng: np.random.Generator):
    """Draw nuisance values and render b images: uint8 (b, 3, S, S) and nuisance attributes (b,) each."""
    b, size = len(class_idx["shape"]), config.image_size

    def r(high):  # always draw BLOCK values so that streams stay prefix-stable
        return rng.random(BLOCK)[:b] * high

    nuisance = {name: r(len(values)).astype(np.int64) for name, values in (
        ("background", config.backgrounds), ("texture", config.textures), ("size", config.sizes),
        ("position", config.positions), ("rotation", range(config.n_rotations)),
        ("clutter", range(config.max_distractors + 1)))}
    texture_angle, texture_freq, texture_phase = r(2 * np.pi), 2 + r(2), r(2 * np.pi)
    jitter = (np.stack([r(2), r(2)]) - 1) * config.position_jitter * size
    radius_scale = 1 + (r(2) - 1) * config.size_jitter
    colour_noise = (np.stack([r(2) for _ in range(3)], 1) - 1) * config.colour_jitter
    distractors = [(r(size), r(size), size * (0.05 + r(0.03)), r(2 * np.pi), r(len(config.shapes)).astype(int),
                    r(len(config.colours)).astype(int)) for _ in range(config.max_distractors)]
    cells = -(-size // 4)
    blotches = rng.standard_normal((BLOCK, cells, cells), dtype=np.float32)[:b]

    background_rgb = np.array([BACKGROUND_RGB[n] for n in config.backgrounds], np.float32)
    texture = np.zeros((b, size, size), np.float32)
    centred = np.arange(size, dtype=np.float32) + 0.5 - size / 2
    for k, name in enumerate(config.textures):
        sel = np.flatnonzero(nuisance["texture"] == k)
        if name == "plain" or sel.size == 0:
            continue
        cos, sin = (f(texture_angle[sel]).astype(np.float32)[:, None, None] for f in (np.cos, np.sin))
        along = (centred[None, None, :] * cos + centred[None, :, None] * sin) / size  # (b, S, S) in [-0.7, 0.7]
        if name == "gradient":
            delta = 2 * along
        elif name == "wavy":
            delta = np.sin(2 * np.pi * texture_freq[sel, None, None] * along + texture_phase[sel, None, None])
        else:  # noisy: coarse Gaussian blotches, 4x4-pixel cells
            delta = blotches[sel].repeat(4, 1).repeat(4, 2)[:, :size, :size]
        texture[sel] = config.texture_strength * delta
    canvas = texture[..., None] + background_rgb[nuisance["background"]][:, None, None]  # (b, S, S, 3)

    colour_rgb = np.array([COLOUR_RGB[c] for c in config.colours], np.float32)
    for k, (x, y, rad, angle, shape_idx, colour_idx) in enumerate(distractors):
        sel = np.flatnonzero(nuisance["clutter"] > k)
        if sel.size:
            _paint(canvas, sel, x[sel], y[sel], rad[sel], angle[sel], config.shapes, shape_idx[sel],
                   colour_rgb[colour_idx[sel]])

    radius = np.array([SIZE_RADIUS[s] for s in config.sizes])[nuisance["size"]] * radius_scale * size
    sign = np.array([{"centre": (0, 0), "top left": (-1, -1), "top right": (1, -1), "bottom left": (-1, 1),
                      "bottom right": (1, 1)}[p] for p in config.positions], np.float32)[nuisance["position"]]
    reach = np.minimum(1.1 * radius, size / 2)  # keep the whole object inside the image
    cx, cy = (np.clip(size / 2 + sign[:, k] * (size / 2 - reach) + jitter[k], reach, size - reach) for k in (0, 1))
    angle = nuisance["rotation"] * (2 * np.pi / config.n_rotations)
    rgb = colour_rgb[class_idx["colour"]] + colour_noise
    _paint(canvas, np.arange(b), cx, cy, radius, angle, config.shapes, class_idx["shape"], rgb, config.patterns,
           class_idx.get("pattern"))
    if config.pixel_noise > 0:  # drawn last with exactly b rows: still prefix-stable
        canvas += config.pixel_noise * rng.standard_normal(canvas.shape, dtype=np.float32)
    np.clip(canvas + 0.5, 0, 255, out=canvas)  # + 0.5 then truncation: round half up
    return canvas.astype(np.uint8).transpose(0, 3, 1, 2).copy(), nuisance


# ------------------------------------------------------------------------------------------------ captions
def _with_articles(text: str) -> str:
    return re.sub(r"\ba (?=[aeiou])", "an ", text)


def _pick(options: Sequence[str], uniform: float) -> str:
    return options[int(uniform * len(options))]


def _caption_block(config: ShapesConfig, class_idx: dict[str, np.ndarray], nuisance: dict[str, np.ndarray],
                   rng: np.random.Generator) -> list[list[str]]:
    """n_captions paraphrases per image; a share nuisance_caption_rate also names one nuisance value."""
    b = len(class_idx["shape"])
    draws = rng.random((BLOCK, config.n_captions, 7))[:b]
    nuisance_values = {"size": config.sizes, "position": config.positions, "background": config.backgrounds,
                       "texture": config.textures}
    captions = []
    for i in range(b):
        shape = config.shapes[class_idx["shape"][i]]
        colour = config.colours[class_idx["colour"][i]]
        pattern = config.patterns[class_idx["pattern"][i]] if config.patterns else None
        image_captions = []
        for t, c, s, a, p, mention, factor in draws[i]:
            descriptor = _pick(COLOUR_WORDS[colour], c)
            if pattern:
                descriptor = f"{_pick(PATTERN_WORDS[pattern], p)} {descriptor}"
            nouns, adjectives = SHAPE_WORDS[shape]
            text = _pick(TEMPLATES, t).format(d=descriptor, s=_pick(nouns, s), a=_pick(adjectives, a))
            if mention < config.nuisance_caption_rate:
                name = _pick(list(NUISANCE_PHRASES), factor)
                text += " " + NUISANCE_PHRASES[name].format(nuisance_values[name][nuisance[name][i]])
            image_captions.append(_with_articles(text))
        captions.append(image_captions)
    return captions


# ------------------------------------------------------------------------------------------------ dataset
@dataclass(eq=False, repr=False)
class ShapesDataset(torch.utils.data.Dataset):
    """Generated images with labels, captions and attributes; items are ``(PIL.Image, label)``."""

    images: torch.Tensor  # uint8 (N, 3, H, W)
    labels: torch.Tensor  # long (N,)
    captions: list[list[str]]  # n_captions per image
    class_names: list[str]
    attributes: dict[str, torch.Tensor]  # factor -> long (N,) index into attribute_names[factor]
    attribute_names: dict[str, list[str]]
    config: ShapesConfig
    split: str
    seed: int
    transform: Callable | None = None  # applied to the PIL image in __getitem__

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int):
        image = Image.fromarray(self.images[index].permute(1, 2, 0).numpy())
        return (self.transform(image) if self.transform else image), int(self.labels[index])

    def __repr__(self) -> str:
        return (f"ShapesDataset(split={self.split!r}, n={len(self)}, classes={len(self.class_names)}, "
                f"image_size={self.config.image_size}, seed={self.seed})")

    def fingerprint(self) -> str:
        """Hash of generator version, config, split, n and seed (what the bytes depend on)."""
        return cache_key(kind="shapes", version=GENERATOR_VERSION, config=asdict(self.config), split=self.split,
                         n=len(self), seed=self.seed)

    def texts(self) -> tuple[list[str], torch.Tensor, torch.Tensor]:
        """All captions flat, their class labels (M,) and their image indices (M,), for text-to-text retrieval."""
        flat = [text for image_captions in self.captions for text in image_captions]
        image_index = torch.repeat_interleave(torch.arange(len(self)), torch.tensor([len(c) for c in self.captions]))
        return flat, self.labels[image_index], image_index

    def prompts(self, template: str = "a photo of a {}.") -> list[str]:
        """One zero-shot prompt per class, in label order."""
        if "{}" not in template:
            raise ValueError(f"template: got {template!r}; expected a string with one '{{}}' for the class name")
        return [_with_articles(template.format(name)) for name in self.class_names]

    def describe(self) -> str:
        """Human-readable account of this dataset's design and factors."""
        return describe(self.config) + f"\nsplit={self.split}, n={len(self)}, seed={self.seed}"


def make_shapes(split: str = "train", n: int = 1024, config: ShapesConfig | dict | None = None, seed: int = 0,
                progress: bool = False) -> ShapesDataset:
    """Generate n captioned images (uint8 (n, 3, S, S)) of one split, deterministically from seed."""
    if split not in SPLITS:
        raise ValueError(f"split: got {split!r}; expected one of {list(SPLITS)}")
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n: got {n!r}; expected an int >= 1")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed: got {seed!r}; expected an int >= 0")
    config = ShapesConfig(**config) if isinstance(config, dict) else (config or ShapesConfig())
    if not isinstance(config, ShapesConfig):
        raise ValueError(f"config: got {type(config).__name__}; expected ShapesConfig, dict or None")
    parts = _generated(split, n, config, seed, progress)
    return ShapesDataset(images=parts["images"], labels=parts["labels"], captions=[list(c) for c in parts["captions"]],
                         class_names=config.class_names, attributes=dict(parts["attributes"]),
                         attribute_names=copy.deepcopy(parts["attribute_names"]), config=config, split=split,
                         seed=seed)


@functools.lru_cache(maxsize=6)
def _generated(split: str, n: int, config: ShapesConfig, seed: int, progress: bool) -> dict:
    """The generated split (images, labels, captions, attributes), remembered for the process: the laboratory asks
    for the same training split once per model it trains or fine-tunes (8192 images: about 5 s each time)."""
    stream = SPLITS[split]
    factors = config.class_factors
    n_classes = int(np.prod([len(v) for v in factors.values()]))
    groups = -(-n // n_classes)  # every run of n_classes consecutive images holds each class once
    label_rng = np.random.default_rng([seed, stream, 2])
    labels = np.argsort(label_rng.random((groups, n_classes)), axis=1).ravel()[:n]
    class_idx = dict(zip(factors, np.unravel_index(labels, [len(v) for v in factors.values()])))

    images, nuisance, captions = np.empty((n, 3, config.image_size, config.image_size), np.uint8), [], []
    starts = range(0, n, BLOCK)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=f"shapes {split}", unit="block")
    for start in starts:
        block_idx = {k: v[start:start + BLOCK] for k, v in class_idx.items()}
        block_images, block_nuisance = _render_block(config, block_idx, np.random.default_rng([seed, stream, 0, start]))
        images[start:start + BLOCK] = block_images
        nuisance.append(block_nuisance)
        captions += _caption_block(config, block_idx, block_nuisance, np.random.default_rng([seed, stream, 1, start]))

    attributes = {**class_idx, **{k: np.concatenate([blk[k] for blk in nuisance]) for k in nuisance[0]}}
    attribute_names = {**{k: list(v) for k, v in factors.items()}, "background": list(config.backgrounds),
                       "texture": list(config.textures), "size": list(config.sizes),
                       "position": list(config.positions),
                       "rotation": [f"{360 * k // config.n_rotations} degrees" for k in range(config.n_rotations)],
                       "clutter": [f"{k} distractors" for k in range(config.max_distractors + 1)]}
    return {"images": torch.from_numpy(images), "labels": torch.from_numpy(labels).long(), "captions": captions,
            "attributes": {k: torch.as_tensor(v, dtype=torch.long) for k, v in attributes.items()},
            "attribute_names": attribute_names}


GENERIC_PHRASES = ("a shape", "an object", "a picture", "a photo", "an image", "a drawing", "a background")


def lab_vocabulary(config: ShapesConfig | dict | None = None) -> list[str]:
    """Short phrases, one attribute each, for every word the generator knows: the lab's generic span vocabulary.

    The lab's analogue of the 1000 ImageNet class names on which Herzog & Wang (arXiv 2603.16100) fit their text
    span: a vocabulary of single concepts the text encoder can name, not the target label set. A lab text encoder
    learns language only from this generator's captions, so its "world" is the generator's words: every colour
    synonym, shape noun and adjective, pattern word, and every background, texture, size and position in the phrase
    a caption would use ("on a black background", "in the top left"), plus generic words ("a picture", "a shape").
    Class names ("red circle") never appear: each phrase names one attribute. With ``config``, only the factor values
    that config draws (nuisance values included whatever its ``nuisance_caption_rate``); default: all of them.
    """
    if config is None:
        values = {"shapes": list(SHAPE_WORDS), "colours": list(COLOUR_WORDS), "patterns": list(PATTERN_WORDS),
                  "backgrounds": list(BACKGROUND_RGB), "textures": list(TEXTURES), "sizes": list(SIZE_RADIUS),
                  "positions": list(POSITIONS)}
    else:
        config = ShapesConfig(**config) if isinstance(config, dict) else config
        if not isinstance(config, ShapesConfig):
            raise ValueError(f"config: got {type(config).__name__}; expected ShapesConfig, dict or None")
        values = {name: list(getattr(config, name) or ()) for name in
                  ("shapes", "colours", "patterns", "backgrounds", "textures", "sizes", "positions")}
    phrases = [word for colour in values["colours"] for word in COLOUR_WORDS[colour]]
    phrases += [word for shape in values["shapes"] for words in SHAPE_WORDS[shape] for word in words]
    phrases += [word for pattern in values["patterns"] for word in PATTERN_WORDS[pattern]]
    for factor, key in (("background", "backgrounds"), ("texture", "textures"), ("size", "sizes"),
                        ("position", "positions")):
        phrases += [NUISANCE_PHRASES[factor].format(value) for value in values[key]]
    phrases += GENERIC_PHRASES
    return list(dict.fromkeys(_with_articles(p) for p in phrases))


def to_model_input(images_uint8: torch.Tensor, mean: Sequence[float], std: Sequence[float],
                   image_size: int | None = None) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> float (N, 3, S, S): scale to [0, 1], resize if image_size is given, normalise."""
    if not isinstance(images_uint8, torch.Tensor) or images_uint8.dtype != torch.uint8 or images_uint8.ndim != 4 \
            or images_uint8.shape[1] != 3:
        got = f"{images_uint8.dtype} {tuple(images_uint8.shape)}" if isinstance(images_uint8, torch.Tensor) \
            else type(images_uint8).__name__
        raise ValueError(f"images_uint8: got {got}; expected a uint8 tensor (N, 3, H, W)")
    x = images_uint8.float().div_(255)
    if image_size is not None and tuple(x.shape[-2:]) != (image_size, image_size):
        x = torch.nn.functional.interpolate(x, size=(image_size, image_size), mode="bilinear", antialias=True)
    mean_t = torch.as_tensor(mean, dtype=x.dtype, device=x.device).flatten()
    std_t = torch.as_tensor(std, dtype=x.dtype, device=x.device).flatten()
    if mean_t.numel() != 3 or std_t.numel() != 3 or bool((std_t <= 0).any()):
        raise ValueError(f"mean/std: got {mean_t.tolist()}/{std_t.tolist()}; expected 3 values each, std > 0")
    return (x - mean_t.view(1, 3, 1, 1)) / std_t.view(1, 3, 1, 1)


def describe(config: ShapesConfig | None = None) -> str:
    """The design rationale (module docstring) followed by the classes and nuisance factors of config."""
    config = config or ShapesConfig()
    lines = [__doc__.strip(), "", f"{len(config.class_names)} classes = " + " x ".join(
        f"{len(v)} {k}s ({', '.join(v)})" for k, v in config.class_factors.items())]
    for name in ("backgrounds", "textures", "sizes", "positions"):
        lines.append(f"nuisance {name}: {', '.join(getattr(config, name))}")
    lines.append(f"nuisance rotation: {config.n_rotations} steps; clutter: 0..{config.max_distractors} distractors; "
                 f"jitter: position {config.position_jitter}, size {config.size_jitter}, colour "
                 f"{config.colour_jitter}, noise {config.pixel_noise}")
    lines.append(f"{config.n_captions} captions per image; "
                 f"{config.nuisance_caption_rate:.0%} also name a nuisance value")
    return "\n".join(lines)


def show_grid(dataset: ShapesDataset, n: int = 16, ncols: int = 4, caption: int = 0):
    """A matplotlib Figure of the first n images, each titled with one of its captions."""
    from matplotlib.figure import Figure

    if n < 1 or ncols < 1:
        raise ValueError(f"n, ncols: got {n}, {ncols}; expected ints >= 1")
    n = min(n, len(dataset))
    nrows = -(-n // ncols)
    fig = Figure(figsize=(2.2 * ncols, 2.5 * nrows), layout="constrained")
    for i, ax in enumerate(fig.subplots(nrows, ncols, squeeze=False).ravel()):
        ax.axis("off")
        if i < n:
            ax.imshow(dataset.images[i].permute(1, 2, 0).numpy(), interpolation="nearest")
            text = dataset.captions[i][caption % len(dataset.captions[i])]
            ax.set_title("\n".join(textwrap.wrap(text, 24)), fontsize=8)
    return fig
