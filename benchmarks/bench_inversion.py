"""OTI and OVI with crossgap against naive references written the way the paper's scripts work, same process.

Naive OTI re-tokenises the template to the full 77-token context on every step and runs all 77 positions; naive OVI
interpolates and encodes the visual pseudo tokens step by step exactly as the library does (there is nothing to
precompute there), so it checks that the library adds no overhead. Both references start from the library's
initial pseudo tokens and sum the per-sample cosine losses (the paper averages them; with AdamW that only changes the
effect of its epsilon), so the final inverted features must agree.

    python benchmarks/bench_inversion.py [--threads 2] [--quick]
"""

from __future__ import annotations

import argparse
import time

import open_clip
import torch
import torch.nn.functional as F
from bench_text_encoder import naive_encode_text  # same folder

from crossgap_lib.inversion import initial_pseudo_tokens, oti, ovi
from crossgap_lib.models import LoadedClip


def naive_inversion(
    encode, targets: torch.Tensor, width: int, steps: int, lr: float = 2e-2, weight_decay: float = 0.01, seed: int = 0
) -> torch.Tensor:
    """Reference optimisation loop: AdamW on 1 - cos(encode(tokens), target); returns final features (N, D)."""
    targets = F.normalize(targets, dim=-1)
    tokens = torch.nn.Parameter(initial_pseudo_tokens(targets.shape[0], 1, width, seed))
    optimizer = torch.optim.AdamW([tokens], lr=lr, weight_decay=weight_decay)
    for _ in range(steps):
        optimizer.zero_grad()
        loss = (1 - (F.normalize(encode(tokens), dim=-1) * targets).sum(dim=-1)).sum()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return F.normalize(encode(tokens), dim=-1)


def naive_encode_image(model: torch.nn.Module, pseudo_tokens: torch.Tensor) -> torch.Tensor:
    """Reference OVI encoder: nearest-interpolate (B, R, W) over the patches, add class/position tokens, run the ViT."""
    visual = model.visual
    batch, _, width = pseudo_tokens.shape
    num_patches = visual.positional_embedding.shape[0] - 1
    patches = F.interpolate(pseudo_tokens.unsqueeze(1), size=(num_patches, width), mode="nearest").squeeze(1)
    x = torch.cat([visual.class_embedding.expand(batch, 1, width), patches], dim=1) + visual.positional_embedding
    x = visual.transformer(visual.ln_pre(x))
    return visual.ln_post(x[:, 0]) @ visual.proj


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="2 steps instead of 10")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    steps = 2 if args.quick else 10

    model = open_clip.create_model("ViT-B-32").eval().requires_grad_(False)  # random weights
    clip = LoadedClip(model, None, open_clip.get_tokenizer("ViT-B-32"), "ViT-B-32", None)
    text_width, vision_width = model.token_embedding.weight.shape[1], model.visual.conv1.out_channels
    with torch.no_grad():
        image_features = model.encode_image(torch.randn(16, 3, 224, 224))
        words = ["dog", "cat", "car", "tree", "house", "boat", "bird", "lamp"]
        text_features = model.encode_text(clip.tokenizer([f"a photo of a {w}" for w in words]))
    print(f"ViT-B-32 (random weights), {args.threads} threads, {steps} steps per run")

    naive_s, naive_feats = timed(
        lambda: naive_inversion(
            lambda t: naive_encode_text(clip, t, "a photo of {}"), image_features, text_width, steps
        )
    )
    lib_s, result = timed(lambda: oti(clip, image_features, steps=steps, batch_size=16, progress=False))
    diff = (naive_feats - result.features).abs().max()
    print(
        f"OTI, 16 images : naive {naive_s / steps:7.3f} s/step   crossgap {lib_s / steps:7.3f} s/step   "
        f"speed-up {naive_s / lib_s:5.2f}x   max |feature difference| {diff:.2e}"
    )
    per_image_150 = lib_s / steps * 150 / 16
    print(
        f"OTI throughput at 150 steps (extrapolated from the {steps} measured steps): {1 / per_image_150:.3f} images/s "
        f"(naive: {16 / (naive_s / steps * 150):.3f} images/s)"
    )

    naive_s, naive_feats = timed(
        lambda: naive_inversion(lambda t: naive_encode_image(model, t), text_features, vision_width, steps)
    )
    lib_s, result = timed(lambda: ovi(clip, text_features, steps=steps, batch_size=8, progress=False))
    diff = (naive_feats - result.features).abs().max()
    print(
        f"OVI, 8 texts   : naive {naive_s / steps:7.3f} s/step   crossgap {lib_s / steps:7.3f} s/step   "
        f"speed-up {naive_s / lib_s:5.2f}x   max |feature difference| {diff:.2e}"
    )


if __name__ == "__main__":
    main()
