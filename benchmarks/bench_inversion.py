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


def timed(run, steps: int, repeats: int):
    """Best-of-``repeats`` seconds per step of ``run(steps)`` after a 1-step warm-up, and the last run's output."""
    run(1)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = run(steps)
        times.append((time.perf_counter() - start) / steps)
    return min(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="2 steps, one timed run instead of best of 2")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    steps, repeats = (2, 1) if args.quick else (10, 2)

    model = open_clip.create_model("ViT-B-32").eval().requires_grad_(False)  # random weights
    clip = LoadedClip(model, None, open_clip.get_tokenizer("ViT-B-32"), "ViT-B-32", None)
    text_width, vision_width = model.token_embedding.weight.shape[1], model.visual.conv1.out_channels
    with torch.no_grad():
        image_features = model.encode_image(torch.randn(16, 3, 224, 224))
        words = ["dog", "cat", "car", "tree", "house", "boat", "bird", "lamp"]
        text_features = model.encode_text(clip.tokenizer([f"a photo of a {w}" for w in words]))
    print(f"ViT-B-32 (random weights), {args.threads} threads, {steps} steps per run, best of {repeats} after warm-up")

    naive = lambda n: naive_inversion(
        lambda t: naive_encode_text(clip, t, "a photo of {}"), image_features, text_width, n
    )
    naive_s, naive_feats = timed(naive, steps, repeats)
    lib_s, result = timed(lambda n: oti(clip, image_features, steps=n, batch_size=16, progress=False), steps, repeats)
    diff = (naive_feats - result.features).abs().max()
    print(
        f"OTI, 16 images : naive {naive_s:7.3f} s/step   crossgap {lib_s:7.3f} s/step   "
        f"speed-up {naive_s / lib_s:5.2f}x   max |feature difference| {diff:.2e}"
    )
    print(
        f"OTI throughput at 150 steps (extrapolated from the {steps} measured steps): "
        f"{16 / (lib_s * 150):.3f} images/s (naive: {16 / (naive_s * 150):.3f} images/s)"
    )

    naive = lambda n: naive_inversion(lambda t: naive_encode_image(model, t), text_features, vision_width, n)
    naive_s, naive_feats = timed(naive, steps, repeats)
    lib_s, result = timed(lambda n: ovi(clip, text_features, steps=n, batch_size=8, progress=False), steps, repeats)
    diff = (naive_feats - result.features).abs().max()
    print(
        f"OVI, 8 texts   : naive {naive_s:7.3f} s/step   crossgap {lib_s:7.3f} s/step   "
        f"speed-up {naive_s / lib_s:5.2f}x   max |feature difference| {diff:.2e}"
    )


if __name__ == "__main__":
    main()
