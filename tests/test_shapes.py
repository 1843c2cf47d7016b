import re

import numpy as np
import pytest
import torch
from PIL import Image

from crossgap_lib.datasets.shapes import (
    BACKGROUND_RGB,
    COLOUR_RGB,
    COLOUR_WORDS,
    PATTERN_WORDS,
    POSITIONS,
    SHAPE_WORDS,
    SIZE_RADIUS,
    TEXTURES,
    ShapesConfig,
    _generated,
    _shape_mask,
    describe,
    make_shapes,
    show_grid,
    to_model_input,
)

ALL_CLASSES = ShapesConfig(shapes=tuple(SHAPE_WORDS), colours=tuple(COLOUR_RGB), patterns=tuple(PATTERN_WORDS))


def _mentions(text: str, phrases) -> bool:
    return any(re.search(rf"(?<![\w-]){re.escape(p)}(?![\w-])", text) for p in phrases)


def _shape_phrases(shape):
    nouns, adjectives = SHAPE_WORDS[shape]
    return nouns + adjectives


@pytest.fixture(scope="module")
def train64():
    return make_shapes("train", n=160, seed=0)


def test_same_seed_same_bytes_other_seed_or_split_differs(train64):
    _generated.cache_clear()  # generate again rather than read what the process remembers
    again = make_shapes("train", n=160, seed=0)
    assert again.images is not train64.images
    assert torch.equal(train64.images, again.images) and train64.images.dtype == torch.uint8
    assert train64.captions == again.captions and torch.equal(train64.labels, again.labels)
    assert all(torch.equal(train64.attributes[k], again.attributes[k]) for k in train64.attributes)
    assert train64.fingerprint() == again.fingerprint()
    for other in (make_shapes("train", n=160, seed=1), make_shapes("test", n=160, seed=0)):
        assert not torch.equal(train64.images, other.images)
        assert train64.fingerprint() != other.fingerprint()


def test_prefix_stable_and_images_independent_of_caption_settings():
    small, large = make_shapes("test", n=40, seed=3), make_shapes("test", n=300, seed=3)  # 300 spans two blocks
    assert torch.equal(small.images, large.images[:40]) and small.captions == large.captions[:40]
    assert torch.equal(small.labels, large.labels[:40])
    rated = make_shapes("test", n=40, seed=3, config=ShapesConfig(nuisance_caption_rate=0.7, n_captions=2))
    assert torch.equal(small.images, rated.images) and small.captions != rated.captions
    assert small.fingerprint() != rated.fingerprint()


def test_shapes_types_and_attributes(train64):
    n, size = 160, 64
    assert train64.images.shape == (n, 3, size, size) and train64.labels.dtype == torch.long
    assert len(train64) == n and len(train64.captions) == n and all(len(c) == 5 for c in train64.captions)
    assert train64.class_names[:2] == ["red circle", "red square"] and len(train64.class_names) == 16
    for name, values in train64.attributes.items():
        assert values.shape == (n,) and values.dtype == torch.long
        assert 0 <= int(values.min()) and int(values.max()) < len(train64.attribute_names[name])
    for name in ("background", "texture", "size", "position", "rotation", "clutter"):
        assert len(torch.unique(train64.attributes[name])) == len(train64.attribute_names[name]), name
    names = [f"{train64.attribute_names['colour'][c]} {train64.attribute_names['shape'][s]}"
             for c, s in zip(train64.attributes["colour"], train64.attributes["shape"])]
    assert names == [train64.class_names[label] for label in train64.labels]


def test_class_balance():
    exact = make_shapes("train", n=64, seed=5)
    assert torch.bincount(exact.labels, minlength=16).tolist() == [4] * 16
    near = make_shapes("train", n=300, seed=5, config=ShapesConfig(patterns=("solid", "striped")))
    counts = torch.bincount(near.labels, minlength=32)
    assert int(counts.max() - counts.min()) <= 1 and len(near.class_names) == 32
    assert near.labels[:32].sort().values.tolist() == list(range(32))  # shuffled within each run of classes
    assert near.labels[:32].tolist() != list(range(32))


def test_captions_name_own_class_and_no_other():
    data = make_shapes("train", n=200, seed=2, config=ALL_CLASSES)
    factors = {"shape": {k: _shape_phrases(k) for k in SHAPE_WORDS}, "colour": COLOUR_WORDS, "pattern": PATTERN_WORDS}
    for i, captions in enumerate(data.captions):
        for factor, words in factors.items():
            own = data.attribute_names[factor][data.attributes[factor][i]]
            for text in captions:
                assert _mentions(text, words[own]), (text, own)
                others = [k for k in words if k != own]
                assert not any(_mentions(text, words[k]) for k in others), (text, own)


def _nuisance_words(config):
    return list(config.backgrounds) + list(config.textures) + list(config.sizes) + list(config.positions) + [
        "background", "size"]


def test_nuisance_caption_rate_zero_and_one():
    clean = make_shapes("train", n=100, seed=4)
    assert not any(_mentions(t, _nuisance_words(clean.config)) for t in clean.texts()[0])
    full = make_shapes("train", n=100, seed=4, config=ShapesConfig(nuisance_caption_rate=1.0))
    for i, captions in enumerate(full.captions):
        actual = [full.attribute_names[k][full.attributes[k][i]] for k in ("background", "texture", "size", "position")]
        wrong = [w for w in _nuisance_words(full.config)[:-2] if w not in actual]
        for text in captions:  # names a nuisance value, and the true one
            assert _mentions(text, actual) and not _mentions(text, wrong), (text, actual)
    half = make_shapes("train", n=200, seed=4, config=ShapesConfig(nuisance_caption_rate=0.5))
    share = np.mean([_mentions(t, _nuisance_words(half.config)) for t in half.texts()[0]])
    assert 0.4 < share < 0.6


def test_captions_fit_a_16_token_context():
    from open_clip.tokenizer import SimpleTokenizer

    tokenizer = SimpleTokenizer()
    config = ShapesConfig(shapes=ALL_CLASSES.shapes, colours=ALL_CLASSES.colours, patterns=ALL_CLASSES.patterns,
                          nuisance_caption_rate=1.0)
    texts = make_shapes("train", n=300, seed=0, config=config).texts()[0]
    assert max(len(tokenizer.encode(t)) + 2 for t in texts) <= 16  # + start/end tokens


def test_images_vary_by_nuisance_within_a_class(train64):
    border = torch.cat([train64.images[:, :, 0, :], train64.images[:, :, -1, :]], dim=2).float().median(dim=2).values
    plain = train64.attributes["texture"] == train64.attribute_names["texture"].index("plain")
    for k, name in enumerate(train64.attribute_names["background"]):  # border pixels show the named background
        sel = plain & (train64.attributes["background"] == k)
        if sel.any():
            assert (border[sel] - torch.tensor(BACKGROUND_RGB[name])).abs().max() <= 25, name
    per_class_backgrounds = [len(torch.unique(train64.attributes["background"][train64.labels == c]))
                             for c in range(16)]
    assert min(per_class_backgrounds) >= 2
    pixels = torch.nn.functional.normalize(train64.images.flatten(1).float() - 128, dim=1)
    similarity = pixels @ pixels.T
    same_class = train64.labels[:, None] == train64.labels[None]
    same_background = train64.attributes["background"][:, None] == train64.attributes["background"][None]
    off_diagonal = ~torch.eye(len(train64), dtype=torch.bool)
    nuisance_pairs = similarity[same_background & ~same_class & off_diagonal].mean()
    class_pairs = similarity[same_class & ~same_background].mean()
    assert nuisance_pairs > class_pairs + 0.2  # raw pixels group by background, not by class


def test_without_nuisance_images_depend_only_on_class():
    config = ShapesConfig(image_size=32).without_nuisance()
    data = make_shapes("test", n=48, seed=0, config=config)
    for label in range(16):
        images = data.images[data.labels == label]
        assert (images == images[0]).all()
    centre = data.images[:, :, 16, 16].float()
    expected = torch.tensor([COLOUR_RGB[data.class_names[lab].split()[0]] for lab in data.labels]).float()
    assert (centre - expected).abs().max() <= 1  # large object at the centre, painted in its class colour
    assert len({data.images[data.labels == lab][0].numpy().tobytes() for lab in range(16)}) == 16


def test_shape_masks_are_distinct_shapes():
    v, u = np.mgrid[-1.2:1.2:97j, -1.2:1.2:97j]
    masks = {name: _shape_mask(name, u, v) for name in SHAPE_WORDS}
    for name, mask in masks.items():
        assert mask[48, 48] == (name != "ring") and not mask[0, 0], name
        assert 0.1 < mask.mean() < 0.6, name
    names = list(masks)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert (masks[a] != masks[b]).mean() > 0.04, (a, b)


@pytest.mark.parametrize("size", [16, 32, 48])
def test_image_size_parameter(size):
    data = make_shapes("train", n=20, config={"image_size": size, "patterns": ["solid", "dotted"]})
    assert data.images.shape == (20, 3, size, size) and data.config.patterns == ("solid", "dotted")


def test_item_texts_and_prompts(train64):
    image, label = train64[3]
    assert isinstance(image, Image.Image) and image.size == (64, 64) and image.mode == "RGB"
    assert label == int(train64.labels[3]) and np.array_equal(np.asarray(image), train64.images[3].permute(1, 2, 0))
    texts, labels, image_index = train64.texts()
    assert len(texts) == labels.shape[0] == image_index.shape[0] == 5 * len(train64)
    assert texts[7] == train64.captions[1][2] and int(image_index[7]) == 1 and int(labels[7]) == int(train64.labels[1])
    prompts = train64.prompts()
    assert len(prompts) == 16 and prompts[0] == "a photo of a red circle."
    orange = make_shapes("train", n=4, config=ShapesConfig(colours=("orange",), shapes=("star",)))
    assert orange.prompts() == ["a photo of an orange star."] and orange.prompts("{}") == ["orange star"]
    with pytest.raises(ValueError, match="template"):
        train64.prompts("a photo")


def test_to_model_input():
    images = torch.tensor([0, 255], dtype=torch.uint8).repeat_interleave(3 * 8 * 8).view(2, 3, 8, 8)
    out = to_model_input(images, mean=(0.5, 0.5, 0.5), std=[0.5, 0.5, 0.5])
    assert out.dtype == torch.float32 and out.shape == (2, 3, 8, 8)
    assert torch.allclose(out[0], torch.full((3, 8, 8), -1.0)) and torch.allclose(out[1], torch.ones(3, 8, 8))
    assert to_model_input(images, (0.4, 0.5, 0.6), (0.2, 0.3, 0.4), image_size=4).shape == (2, 3, 4, 4)
    with pytest.raises(ValueError, match="images_uint8"):
        to_model_input(images.float(), (0.5,) * 3, (0.5,) * 3)
    with pytest.raises(ValueError, match="mean"):
        to_model_input(images, (0.5, 0.5), (0.5,) * 3)


@pytest.mark.parametrize("overrides, argument", [
    ({"image_size": 8}, "image_size"), ({"image_size": 64.0}, "image_size"), ({"colours": ("red", "mauve")}, "colours"),
    ({"shapes": ()}, "shapes"), ({"shapes": "circle"}, "shapes"), ({"shapes": ("star", "star")}, "shapes"),
    ({"patterns": ("plaid",)}, "patterns"), ({"nuisance_caption_rate": 1.5}, "nuisance_caption_rate"),
    ({"nuisance_caption_rate": -0.1}, "nuisance_caption_rate"), ({"nuisance_caption_rate": "0.5"}, "nuisance_caption"),
    ({"n_captions": 0}, "n_captions"), ({"backgrounds": ("red",)}, "backgrounds"),
    ({"positions": ("left",)}, "positions"),
    ({"pixel_noise": -1.0}, "pixel_noise"), ({"size_jitter": 0.9}, "size_jitter"),
])
def test_bad_config_raises(overrides, argument):
    with pytest.raises(ValueError, match=argument):
        ShapesConfig(**overrides)


@pytest.mark.parametrize("kwargs, argument", [
    ({"split": "validation"}, "split"), ({"n": 0}, "n"), ({"seed": -1}, "seed"), ({"config": 3}, "config"),
])
def test_bad_make_shapes_arguments_raise(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        make_shapes(**{"n": 4, **kwargs})


def test_describe_and_show_grid(train64):
    text = describe(train64.config)
    assert "16 classes" in text and "nuisance backgrounds: " + ", ".join(BACKGROUND_RGB) in text
    assert "0% also name" in text and "seed=0" in train64.describe()
    with pytest.raises(ValueError, match="ncols"):
        show_grid(train64, n=4, ncols=0)
    figure = show_grid(train64, n=6, ncols=4)
    titled = [ax for ax in figure.axes if ax.get_title()]
    assert len(figure.axes) == 8 and len(titled) == 6
    assert titled[2].get_title().replace("\n", " ") == train64.captions[2][0]


def test_module_tables_are_consistent():
    assert set(COLOUR_WORDS) == set(COLOUR_RGB) and set(SIZE_RADIUS) == {"small", "medium", "large"}
    assert len(TEXTURES) == 4 and len(POSITIONS) == 5
    words = [w for k in SHAPE_WORDS for w in _shape_phrases(k)] + [w for v in COLOUR_WORDS.values() for w in v]
    words += [w for v in PATTERN_WORDS.values() for w in v]
    nuisance = _nuisance_words(ShapesConfig())
    assert not any(_mentions(w, nuisance) for w in words)  # class words never name a nuisance value


def test_a_remembered_split_is_a_fresh_dataset_object():
    first = make_shapes("val", n=40, seed=5)
    first.transform = lambda image: "changed"
    first.captions[0].append("an extra caption")
    second = make_shapes("val", n=40, seed=5)
    assert second.images is first.images  # remembered: not generated twice in one process
    assert second.transform is None and second.captions[0] != first.captions[0]  # but its own wrapper and captions
