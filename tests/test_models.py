"""Tests for crossgap_lib.models: names, tiny configs, weights lookup and its errors, checkpoints, SLIP mapping."""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections import OrderedDict

import numpy as np
import open_clip
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file
from timm.models import register_model
from torch import nn

from crossgap_lib import models
from crossgap_lib.models import (
    MODEL_ALIASES,
    AssetNotFoundError,
    LoadedClip,
    convert_slip_state_dict,
    list_models,
    load_clip,
    resolve_model_name,
)

torch.set_num_threads(1)

CONTRACT = {  # sizes agreed in the project's cross-module contracts
    "crossgap-tiny": {"embed": 64, "image": 64, "patch": 16, "vwidth": 128, "vlayers": 4, "vheads": 2,
                      "ctx": 16, "twidth": 128, "theads": 2, "tlayers": 4},
    "crossgap-micro": {"embed": 32, "image": 32, "patch": 8, "vwidth": 32, "vlayers": 1, "vheads": 2,
                       "ctx": 16, "twidth": 32, "theads": 2, "tlayers": 1},
    "crossgap-small": {"embed": 64, "image": 64, "patch": 16, "vwidth": 64, "vlayers": 2, "vheads": 1,
                       "ctx": 16, "twidth": 64, "theads": 2, "tlayers": 1},
}


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """No network, empty weight folders and caches; returns the list of hosts a download would have tried."""
    tried: list[str] = []

    def no_network(host, port=443, timeout=3.0):
        tried.append(host)
        return False

    monkeypatch.setattr(models, "_network_available", no_network)
    monkeypatch.setattr(models, "_hf_offline", lambda: False)
    monkeypatch.setattr(models, "_hf_hub_cache", lambda: str(tmp_path / "hf_hub"))
    monkeypatch.setattr(models, "_url_cache", lambda: tmp_path / "clip_cache")
    monkeypatch.setenv("CROSSGAP_WEIGHTS", str(tmp_path / "weights"))
    (tmp_path / "weights").mkdir()
    return tried


def _micro_state_dict(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return open_clip.create_model("crossgap-micro").state_dict()


def _features(clip: LoadedClip) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        return clip.model.encode_image(images), clip.model.encode_text(clip.tokenizer(["a photo of a cat", "a dog"]))


# ----------------------------------------------------------------------------------------------------------- names


def test_alias_map_resolves_to_open_clip_names():
    assert resolve_model_name("ViT-B/32") == "ViT-B-32"
    assert resolve_model_name("ViT-L/14") == "ViT-L-14"
    assert resolve_model_name("ViT-B/16") == "ViT-B-16"
    assert resolve_model_name("ViT-L/14@336px") == "ViT-L-14-336"
    assert resolve_model_name("RN50") == "RN50"
    assert resolve_model_name("SLIP_VITB16") == "slip-vit-b-16"
    assert resolve_model_name("vit-b-32") == "ViT-B-32"  # case-insensitive fallback
    known = open_clip.list_models()
    assert all(target in known for target in MODEL_ALIASES.values())
    names = list_models()
    for name in ("ViT-B/32", "ViT-B-32", "ViT-B-16-SigLIP", "crossgap-tiny", "crossgap-micro", "slip-vit-b-16",
                 "slip-vit-l-16"):
        assert name in names


def test_unknown_name_suggests_close_matches():
    with pytest.raises(ValueError, match=r"name: unknown model 'ViT-B-33'.*Did you mean.*'ViT-B-32'.*list_models\(\)"):
        load_clip("ViT-B-33")
    with pytest.raises(ValueError, match="name"):
        load_clip("")


# -------------------------------------------------------------------------------------------------- tiny configs


@pytest.mark.parametrize("name", sorted(CONTRACT))
def test_project_config_sizes_and_forward_shapes(name):
    c = CONTRACT[name]
    clip = load_clip(name)
    model = clip.model
    assert isinstance(model, open_clip.CLIP) and not model.training
    assert clip.name == name and clip.pretrained is None and clip.weights_path is None and clip.device == "cpu"
    assert model.visual.image_size == (c["image"], c["image"]) and model.visual.patch_size == (c["patch"],) * 2
    assert model.visual.conv1.out_channels == c["vwidth"] and len(model.visual.transformer.resblocks) == c["vlayers"]
    assert model.visual.transformer.resblocks[0].attn.num_heads == c["vheads"]
    assert model.context_length == c["ctx"] and model.vocab_size == 49408
    assert model.token_embedding.embedding_dim == c["twidth"] and len(model.transformer.resblocks) == c["tlayers"]
    assert model.transformer.resblocks[0].attn.num_heads == c["theads"]

    tokens = clip.tokenizer(["a photo of a cat", "a photo of a dog"])
    assert tokens.shape == (2, c["ctx"]) and tokens.dtype == torch.long
    pixels = clip.preprocess(Image.fromarray(np.zeros((50, 70, 3), dtype=np.uint8)))
    assert pixels.shape == (3, c["image"], c["image"])
    with torch.no_grad():
        assert model.encode_image(pixels[None].repeat(3, 1, 1, 1)).shape == (3, c["embed"])
        assert model.encode_text(tokens).shape == (2, c["embed"])


def test_random_init_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="crossgap_lib.models"):
        load_clip("crossgap-micro")
    assert any("meaningless for science" in r.getMessage() for r in caplog.records)


def test_openai_alias_random_init_builds_vit_b_32():
    clip = load_clip("ViT-B/32")
    assert clip.name == "ViT-B-32"
    with torch.no_grad():
        assert clip.model.encode_image(torch.zeros(1, 3, 224, 224)).shape == (1, 512)
        assert clip.model.encode_text(clip.tokenizer(["a cat"])).shape == (1, 512)


# ------------------------------------------------------------------------------------------ precision and device


def test_precision_and_device_arguments():
    bf16 = load_clip("crossgap-micro", precision="bf16")
    assert bf16.precision == "bf16" and bf16.model.visual.conv1.weight.dtype == torch.bfloat16
    fp16 = load_clip("crossgap-micro", precision="fp16")
    assert fp16.model.token_embedding.weight.dtype == torch.float32  # open_clip keeps embeddings, casts matmuls
    assert fp16.model.visual.conv1.weight.dtype == torch.float16
    with pytest.raises(ValueError, match=r"precision: 'fp64'.*fp32"):
        load_clip("crossgap-micro", precision="fp64")
    with pytest.raises(ValueError, match=r"device: 'gpu0'"):
        load_clip("crossgap-micro", device="gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"device: 'cuda'.*cuda.is_available"):
            load_clip("crossgap-micro", device="cuda")


@pytest.mark.parametrize(
    "device, match",
    [
        ("mps", r"device: 'mps' requested but torch.backends.mps.is_available\(\) is False; use device='cpu'"),
        ("xpu:0", r"device: 'xpu:0' requested but torch.xpu.is_available\(\) is False; use device='cpu'"),
        ("meta", r"device: 'meta' has type 'meta'; expected 'cpu' or one of"),
    ],
)
def test_unavailable_accelerators_get_the_same_clear_error_as_cuda(device, match, monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    if hasattr(torch, "xpu"):
        monkeypatch.setattr(torch.xpu, "is_available", lambda: False)
    with pytest.raises(ValueError, match=match):
        load_clip("crossgap-micro", device=device)


def test_device_index_past_the_visible_devices(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match=r"device: 'cuda:3' requested but only 1 cuda device\(s\) are visible"):
        load_clip("crossgap-micro", device="cuda:3")


# ------------------------------------------------------------------------------------------------ weight lookup


def test_unknown_tag_lists_known_tags(offline):
    with pytest.raises(ValueError, match=r"'laion9b'.*laion2b_s34b_b79k.*list_pretrained_tags_by_model"):
        load_clip("ViT-B-32", pretrained="laion9b")
    with pytest.raises(ValueError, match=r"no published weights"):
        load_clip("crossgap-micro", pretrained="some_tag")
    assert offline == []  # rejected before any download attempt


def test_missing_checkpoint_path_is_named():
    with pytest.raises(FileNotFoundError, match=r"/nowhere/model\.pt.*does not exist"):
        load_clip("crossgap-micro", pretrained="/nowhere/model.pt")


def test_offline_open_clip_tag_error_says_where_and_how(offline, tmp_path):
    with pytest.raises(AssetNotFoundError) as info:
        load_clip("ViT-B/32", pretrained="openai")
    message = str(info.value)
    assert offline == ["huggingface.co"]
    for part in ("'ViT-B-32'", "'openai'", "no network", str(tmp_path / "weights" / "ViT-B-32__openai"),
                 str(tmp_path / "hf_hub"), "timm/vit_base_patch32_clip_224.openai", "CROSSGAP_WEIGHTS",
                 "pretrained='/path/to/checkpoint'", "HF_HOME"):
        assert part in message, part
    assert "Traceback" not in message and "socket" not in message


def test_offline_url_and_slip_tags_and_hf_offline_flag(offline, monkeypatch, tmp_path):
    with pytest.raises(AssetNotFoundError, match=r"'slip-vit-b-16', tag 'slip_base_100ep'.*dl\.fbaipublicfiles"):
        load_clip("slip-vit-b-16", pretrained="slip_base_100ep")
    monkeypatch.setattr(models, "get_pretrained_cfg", lambda arch, tag: {"url": "https://example.org/w/micro.pt"})
    with pytest.raises(AssetNotFoundError, match=str(tmp_path / "clip_cache" / "micro.pt")):
        load_clip("crossgap-micro", pretrained="url_tag")
    monkeypatch.setattr(models, "get_pretrained_cfg", lambda arch, tag: {"hf_hub": "org/repo/"})
    monkeypatch.setattr(models, "_hf_offline", lambda: True)
    tried_before = list(offline)
    with pytest.raises(AssetNotFoundError, match="HF_HUB_OFFLINE is set"):
        load_clip("crossgap-micro", pretrained="hub_tag")
    assert offline == tried_before  # offline flag: no connection attempted


def test_crossgap_weights_folder_and_tag_config(offline, monkeypatch, tmp_path):
    state_dict = _micro_state_dict(seed=3)
    save_file(state_dict, str(tmp_path / "weights" / "crossgap-micro__fake_tag.safetensors"))
    tag_cfg = {"hf_hub": "org/repo/", "quick_gelu": True, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
    monkeypatch.setattr(models, "get_pretrained_cfg", lambda arch, tag: tag_cfg if tag == "fake_tag" else {})
    clip = load_clip("crossgap-micro", pretrained="fake-tag")  # open_clip-style tag cleaning: '-' -> '_'
    assert clip.weights_path.endswith("crossgap-micro__fake_tag.safetensors") and offline == []
    for key, value in state_dict.items():
        assert torch.equal(clip.model.state_dict()[key], value), key
    assert isinstance(clip.model.transformer.resblocks[0].mlp.gelu, open_clip.model.QuickGELU)
    assert clip.model.visual.preprocess_cfg["mean"] == (0.5, 0.5, 0.5)


def test_hugging_face_cache_hit(offline, monkeypatch, tmp_path):
    snapshot = tmp_path / "hf_hub" / "models--org--repo" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (tmp_path / "hf_hub" / "models--org--repo" / "refs").mkdir()
    (tmp_path / "hf_hub" / "models--org--repo" / "refs" / "main").write_text("abc123")
    state_dict = _micro_state_dict(seed=4)
    torch.save(state_dict, snapshot / "open_clip_pytorch_model.bin")
    monkeypatch.setattr(models, "get_pretrained_cfg", lambda arch, tag: {"hf_hub": "org/repo/"})
    clip = load_clip("crossgap-micro", pretrained="hub_tag")
    assert clip.weights_path == str(snapshot / "open_clip_pytorch_model.bin") and offline == []
    assert torch.equal(clip.model.text_projection, state_dict["text_projection"])


# ------------------------------------------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip_formats(tmp_path):
    reference = load_clip("crossgap-micro")
    state_dict = {k: v.clone() for k, v in reference.model.state_dict().items()}
    train_ckpt = {"state_dict": state_dict, "model_name": "crossgap-micro", "step": 7, "config": {"lr": 1e-3}}
    paths = {
        "train.pt": train_ckpt,
        "plain.pt": state_dict,
        "ddp.pt": {"state_dict": {"module." + k: v for k, v in state_dict.items()}},
    }
    for filename, obj in paths.items():
        torch.save(obj, tmp_path / filename)
    save_file(state_dict, str(tmp_path / "plain.safetensors"))
    expected = _features(reference)
    for filename in [*paths, "plain.safetensors"]:
        loaded = load_clip("crossgap-micro", pretrained=tmp_path / filename)
        assert loaded.pretrained == str(tmp_path / filename) and loaded.weights_path == str(tmp_path / filename)
        for got, want in zip(_features(loaded), expected):
            torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


def test_checkpoint_for_other_model_is_refused(tmp_path):
    torch.save({"state_dict": _micro_state_dict(0), "model_name": "crossgap-micro"}, tmp_path / "micro.pt")
    with pytest.raises(ValueError, match=r"saved for model 'crossgap-micro'.*'crossgap-tiny'"):
        load_clip("crossgap-tiny", pretrained=tmp_path / "micro.pt")
    torch.save(_micro_state_dict(0), tmp_path / "micro_plain.pt")
    with pytest.raises(ValueError, match=r"micro_plain\.pt.*does not fit model 'crossgap-tiny'"):
        load_clip("crossgap-tiny", pretrained=tmp_path / "micro_plain.pt")


_EXECUTED: list[str] = []


def _record_execution(marker: str) -> str:
    _EXECUTED.append(marker)
    return marker


class _Payload:
    def __reduce__(self):
        return (_record_execution, ("unpickled",))


class _RunsShell:
    def __reduce__(self):
        return (os.system, ("echo unpickled",))


def test_weights_only_refuses_arbitrary_objects(tmp_path):
    torch.save({"state_dict": _micro_state_dict(0), "hook": _Payload()}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match=r"evil\.pt' refused: it holds \S*_record_execution, .*re-save its state"):
        load_clip("crossgap-micro", pretrained=tmp_path / "evil.pt")
    assert _EXECUTED == []
    # torch >= 2.6 words a blocked module differently ("unsupported GLOBAL posix.system whose module ... is blocked")
    torch.save({"state_dict": _micro_state_dict(0), "hook": _RunsShell()}, tmp_path / "shell.pt")
    with pytest.raises(ValueError, match=r"shell\.pt' refused: it holds (posix|nt|os)\.system, .*re-save its state"):
        load_clip("crossgap-micro", pretrained=tmp_path / "shell.pt")


def test_non_checkpoint_files_are_named(tmp_path):
    (tmp_path / "notes.pt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match=r"notes\.pt.*not a PyTorch checkpoint.*expected"):
        load_clip("crossgap-micro", pretrained=tmp_path / "notes.pt")
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "meta.pt")
    with pytest.raises(ValueError, match=r"meta\.pt.*dict with keys \['epoch', 'lr'\].*expected"):
        load_clip("crossgap-micro", pretrained=tmp_path / "meta.pt")
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(ValueError, match=r"bad\.safetensors.*safetensors"):
        load_clip("crossgap-micro", pretrained=tmp_path / "bad.safetensors")


# ------------------------------------------------------------------------------------------------------- SigLIP


def test_siglip_random_init_with_tokenizer_override():
    vocab = 32000

    def toy_tokenizer(texts: list[str]) -> torch.Tensor:
        return (open_clip.SimpleTokenizer(context_length=64)(texts) % vocab).long()

    clip = load_clip("ViT-B-16-SigLIP", tokenizer=toy_tokenizer)
    assert isinstance(clip.model, open_clip.CustomTextCLIP) and clip.tokenizer is toy_tokenizer
    with torch.no_grad():
        assert clip.model.encode_text(clip.tokenizer(["a cat"])).shape == (1, 768)


def test_siglip_tokenizer_offline_error(offline):
    with pytest.raises(AssetNotFoundError) as info:
        load_clip("ViT-B-16-SigLIP")
    message = str(info.value)
    for part in ("'ViT-B-16-SigLIP'", "timm/ViT-B-16-SigLIP", "HF_HOME", "timm__ViT-B-16-SigLIP", "tokenizer="):
        assert part in message, part


def test_siglip_tokenizer_from_crossgap_weights_folder(offline, tmp_path):
    from tokenizers import Tokenizer, pre_tokenizers
    from tokenizers import models as tok_models
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", "</s>", "<unk>", "a", "photo", "of", "cat"]
    backend = Tokenizer(tok_models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    hf_tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="</s>",
                                           unk_token="<unk>")
    hf_tokenizer.save_pretrained(str(tmp_path / "weights" / "timm__ViT-B-16-SigLIP"))
    tokenizer = models._tokenizer_for("ViT-B-16-SigLIP")
    tokens = tokenizer(["a photo of a dog"])
    assert tokens.shape == (1, 64) and offline == []
    assert tokens[0, :5].tolist() == [3, 4, 5, 3, 2] and tokens[0, 5:].eq(0).all()


# --------------------------------------------------------------------------------------------------------- SLIP


@register_model
def crossgap_test_vit_micro_patch8_32(pretrained: bool = False, **kwargs) -> nn.Module:
    """A 2-block ViT on 32 px images, standing in for SLIP's timm ViT-B/16 in tests."""
    for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
        kwargs.pop(key, None)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, embed_dim=32,
                             depth=2, num_heads=2, **kwargs)


class _QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class _RefBlock(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict(
            c_fc=nn.Linear(width, 4 * width), gelu=_QuickGELU(), c_proj=nn.Linear(4 * width, width)))
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # x: (L, N, width)
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=mask)[0]
        return x + self.mlp(self.ln_2(x))


class _RefResblocks(nn.Module):
    def __init__(self, width: int, heads: int, layers: int):
        super().__init__()
        self.resblocks = nn.ModuleList(_RefBlock(width, heads) for _ in range(layers))


class RefSlip(nn.Module):
    """Reference forward in the SLIP checkpoint layout: timm ViT (num_classes=0) + OpenAI-style text transformer."""

    def __init__(self, timm_name: str, vision_width: int, embed_dim: int, context: int, width: int, heads: int,
                 layers: int, vocab: int = 49408):
        super().__init__()
        self.visual = timm.create_model(timm_name, num_classes=0)
        self.transformer = _RefResblocks(width, heads, layers)
        self.token_embedding = nn.Embedding(vocab, width)
        self.positional_embedding = nn.Parameter(torch.randn(context, width) * 0.01)
        self.ln_final = nn.LayerNorm(width)
        self.image_projection = nn.Parameter(torch.randn(vision_width, embed_dim) * vision_width ** -0.5)
        self.text_projection = nn.Parameter(torch.randn(width, embed_dim) * width ** -0.5)
        self.logit_scale = nn.Parameter(torch.tensor(2.0))
        self.image_mlp = nn.Sequential(OrderedDict(
            layer1=nn.Linear(vision_width, 8), bn1=nn.BatchNorm1d(8), relu1=nn.ReLU(), layer3=nn.Linear(8, 4)))
        self.register_buffer("mask", torch.full((context, context), float("-inf")).triu(1), persistent=False)
        with torch.no_grad():  # move every weight off its default so a wrong mapping cannot pass unnoticed
            for p in self.parameters():
                p.add_(torch.randn_like(p) * 0.02)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.visual(images) @ self.image_projection

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        x = (self.token_embedding(tokens) + self.positional_embedding).permute(1, 0, 2)
        for block in self.transformer.resblocks:
            x = block(x, self.mask)
        x = self.ln_final(x.permute(1, 0, 2))
        return x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)] @ self.text_projection


@pytest.fixture(scope="module")
def slip_micro_config(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("slip_config")
    config = {
        "embed_dim": 16,
        "quick_gelu": True,
        "vision_cfg": {"image_size": 32, "timm_model_name": "crossgap_test_vit_micro_patch8_32",
                       "timm_model_pretrained": False, "timm_pool": "", "timm_proj": "linear", "timm_proj_bias": False},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
    }
    (folder / "slip-test-micro.json").write_text(json.dumps(config))
    open_clip.add_model_config(folder)
    return "slip-test-micro"


def test_slip_checkpoint_matches_reference_forward(slip_micro_config, tmp_path):
    torch.manual_seed(0)
    reference = RefSlip("crossgap_test_vit_micro_patch8_32", vision_width=32, embed_dim=16, context=16, width=32,
                        heads=2, layers=2).eval()
    checkpoint = {
        "epoch": 100,
        "state_dict": {"module." + k: v for k, v in reference.state_dict().items()},
        "best_acc1": 12.5,
        "args": argparse.Namespace(model="SLIP_VITB16", ssl_mlp_dim=8, ssl_emb_dim=4, lr=3e-3, betas=(0.9, 0.98)),
    }
    assert any(k.startswith("module.image_mlp.") for k in checkpoint["state_dict"])
    torch.save(checkpoint, tmp_path / "slip_micro.pt")

    clip = load_clip(slip_micro_config, pretrained=tmp_path / "slip_micro.pt")
    assert clip.model.visual.preprocess_cfg["mean"] == models.SLIP_PREPROCESS["mean"]
    assert clip.model.visual.preprocess_cfg["interpolation"] == "bilinear"
    images = torch.randn(3, 3, 32, 32)
    tokens = clip.tokenizer(["a photo of a cat", "a dog on grass", "x"])
    with torch.no_grad():
        torch.testing.assert_close(clip.model.encode_image(images), reference.encode_image(images), atol=1e-5, rtol=0)
        torch.testing.assert_close(clip.model.encode_text(tokens), reference.encode_text(tokens), atol=1e-5, rtol=0)
    torch.testing.assert_close(clip.model.logit_scale.detach(), reference.logit_scale.detach())


def test_convert_slip_state_dict_rejects_other_layouts():
    with pytest.raises(ValueError, match="state_dict: not a SLIP layout"):
        convert_slip_state_dict({"visual.conv1.weight": torch.zeros(1), "text_projection": torch.zeros(1)})


def test_slip_vit_b_16_real_shapes_load_strictly():
    torch.manual_seed(0)
    reference = RefSlip("vit_base_patch16_224", vision_width=768, embed_dim=512, context=77, width=512, heads=8,
                        layers=12).eval()
    clip = load_clip("slip-vit-b-16")
    clip.model.load_state_dict(convert_slip_state_dict(dict(reference.state_dict())), strict=True)
    tokens = clip.tokenizer(["a photo of a cat"])
    assert tokens.shape == (1, 77)
    with torch.no_grad():
        torch.testing.assert_close(clip.model.encode_text(tokens), reference.encode_text(tokens), atol=1e-5, rtol=0)
        image = torch.randn(1, 3, 224, 224)
        torch.testing.assert_close(clip.model.encode_image(image), reference.encode_image(image), atol=1e-5, rtol=0)
