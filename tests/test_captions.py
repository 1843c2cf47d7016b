"""crossgap_lib.captions: greedy CoCa decoding (token for token open_clip's loop), decoding, cached and resumable
captions, config checks. A tiny random CoCa built here; no weights are read."""

from __future__ import annotations

import numpy as np
import open_clip
import open_clip.coca_model as coca_model
import pytest
import torch
import transformers
from PIL import Image

from crossgap_lib import captions
from crossgap_lib.captions import CaptionerConfig, caption_images, decode_tokens, greedy_tokens
from crossgap_lib.models import LoadedClip, load_clip

SOT, EOT = 49406, 49407


def tiny_coca() -> torch.nn.Module:
    """A 1-layer CoCa on 32 px images with the CLIP vocabulary and a non-zero decoder projection."""
    text = {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1, "embed_cls": True,
            "output_tokens": True}
    multimodal = {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1,
                  "attn_pooler_heads": 2, "n_queries": 4}
    vision = {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "attentional_pool": True,
              "attn_pooler_heads": 2, "output_tokens": True, "head_width": 16}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = coca_model.CoCa(embed_dim=32, multimodal_cfg=multimodal, text_cfg=text, vision_cfg=vision)
        for p in model.parameters():
            p.data.normal_(0, 0.5)
    return model.eval()


@pytest.fixture(scope="module")
def captioner() -> LoadedClip:
    return LoadedClip(model=tiny_coca(), preprocess=open_clip.image_transform(32, is_train=False),
                      tokenizer=open_clip.get_tokenizer("coca_ViT-B-32"), name="tiny-coca", pretrained=None)


def images(n: int) -> list[tuple[Image.Image, int]]:
    rng = np.random.default_rng(0)
    return [(Image.fromarray(rng.integers(0, 255, size=(40, 48, 3), dtype=np.uint8)), i % 2) for i in range(n)]


@pytest.fixture
def open_clip_greedy(monkeypatch):
    """open_clip's own ``generate`` loop, enabled with transformers 5's logits processors (open_clip 3.3 switches all
    of ``generate`` off because transformers 5 lacks ``BeamSearchScorer``)."""
    for name in ("LogitsProcessorList", "MinLengthLogitsProcessor", "RepetitionPenaltyLogitsProcessor",
                 "MaxLengthCriteria", "StoppingCriteriaList"):
        monkeypatch.setattr(coca_model, name, getattr(transformers, name), raising=False)
    monkeypatch.setattr(coca_model, "_has_transformers", True)
    monkeypatch.setitem(coca_model.GENERATION_TYPES, "top_k", transformers.TopKLogitsWarper)

    def generate(model, pixels, seq_len, min_seq_len):
        return model.generate(pixels, seq_len=seq_len, min_seq_len=min_seq_len, generation_type="top_k", top_k=1,
                              fixed_output_length=True)
    return generate


def test_greedy_tokens_are_open_clips_greedy_loop(open_clip_greedy):
    model = tiny_coca()
    pixels = torch.randn(5, 3, 32, 32)
    for seq_len, min_seq_len in ((12, 5), (7, 2)):
        ours = greedy_tokens(model, pixels, seq_len, min_seq_len, SOT, EOT)
        torch.testing.assert_close(ours, open_clip_greedy(model, pixels, seq_len, min_seq_len), rtol=0, atol=0)
        assert ours.shape == (5, seq_len) and (ours[:, 0] == SOT).all() and (ours[:, -1] == EOT).all()

    def favour(module, args, output):  # image 0 wants to end, image 1 emits the pad token (also an end)
        output = output.clone()
        output[0, :, EOT] += 100.0
        output[1, :, 0] += 100.0
        return output

    handle = model.text_decoder.register_forward_hook(favour)
    try:
        ours = greedy_tokens(model, pixels, 12, 5, SOT, EOT)
        torch.testing.assert_close(ours, open_clip_greedy(model, pixels, 12, 5), rtol=0, atol=0)
    finally:
        handle.remove()
    assert ours[0, 5].item() == EOT and (ours[0, 6:] == 0).all()  # no end before the sequence is 5 long
    assert ours[1, 1].item() == 0 and (ours[1, 1:] == 0).all()
    assert decode_tokens(open_clip.get_tokenizer("coca_ViT-B-32"), ours)[1] == ""


def test_decode_tokens_reads_between_start_and_end():
    tokenizer = open_clip.get_tokenizer("coca_ViT-B-32")
    body = tokenizer(["a dog on the grass"])[0]
    body = body[1:int((body == EOT).nonzero()[0])].tolist()
    rows = torch.tensor([[SOT, *body, EOT, 0, 0], [SOT, *body[:2], EOT, *[320] * (len(body) - 2), 0, 0]])
    assert decode_tokens(tokenizer, rows) == ["a dog on the grass", "a dog"]


def test_captions_are_cached_and_resume_after_an_interruption(captioner, tmp_path, monkeypatch):
    data = images(5)
    config = CaptionerConfig(model="tiny", pretrained=None, seq_len=8, batch_size=2)
    expected = caption_images(captioner, data, config, progress=False)  # no cache
    assert len(expected) == 5 and all(isinstance(c, str) and c for c in expected)

    calls, real = [], captions.greedy_tokens

    def interrupted(*args, **kwargs):
        calls.append(args[1].shape[0])
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(captions, "greedy_tokens", interrupted)
    with pytest.raises(KeyboardInterrupt):
        caption_images(captioner, data, config, cache_dir=tmp_path, progress=False, chunk_size=2)
    assert len(list((tmp_path / "captions").glob("*/chunk_*.pt"))) == 1  # the first chunk survived

    calls.clear()
    monkeypatch.setattr(captions, "greedy_tokens", lambda *a, **k: calls.append(a[1].shape[0]) or real(*a, **k))
    assert caption_images(captioner, data, config, cache_dir=tmp_path, progress=False, chunk_size=2) == expected
    assert calls == [2, 1]  # only the two chunks that were missing
    calls.clear()
    assert caption_images(captioner, data, config, cache_dir=tmp_path, progress=False, chunk_size=2) == expected
    assert calls == []  # the merged result
    longer = CaptionerConfig(model="tiny", pretrained=None, seq_len=9, batch_size=2)
    caption_images(captioner, data, longer, cache_dir=tmp_path, progress=False, chunk_size=2)
    assert calls == [2, 2, 1]  # another decoding setting: another key


def test_config_and_model_are_checked():
    assert CaptionerConfig.from_dict({"datasets": ["cub"]}).datasets == ("cub",)
    with pytest.raises(ValueError, match=r"unknown keys \['beams'\]"):
        CaptionerConfig.from_dict({"beams": 4})
    with pytest.raises(ValueError, match="must exceed min_seq_len"):
        CaptionerConfig.from_dict({"seq_len": 5})
    with pytest.raises(ValueError, match="positive int"):
        CaptionerConfig.from_dict({"batch_size": 0})
    with pytest.raises(ValueError, match="must be a mapping"):
        CaptionerConfig.from_dict("coca_ViT-L-14")
    clip = load_clip("crossgap-micro")
    with pytest.raises(ValueError, match="no text decoder.*coca_ViT-L-14"):
        caption_images(clip, images(2), progress=False)
