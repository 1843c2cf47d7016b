"""Tests for crossgap_lib.inversion: pseudo-token encoders against open_clip's encoders, OTI/OVI behaviour, errors."""

from __future__ import annotations

from typing import ClassVar

import open_clip
import pytest
import torch
import torch.nn.functional as F
from open_clip.model import CLIPTextCfg, CLIPVisionCfg

from crossgap_lib import inversion as inv
from crossgap_lib.inversion import (
    InversionResult,
    encode_image_with_pseudo_tokens,
    encode_text_with_pseudo_tokens,
    oti,
    ovi,
)
from crossgap_lib.models import LoadedClip

ATOL = 1e-5
WORDS = ["dog", "cat", "red", "car"]  # one BPE token each


def _tiny_clip(vision_layers=1, seed=0) -> open_clip.CLIP:
    torch.manual_seed(seed)
    vision = CLIPVisionCfg(image_size=32, patch_size=8, width=32, layers=vision_layers, head_width=16)
    text = CLIPTextCfg(context_length=16, vocab_size=49408, width=32, heads=2, layers=2)
    return open_clip.CLIP(embed_dim=16, vision_cfg=vision, text_cfg=text).eval()


@pytest.fixture(scope="module")
def tiny() -> LoadedClip:
    torch.set_num_threads(1)
    return LoadedClip(_tiny_clip(), None, open_clip.get_tokenizer("ViT-B-32", context_length=16), "tiny", None)


class HandTokenizer:
    """SigLIP-like ids made by hand (its Hugging Face tokenizer needs the hub): words -> ids, EOS 1, pad 0, 64 long."""

    vocab: ClassVar[dict[str, int]] = {
        "a": 9,
        "photo": 1202,
        "of": 13,
        "£": 3411,
        "dog": 1782,
        "cat": 1712,
        "red": 1131,
        "in": 16,
        "the": 8,
    }

    def __call__(self, texts, context_length: int = 64) -> torch.Tensor:
        texts = [texts] if isinstance(texts, str) else texts
        out = torch.zeros(len(texts), context_length, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [self.vocab[w] for w in text.split()][: context_length - 1] + [1]
            out[row, : len(ids)] = torch.tensor(ids)
        return out


@pytest.fixture(scope="module")
def siglip() -> LoadedClip:
    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-16-SigLIP").eval()
    return LoadedClip(model, None, HandTokenizer(), "ViT-B-16-SigLIP", None)


def _word_embeddings(clip: LoadedClip, rows: list[list[str]]) -> torch.Tensor:
    """The model's own token embeddings of single-token words (B, R, width)."""
    embedding = clip.model.text.token_embedding if hasattr(clip.model, "text") else clip.model.token_embedding
    ids = [
        [int(clip.tokenizer([w])[0][1 if isinstance(clip.model, open_clip.CLIP) else 0]) for w in row] for row in rows
    ]
    return embedding(torch.tensor(ids))


# ------------------------------------------------------------------------------------------------- text encoder
@pytest.mark.parametrize("template", ["a photo of {}", "{}", "{} in the photo", "a red {} photo"])
@pytest.mark.parametrize("num_words", [1, 3])
def test_text_matches_encode_text_for_real_words(tiny, template, num_words):
    rows = [WORDS[i : i + num_words] for i in range(2)]
    with torch.no_grad():
        got = encode_text_with_pseudo_tokens(tiny, _word_embeddings(tiny, rows), template)
        want = tiny.model.encode_text(tiny.tokenizer([template.format(" ".join(r)) for r in rows]))
    assert got.shape == (2, 16)
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)


def test_text_matches_full_size_vit_b_32_tower():
    torch.manual_seed(0)
    clip = LoadedClip(open_clip.create_model("ViT-B-32").eval(), None, open_clip.get_tokenizer("ViT-B-32"), "b32", None)
    with torch.no_grad():
        got = encode_text_with_pseudo_tokens(clip, _word_embeddings(clip, [["dog", "car"], ["red", "cat"]]))
        want = clip.model.encode_text(clip.tokenizer(["a photo of dog car", "a photo of red cat"]))
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)


def test_text_normalize_flag(tiny):
    tokens = _word_embeddings(tiny, [["dog"]])
    got = encode_text_with_pseudo_tokens(tiny, tokens, normalize=True)
    torch.testing.assert_close(got, F.normalize(encode_text_with_pseudo_tokens(tiny, tokens), dim=-1))
    torch.testing.assert_close(got.norm(dim=-1), torch.ones(1))


def _naive_full_context(clip: LoadedClip, pseudo_tokens: torch.Tensor, template: str) -> torch.Tensor:
    """Reference: embed the whole context, overwrite the placeholder rows, run all tokens (the paper's way)."""
    model = clip.model
    text = template.format(" ".join(["£"] * pseudo_tokens.shape[1]))
    ids = clip.tokenizer([text]).expand(pseudo_tokens.shape[0], -1)
    x = model.token_embedding(ids)
    mask = ids == clip.tokenizer(["£"])[0][1]
    x = torch.where(mask.unsqueeze(-1), torch.zeros_like(x), x)
    x = x.masked_scatter(mask.unsqueeze(-1).expand_as(x), pseudo_tokens.reshape(-1))
    x = model.transformer(x + model.positional_embedding, attn_mask=model.attn_mask)
    x = model.ln_final(x)[torch.arange(x.shape[0]), ids.argmax(-1)]
    return x @ model.text_projection


def test_text_truncated_run_matches_full_context_forward_and_backward(tiny):
    torch.manual_seed(1)
    tokens = (0.02 * torch.randn(3, 2, 32)).requires_grad_()
    ref_tokens = tokens.detach().clone().requires_grad_()
    got = encode_text_with_pseudo_tokens(tiny, tokens, "a photo of {}")
    want = _naive_full_context(tiny, ref_tokens, "a photo of {}")
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)
    weights = torch.randn_like(got)
    (got * weights).sum().backward()
    (want * weights).sum().backward()
    # gradients are O(1): compare them relative to their size (fp32 summation order differs between the two paths)
    torch.testing.assert_close(tokens.grad, ref_tokens.grad, atol=ATOL, rtol=1e-4)
    tiny.model.zero_grad(set_to_none=True)


def test_text_runs_only_tokens_up_to_end_of_text(tiny):
    seen = []
    handle = tiny.model.transformer.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[1]))
    try:
        encode_text_with_pseudo_tokens(tiny, torch.zeros(2, 1, 32), "a photo of {}")
    finally:
        handle.remove()
    assert seen == [6]  # <start> a photo of £ <end>, not the 16-token context


def test_text_matches_siglip_tower(siglip):
    rows = [["dog"], ["cat"]]
    with torch.no_grad():
        for template in ["a photo of {}", "{} in the photo"]:
            got = encode_text_with_pseudo_tokens(siglip, _word_embeddings(siglip, rows), template)
            want = siglip.model.encode_text(siglip.tokenizer([template.format(r[0]) for r in rows]))
            torch.testing.assert_close(got, want, atol=ATOL, rtol=0)
        two = _word_embeddings(siglip, [["red", "dog"]])
        torch.testing.assert_close(
            encode_text_with_pseudo_tokens(siglip, two),
            siglip.model.encode_text(siglip.tokenizer(["a photo of red dog"])),
            atol=ATOL,
            rtol=0,
        )


# ------------------------------------------------------------------------------------------------ image encoder
def test_image_matches_encode_image_with_all_patches(tiny):
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        patches = inv.patch_embeddings(tiny, images)
        assert patches.shape == (2, 16, 32)
        torch.testing.assert_close(
            encode_image_with_pseudo_tokens(tiny, patches), tiny.model.encode_image(images), atol=ATOL, rtol=0
        )


def test_image_matches_siglip_timm_trunk(siglip):
    images = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        patches = inv.patch_embeddings(siglip, images)
        assert patches.shape == (1, 196, 768)
        got = encode_image_with_pseudo_tokens(siglip, patches, normalize=True)
        torch.testing.assert_close(got, siglip.model.encode_image(images, normalize=True), atol=ATOL, rtol=0)


def test_image_pseudo_tokens_are_spread_by_nearest_interpolation(tiny):
    tokens = torch.randn(1, 2, 32)
    spread = torch.cat([tokens[:, :1].expand(-1, 8, -1), tokens[:, 1:].expand(-1, 8, -1)], dim=1)  # 16 patches
    with torch.no_grad():
        torch.testing.assert_close(
            encode_image_with_pseudo_tokens(tiny, tokens),
            encode_image_with_pseudo_tokens(tiny, spread),
            atol=ATOL,
            rtol=0,
        )


# ------------------------------------------------------------------------------------------------------ errors
def test_encoder_errors_name_the_problem(tiny):
    with pytest.raises(ValueError, match=r"\(B, R, 32\)"):
        encode_text_with_pseudo_tokens(tiny, torch.zeros(2, 32))
    with pytest.raises(ValueError, match=r"\(B, R, 32\)"):
        encode_text_with_pseudo_tokens(tiny, torch.zeros(2, 1, 31))
    with pytest.raises(ValueError, match="do not fit"):
        encode_text_with_pseudo_tokens(tiny, torch.zeros(1, 13, 32))
    for template in ["a photo of", "a {} of {}", "a photo of {0}", "a {name}", "a photo {"]:
        with pytest.raises(ValueError, match="template"):
            encode_text_with_pseudo_tokens(tiny, torch.zeros(1, 1, 32), template)
    with pytest.raises(ValueError, match=r"\(B, R, 32\)"):
        encode_image_with_pseudo_tokens(tiny, torch.zeros(1, 1, 16))
    with pytest.raises(ValueError, match="at most 16"):
        encode_image_with_pseudo_tokens(tiny, torch.zeros(1, 17, 32))


def test_non_vit_image_tower_is_refused():
    torch.manual_seed(0)
    vision = CLIPVisionCfg(image_size=32, layers=(1, 1, 1, 1), width=8, head_width=16)
    text = CLIPTextCfg(context_length=16, vocab_size=49408, width=32, heads=2, layers=1)
    resnet = LoadedClip(open_clip.CLIP(embed_dim=16, vision_cfg=vision, text_cfg=text), None, None, "rn", None)
    with pytest.raises(ValueError, match="ModifiedResNet"):
        encode_image_with_pseudo_tokens(resnet, torch.zeros(1, 1, 8))
    with pytest.raises(ValueError, match="ModifiedResNet"):
        ovi(resnet, torch.randn(2, 16), steps=1, progress=False)


def test_oti_ovi_bad_inputs(tiny):
    good = torch.randn(3, 16)
    cases = [
        ({"image_features": torch.zeros(0, 16)}, "empty"),
        ({"image_features": torch.randn(3, 15)}, r"\(N, 16\)"),
        ({"image_features": torch.randn(16)}, r"\(N, embed_dim\)"),
        ({"image_features": torch.tensor([[float("nan")] * 16])}, "NaN"),
        ({"image_features": torch.cat([good, torch.zeros(1, 16)])}, r"image_features has 1 all-zero row.*row 3"),
        ({"image_features": good, "steps": 0}, "steps"),
        ({"image_features": good, "num_pseudo_tokens": 0}, "num_pseudo_tokens"),
        ({"image_features": good, "template": "a photo of {x}"}, "template"),
        ({"image_features": good, "template": "a photo"}, "template"),
        ({"image_features": good, "batch_size": 0}, "batch_size"),
        ({"image_features": good, "record_every": 0}, "record_every"),
        ({"image_features": good, "lr": 0.0}, "lr"),
        ({"image_features": good, "weight_decay": -1.0}, "weight_decay"),
        ({"image_features": good, "seed": -1}, "seed"),
        ({"image_features": good, "index_offset": -2}, "index_offset"),
        ({"image_features": good, "num_pseudo_tokens": 20}, "do not fit"),
    ]
    for kwargs, match in cases:
        with pytest.raises(ValueError, match=match):
            oti(tiny, progress=False, **kwargs)
    for kwargs, match in [
        ({"text_features": torch.zeros(0, 16)}, "empty"),
        ({"text_features": torch.randn(3, 17)}, r"\(N, 16\)"),
        ({"text_features": torch.full((2, 16), float("inf"))}, "inf"),
        ({"text_features": torch.zeros(2, 16)}, "text_features has 2 all-zero row.*zero norm"),
        ({"text_features": good, "steps": 0}, "steps"),
        ({"text_features": good, "num_pseudo_tokens": 0}, "num_pseudo_tokens"),
        ({"text_features": good, "num_pseudo_tokens": 17}, "16 patches"),
    ]:
        with pytest.raises(ValueError, match=match):
            ovi(tiny, progress=False, **kwargs)


# --------------------------------------------------------------------------------------------------------- OTI
@pytest.fixture(scope="module")
def image_features(tiny) -> torch.Tensor:
    torch.manual_seed(3)
    with torch.no_grad():
        return tiny.model.encode_image(torch.randn(5, 3, 32, 32))


def test_oti_reduces_the_loss_and_returns_normalised_features(tiny, image_features):
    result = oti(tiny, image_features, num_pseudo_tokens=2, steps=30, record_every=10, progress=False)
    assert result.features.shape == (5, 16) and result.pseudo_tokens.shape == (5, 2, 32)
    assert result.losses.shape == (5, 30) and result.history.shape == (4, 5, 16)
    assert result.history_steps == [0, 10, 20, 30]
    torch.testing.assert_close(result.features.norm(dim=-1), torch.ones(5))
    assert (result.losses[:, -1] < result.losses[:, 0] - 0.05).all()
    target = F.normalize(image_features, dim=-1)
    final_loss = 1 - (result.features * target).sum(-1)
    assert (final_loss < result.losses[:, 0]).all()
    # history[0] holds the initial features, whose loss is the first entry of each curve; the last is the result
    torch.testing.assert_close(1 - (result.history[0] * target).sum(-1), result.losses[:, 0], atol=ATOL, rtol=0)
    torch.testing.assert_close(result.history[-1], result.features)
    # the returned features are what the returned pseudo tokens encode to
    with torch.no_grad():
        again = encode_text_with_pseudo_tokens(tiny, result.pseudo_tokens, normalize=True)
    torch.testing.assert_close(again, result.features, atol=ATOL, rtol=0)


def test_oti_history_omits_final_step_when_not_a_multiple(tiny, image_features):
    result = oti(tiny, image_features[:2], steps=7, record_every=3, progress=False)
    assert result.history_steps == [0, 3, 6] and result.history.shape == (3, 2, 16)
    assert oti(tiny, image_features[:2], steps=2, progress=False).history is None


def test_oti_each_sample_is_independent_of_its_batch(tiny, image_features):
    whole = oti(tiny, image_features, steps=15, batch_size=5, progress=False)
    pairs = oti(tiny, image_features, steps=15, batch_size=2, progress=False)
    single = oti(tiny, image_features[3:4], steps=15, batch_size=1, index_offset=3, progress=False)
    torch.testing.assert_close(pairs.features, whole.features, atol=ATOL, rtol=0)
    torch.testing.assert_close(pairs.losses, whole.losses, atol=ATOL, rtol=0)
    torch.testing.assert_close(single.features[0], whole.features[3], atol=ATOL, rtol=0)
    # neighbours of a different content do not change a sample either
    swapped = torch.cat([image_features[:1], image_features[:1].flip(-1), image_features[2:]])
    torch.testing.assert_close(
        oti(tiny, swapped, steps=15, progress=False).features[2:], whole.features[2:], atol=ATOL, rtol=0
    )


def test_oti_is_deterministic_and_seeded(tiny, image_features):
    a = oti(tiny, image_features, steps=10, seed=7, progress=False)
    b = oti(tiny, image_features, steps=10, seed=7, progress=False)
    c = oti(tiny, image_features, steps=10, seed=8, progress=False)
    assert torch.equal(a.features, b.features) and torch.equal(a.pseudo_tokens, b.pseudo_tokens)
    assert torch.equal(a.losses, b.losses)
    assert not torch.allclose(a.pseudo_tokens, c.pseudo_tokens)


def test_chunked_runs_concat_to_the_whole_run(tiny, image_features):
    whole = oti(tiny, image_features, steps=6, record_every=3, progress=False)
    parts = [
        oti(tiny, image_features[s:e], steps=6, record_every=3, index_offset=s, progress=False)
        for s, e in [(0, 2), (2, 5)]
    ]
    merged = InversionResult.concat(parts)
    assert len(merged) == 5 and merged.history_steps == whole.history_steps
    for field in ("features", "pseudo_tokens", "losses", "history"):
        torch.testing.assert_close(getattr(merged, field), getattr(whole, field), atol=ATOL, rtol=0)
    with pytest.raises(ValueError, match="same steps"):
        InversionResult.concat([parts[0], oti(tiny, image_features[:1], steps=5, record_every=3, progress=False)])
    with pytest.raises(ValueError, match="at least one"):
        InversionResult.concat([])


def test_oti_freezes_the_model_and_restores_its_state(tiny, image_features):
    model = tiny.model
    model.zero_grad(set_to_none=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    model.token_embedding.requires_grad_(False)
    seen = []
    hook = model.transformer.register_forward_pre_hook(
        lambda module, args: seen.append((module.training, any(p.requires_grad for p in model.parameters())))
    )
    try:
        oti(tiny, image_features[:2], steps=3, progress=False)
    finally:
        hook.remove()
    assert seen and all(state == (False, False) for state in seen)  # eval mode and frozen while inverting
    assert model.training and not model.token_embedding.weight.requires_grad
    assert model.transformer.resblocks[0].attn.in_proj_weight.requires_grad
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    model.requires_grad_(True).eval()


def test_initial_pseudo_tokens_depend_only_on_seed_and_index():
    a = inv.initial_pseudo_tokens(6, 2, 64, seed=0)
    b = inv.initial_pseudo_tokens(3, 2, 64, seed=0, index_offset=3)
    assert torch.equal(a[3:], b)
    assert not torch.equal(a[0], a[1])
    assert not torch.equal(a, inv.initial_pseudo_tokens(6, 2, 64, seed=1))
    assert abs(a.std().item() - 0.02) < 0.003 and abs(a.mean().item()) < 0.003


# --------------------------------------------------------------------------------------------------------- OVI
@pytest.fixture(scope="module")
def text_features(tiny) -> torch.Tensor:
    with torch.no_grad():
        return tiny.model.encode_text(tiny.tokenizer(["a dog", "a red car", "a cat"]))


def test_ovi_reduces_the_loss(tiny, text_features):
    result = ovi(tiny, text_features, num_pseudo_tokens=4, steps=30, record_every=15, progress=False)
    assert result.features.shape == (3, 16) and result.pseudo_tokens.shape == (3, 4, 32)
    assert result.losses.shape == (3, 30) and result.history.shape == (3, 3, 16)
    assert (result.losses[:, -1] < result.losses[:, 0] - 0.05).all()
    with torch.no_grad():
        again = encode_image_with_pseudo_tokens(tiny, result.pseudo_tokens, normalize=True)
    torch.testing.assert_close(again, result.features, atol=ATOL, rtol=0)


def test_ovi_each_sample_is_independent_of_its_batch(tiny, text_features):
    whole = ovi(tiny, text_features, steps=15, batch_size=3, progress=False)
    single = ovi(tiny, text_features, steps=15, batch_size=1, progress=False)
    torch.testing.assert_close(single.features, whole.features, atol=ATOL, rtol=0)
    torch.testing.assert_close(single.losses, whole.losses, atol=ATOL, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_oti_ovi_on_cuda_use_autocast_and_reduce_the_loss(image_features, text_features):
    model = _tiny_clip().cuda()
    clip = LoadedClip(model, None, open_clip.get_tokenizer("ViT-B-32", context_length=16), "tiny", None, "cuda")
    for result in (
        oti(clip, image_features, steps=30, progress=False),
        ovi(clip, text_features, steps=30, progress=False),
    ):
        assert result.features.device.type == "cpu" and result.features.dtype == torch.float32
        assert (result.losses[:, -1] < result.losses[:, 0]).all()
        torch.testing.assert_close(result.features.norm(dim=-1), torch.ones(len(result)))


# --------------------------------------------------------------------------------------------------- precision
def test_precision_is_validated_and_defaults_to_the_authors_fp16():
    assert inv.OTI_DEFAULTS.precision == inv.OVI_DEFAULTS.precision == "fp16" and inv.PRECISIONS == (
        "fp16", "bf16", "fp32")
    assert inv.InversionConfig(precision="bf16").updated(precision="fp32").precision == "fp32"
    for bad in ("half", "float16", None, 16):
        with pytest.raises(ValueError, match=r"precision must be one of \('fp16', 'bf16', 'fp32'\)"):
            inv.InversionConfig(precision=bad)


def test_autocast_dtype_per_device_string(monkeypatch):
    from crossgap_lib.pipeline import _autocast
    from crossgap_lib.towers import _autocast_dtype

    for precision in inv.PRECISIONS:  # CPU always fp32, whatever is asked
        assert _autocast_dtype("cpu", precision) is None and _autocast_dtype(torch.device("cpu"), precision) is None
        assert _autocast(torch.device("cpu"), precision)[1] == "fp32"
    for device in ("cuda", "cuda:1", torch.device("cuda", 0)):
        assert _autocast_dtype(device) is torch.float16 and _autocast_dtype(device, "fp16") is torch.float16
        assert _autocast_dtype(device, "fp32") is None
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
        assert _autocast_dtype(device, "bf16") is torch.bfloat16
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
        with pytest.raises(ValueError, match="bfloat16 support.*precision='fp16'"):
            _autocast_dtype(device, "bf16")
    with pytest.raises(ValueError, match="precision must be one of"):
        _autocast_dtype("cuda", "bf32")


def test_grad_scaler_only_for_fp16():
    cpu = torch.device("cpu")
    assert inv._grad_scaler(cpu, None) is None and inv._grad_scaler(cpu, torch.bfloat16) is None
    assert isinstance(inv._grad_scaler(cpu, torch.float16), torch.amp.GradScaler)


def test_scaled_step_equals_plain_step_and_skips_non_finite_gradients():
    start = torch.randn(4, 3)
    plain, scaled = torch.nn.Parameter(start.clone()), torch.nn.Parameter(start.clone())
    opt_plain = torch.optim.AdamW([plain], lr=0.1, weight_decay=0.01)
    opt_scaled = torch.optim.AdamW([scaled], lr=0.1, weight_decay=0.01)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    target = torch.randn(4, 3)
    for _ in range(5):
        inv._optimizer_step(((plain - target) ** 2).sum(), opt_plain, None)
        inv._optimizer_step(((scaled - target) ** 2).sum(), opt_scaled, scaler)
    torch.testing.assert_close(scaled, plain)
    assert not torch.equal(plain.detach(), start)
    before, scale = scaled.detach().clone(), scaler.get_scale()
    inv._optimizer_step((scaled * float("inf")).sum(), opt_scaled, scaler)  # inf gradient: step skipped, scale halved
    assert torch.equal(scaled.detach(), before) and scaler.get_scale() == scale / 2


def test_oti_fp16_scaler_path_runs_on_cpu_and_tracks_fp32(tiny, image_features, monkeypatch):
    """The CUDA fp16 branch of the loop (autocast + GradScaler), run with CPU autocast in fp16."""
    fp32 = oti(tiny, image_features, steps=20, progress=False)
    scalers, make_scaler = [], inv._grad_scaler

    def recording_scaler(device, dtype):
        scalers.append(make_scaler(device, dtype))
        return scalers[-1]

    monkeypatch.setattr(inv, "_autocast_dtype", lambda device, precision="fp16": torch.float16)
    monkeypatch.setattr(inv, "_grad_scaler", recording_scaler)
    fp16 = oti(tiny, image_features, steps=20, progress=False)
    assert len(scalers) == 1 and isinstance(scalers[0], torch.amp.GradScaler)
    assert (fp16.losses[:, -1] < fp16.losses[:, 0] - 0.05).all()
    torch.testing.assert_close(fp16.features, fp32.features, atol=0.05, rtol=0)


def test_cpu_runs_fp32_whatever_the_precision(tiny, image_features):
    runs = [oti(tiny, image_features[:2], steps=5, precision=p, progress=False) for p in inv.PRECISIONS]
    for run in runs[1:]:
        torch.testing.assert_close(run.features, runs[0].features, atol=0, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_precisions_reduce_the_loss_and_agree(image_features):
    model = _tiny_clip().cuda()
    clip = LoadedClip(model, None, open_clip.get_tokenizer("ViT-B-32", context_length=16), "tiny", None, "cuda")
    precisions = [p for p in inv.PRECISIONS if p != "bf16" or torch.cuda.is_bf16_supported()]
    runs = {p: oti(clip, image_features, steps=30, precision=p, progress=False) for p in precisions}
    for result in runs.values():
        assert (result.losses[:, -1] < result.losses[:, 0]).all() and torch.isfinite(result.features).all()
    torch.testing.assert_close(runs["fp16"].features, runs["fp32"].features, atol=0.05, rtol=0)


# ------------------------------------------------------------------------------------------------- placeholder
class _SentencePieceLike:
    """HF-like tokenizer (EOS 1, pad 0, unknown 2) that deletes ASCII punctuation as SigLIP's "canonicalize" does and
    knows "£", "§", "¤" only as the unknown token; "x" is two pieces, "z" one."""

    tokenizer: ClassVar = type("Backend", (), {"unk_token_id": 2})()
    pieces: ClassVar[dict[str, list[int]]] = {"£": [2], "§": [2], "¤": [2], "x": [3, 50], "z": [60], "a": [9],
                                              "photo": [1202], "of": [13]}

    def __call__(self, texts, context_length: int = 16) -> torch.Tensor:
        out = torch.zeros(len(texts), context_length, dtype=torch.long)
        for row, text in enumerate(texts):
            words = text.translate(str.maketrans("", "", "*#~|^@")).split()
            ids = [i for w in words for i in self.pieces[w]] + [1]
            out[row, : len(ids)] = torch.tensor(ids)
        return out


def test_placeholder_is_a_known_single_token_per_tokenizer():
    from crossgap_lib.towers import _placeholder, _single_token

    assert _placeholder(open_clip.get_tokenizer("ViT-B-32")) == ("£", 1950)  # CLIP's BPE: the authors' word
    fake = _SentencePieceLike()
    assert _single_token(fake, "£") is None and _single_token(fake, "*") is None and _single_token(fake, "x") is None
    assert _placeholder(fake) == ("z", 60)
    without_unknown_id = lambda texts, context_length=16: fake(texts, context_length)  # noqa: E731
    assert _placeholder(without_unknown_id) == ("£", 2)  # what the unknown-token guard prevents


def test_placeholder_against_the_real_siglip_vocabulary():
    """Runs where the real tokenizer of open_clip's ViT-B-16-SigLIP (Hugging Face timm/ViT-B-16-SigLIP, c4_en
    SentencePiece, 32000 pieces) is cached, or at $CROSSGAP_SIGLIP_TOKENIZER (a folder with its tokenizer files)."""
    import os

    from open_clip.tokenizer import HFTokenizer

    from crossgap_lib.towers import _placeholder, _single_token

    path = os.environ.get("CROSSGAP_SIGLIP_TOKENIZER")
    try:
        tokenizer = (HFTokenizer(path, context_length=64, clean="canonicalize") if path
                     else open_clip.get_tokenizer("ViT-B-16-SigLIP"))
    except Exception as err:  # noqa: BLE001 - not cached offline: nothing to check against
        pytest.skip(f"the real SigLIP tokenizer is not available offline ({type(err).__name__})")
    word, token = _placeholder(tokenizer)
    assert token != tokenizer.tokenizer.unk_token_id and 2 < token < 32000
    if _single_token(tokenizer, "£") is not None:
        assert word == "£"
    for r in (1, 4):
        ids = tokenizer(["a photo of " + " ".join([word] * r)])[0]
        assert int((ids == token).sum()) == r
