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

import itertools
import re
import textwrap
from dataclasses import asdict, dataclass, fields, replace
from typing import Callable, Sequence

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


def _check_names(argument: str, given: Sequence[str], known: Sequence[str]) -> None:
    unknown = [g for g in given if g not in known]
    if not given or unknown or len(set(given)) != len(given):
        raise ValueError(f"{argument}: got {list(given)}; expected distinct names from {list(known)}")


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
    colour_jitter: float = 20.0  # uniform per-channel jitter of the object colour (0..255 scale)
    pixel_noise: float = 6.0  # std of Gaussian pixel noise (0..255 scale)
    n_captions: int = 5
    nuisance_caption_rate: float = 0.0  # share of captions that also name one nuisance value

    def __post_init__(self) -> None:
        for name in ("shapes", "colours", "patterns", "backgrounds", "textures", "sizes", "positions"):
            value = getattr(self, name)
            if isinstance(value, str):
                raise ValueError(f"{name}: got the string {value!r}; expected a list of names")
            if value is not None:
                object.__setattr__(self, name, tuple(value))
        if not isinstance(self.image_size, int) or self.image_size < 16:
            raise ValueError(f"image_size: got {self.image_size!r}; expected an int >= 16")
        _check_names("shapes", self.shapes, list(SHAPE_WORDS))
        _check_names("colours", self.colours, list(COLOUR_RGB))
        if self.patterns is not None:
            _check_names("patterns", self.patterns, list(PATTERN_WORDS))
        _check_names("backgrounds", self.backgrounds, list(BACKGROUND_RGB))
        _check_names("textures", self.textures, TEXTURES)
        _check_names("sizes", self.sizes, list(SIZE_RADIUS))
        _check_names("positions", self.positions, POSITIONS)
        for name, low in (("n_rotations", 1), ("max_distractors", 0), ("n_captions", 1)):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < low:
                raise ValueError(f"{name}: got {getattr(self, name)!r}; expected an int >= {low}")
        for name, high in (("texture_strength", 255), ("position_jitter", 0.5), ("colour_jitter", 255),
                           ("pixel_noise", 255), ("nuisance_caption_rate", 1)):
            if not 0 <= getattr(self, name) <= high:
                raise ValueError(f"{name}: got {getattr(self, name)!r}; expected a number in [0, {high}]")

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
                       n_rotations=1, max_distractors=0, position_jitter=0.0, colour_jitter=0.0, pixel_noise=0.0)


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


def _paint(canvas, grid, cx, cy, radius, angle, shapes, shape_idx, rgb, patterns=None, pattern_idx=None) -> None:
    """Paint one shape per image of canvas (B, 3, H, W) float32 in place; per-image arrays are (B,)."""
    dx = grid[1][None] - cx[:, None, None]
    dy = grid[0][None] - cy[:, None, None]
    cos, sin, scale = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None], 1.0 / radius[:, None, None]
    u, v = (dx * cos + dy * sin) * scale, (dy * cos - dx * sin) * scale
    for k, shape in enumerate(shapes):
        sel = np.flatnonzero(shape_idx == k)
        if sel.size == 0:
            continue
        mask = _shape_mask(shape, u[sel], v[sel])
        fill = np.broadcast_to(rgb[sel][:, :, None, None], (sel.size, 3) + mask.shape[1:]).copy()
        if patterns is not None:
            for j, pattern in enumerate(patterns):
                sub = np.flatnonzero(pattern_idx[sel] == j)
                if sub.size and pattern != "solid":
                    dark = _pattern_mask(pattern, u[sel[sub]], v[sel[sub]])[:, None]
                    fill[sub] = np.where(dark, fill[sub] * 0.35, fill[sub])
        canvas[sel] = np.where(mask[:, None], fill, canvas[sel])


def _render_block(config: ShapesConfig, class_idx: dict[str, np.ndarray], rng: np.random.Generator):
    """Draw nuisance values and render b images: uint8 (b, 3, S, S) and nuisance attributes (b,) each."""
    b, size = len(class_idx["shape"]), config.image_size
    r = lambda n: rng.random(BLOCK)[:b] * n  # noqa: E731  (always draw BLOCK values: prefix-stable streams)
    nuisance = {name: r(len(values)).astype(np.int64) for name, values in (
        ("background", config.backgrounds), ("texture", config.textures), ("size", config.sizes),
        ("position", config.positions), ("rotation", range(config.n_rotations)),
        ("clutter", range(config.max_distractors + 1)))}
    texture_angle, texture_freq, texture_phase = r(2 * np.pi), 2 + r(2), r(2 * np.pi)
    jitter = (np.stack([r(2), r(2)]) - 1) * config.position_jitter * size
    radius_scale, colour_noise = 0.9 + r(0.2), (np.stack([r(2) for _ in range(3)], 1) - 1) * config.colour_jitter
    distractors = [(r(size), r(size), size * (0.05 + r(0.03)), r(2 * np.pi), r(len(config.shapes)).astype(int),
                    r(len(config.colours)).astype(int)) for _ in range(config.max_distractors)]
    cells = -(-size // 4)
    speckle = rng.standard_normal((BLOCK, cells, cells), dtype=np.float32)[:b]

    grid = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5  # (2, S, S): y, x
    background_rgb = np.array([BACKGROUND_RGB[n] for n in config.backgrounds], np.float32)
    canvas = np.broadcast_to(background_rgb[nuisance["background"]][:, :, None, None], (b, 3, size, size)).copy()
    strength, texture = config.texture_strength, config.textures
    for k, name in enumerate(texture):
        sel = np.flatnonzero(nuisance["texture"] == k)
        if name == "plain" or sel.size == 0:
            continue
        along = ((grid[1][None] - size / 2) * np.cos(texture_angle[sel])[:, None, None]
                 + (grid[0][None] - size / 2) * np.sin(texture_angle[sel])[:, None, None]) / size
        if name == "gradient":
            delta = 2 * strength * along
        elif name == "wavy":
            delta = strength * np.sin(2 * np.pi * texture_freq[sel, None, None] * along + texture_phase[sel, None, None])
        else:  # noisy: coarse Gaussian blotches, 4x4-pixel cells
            delta = strength * speckle[sel].repeat(4, 1).repeat(4, 2)[:, :size, :size]
        canvas[sel] += delta[:, None]

    colour_rgb = np.array([COLOUR_RGB[c] for c in config.colours], np.float32)
    for k, (x, y, rad, angle, shape_idx, colour_idx) in enumerate(distractors):
        sel = np.flatnonzero(nuisance["clutter"] > k)
        if sel.size:
            sub = canvas[sel]  # fancy indexing copies: paint the copy, then write it back
            _paint(sub, grid, x[sel], y[sel], rad[sel], angle[sel], config.shapes, shape_idx[sel],
                   colour_rgb[colour_idx[sel]])
            canvas[sel] = sub

    radius = np.array([SIZE_RADIUS[s] for s in config.sizes])[nuisance["size"]] * radius_scale * size
    sign = np.array([{"centre": (0, 0), "top left": (-1, -1), "top right": (1, -1), "bottom left": (-1, 1),
                      "bottom right": (1, 1)}[p] for p in config.positions], np.float32)[nuisance["position"]]
    reach = np.minimum(1.1 * radius, size / 2)  # keep the whole object inside the image
    cx, cy = (np.clip(size / 2 + sign[:, k] * (size / 2 - reach) + jitter[k], reach, size - reach) for k in (0, 1))
    angle = nuisance["rotation"] * (2 * np.pi / config.n_rotations)
    rgb = colour_rgb[class_idx["colour"]] + colour_noise
    _paint(canvas, grid, cx, cy, radius, angle, config.shapes, class_idx["shape"], rgb, config.patterns,
           class_idx.get("pattern"))
    if config.pixel_noise > 0:  # drawn last with exactly b rows: still prefix-stable
        canvas += config.pixel_noise * rng.standard_normal(canvas.shape, dtype=np.float32)
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8), nuisance


# ------------------------------------------------------------------------------------------------ captions
def _with_articles(text: str) -> str:
    return re.sub(r"\ba (?=[aeiou])", "an ", text)


def _caption_block(config: ShapesConfig, class_idx: dict[str, np.ndarray], nuisance: dict[str, np.ndarray],
                   rng: np.random.Generator) -> list[list[str]]:
    """n_captions paraphrases per image; a share nuisance_caption_rate also names one nuisance value."""
    b = len(class_idx["shape"])
    draws = rng.random((BLOCK, config.n_captions, 7))[:b]
    pick = lambda options, x: options[int(x * len(options))]  # noqa: E731
    nuisance_values = {"size": config.sizes, "position": config.positions, "background": config.backgrounds,
                       "texture": config.textures}
    captions = []
    for i in range(b):
        shape = config.shapes[class_idx["shape"][i]]
        colour = config.colours[class_idx["colour"][i]]
        pattern = config.patterns[class_idx["pattern"][i]] if config.patterns else None
        image_captions = []
        for t, c, s, a, p, mention, factor in draws[i]:
            descriptor = pick(COLOUR_WORDS[colour], c)
            if pattern:
                descriptor = f"{pick(PATTERN_WORDS[pattern], p)} {descriptor}"
            nouns, adjectives = SHAPE_WORDS[shape]
            text = pick(TEMPLATES, t).format(d=descriptor, s=pick(nouns, s), a=pick(adjectives, a))
            if mention < config.nuisance_caption_rate:
                name = pick(list(NUISANCE_PHRASES), factor)
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
    stream = SPLITS[split]
    factors = config.class_factors
    n_classes = int(np.prod([len(v) for v in factors.values()]))
    groups = -(-n // n_classes)  # every run of n_classes consecutive images holds each class once
    label_rng = np.random.default_rng([seed, stream, 2])
    labels = np.argsort(label_rng.random((groups, n_classes)), axis=1).ravel()[:n]
    class_idx = dict(zip(factors, np.unravel_index(labels, [len(v) for v in factors.values()])))

    images, nuisance, captions = [], [], []
    starts = range(0, n, BLOCK)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=f"shapes {split}", unit="block")
    for start in starts:
        block_idx = {k: v[start:start + BLOCK] for k, v in class_idx.items()}
        block_images, block_nuisance = _render_block(config, block_idx, np.random.default_rng([seed, stream, 0, start]))
        images.append(block_images)
        nuisance.append(block_nuisance)
        captions += _caption_block(config, block_idx, block_nuisance, np.random.default_rng([seed, stream, 1, start]))

    attributes = {**class_idx, **{k: np.concatenate([blk[k] for blk in nuisance]) for k in nuisance[0]}}
    attribute_names = {**{k: list(v) for k, v in factors.items()}, "background": list(config.backgrounds),
                       "texture": list(config.textures), "size": list(config.sizes),
                       "position": list(config.positions),
                       "rotation": [f"{round(360 * k / config.n_rotations)} degrees" for k in range(config.n_rotations)],
                       "clutter": [f"{k} distractors" for k in range(config.max_distractors + 1)]}
    return ShapesDataset(images=torch.from_numpy(np.concatenate(images)), labels=torch.from_numpy(labels).long(),
                         captions=captions, class_names=config.class_names,
                         attributes={k: torch.as_tensor(v, dtype=torch.long) for k, v in attributes.items()},
                         attribute_names=attribute_names, config=config, split=split, seed=seed)


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
        raise ValueError(f"mean/std: got {list(mean_t.tolist())}/{list(std_t.tolist())}; expected 3 values each, std > 0")
    return (x - mean_t.view(1, 3, 1, 1)) / std_t.view(1, 3, 1, 1)


def describe(config: ShapesConfig | None = None) -> str:
    """The design rationale (module docstring) followed by the classes and nuisance factors of config."""
    config = config or ShapesConfig()
    lines = [__doc__.strip(), "", f"{len(config.class_names)} classes = " + " x ".join(
        f"{len(v)} {k}s ({', '.join(v)})" for k, v in config.class_factors.items())]
    for name in ("backgrounds", "textures", "sizes", "positions"):
        lines.append(f"nuisance {name}: {', '.join(getattr(config, name))}")
    lines.append(f"nuisance rotation: {config.n_rotations} steps; clutter: 0..{config.max_distractors} distractors; "
                 f"jitter: position {config.position_jitter}, colour {config.colour_jitter}, noise {config.pixel_noise}")
    lines.append(f"{config.n_captions} captions per image; {config.nuisance_caption_rate:.0%} also name a nuisance value")
    return "\n".join(lines)


def show_grid(dataset: ShapesDataset, n: int = 16, ncols: int = 4, caption: int = 0):
    """A matplotlib Figure of the first n images, each titled with one of its captions."""
    from matplotlib.figure import Figure

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
