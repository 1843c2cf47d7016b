"""Forward+backward time of ``encode_text_with_pseudo_tokens`` against a naive full-context reference, same process.

The reference does what the paper's scripts do on every call: tokenise the template to the full 77-token context,
embed all of it, overwrite the placeholder rows with the pseudo tokens and run all 77 positions through the text tower.
The library runs only the tokens up to the end-of-text position (the causal mask makes the result the same).

    python benchmarks/bench_text_encoder.py [--threads 2] [--quick]
"""

from __future__ import annotations

import argparse
import time

import open_clip
import torch

from crossgap_lib.inversion import PLACEHOLDER, encode_text_with_pseudo_tokens
from crossgap_lib.models import LoadedClip


def naive_encode_text(clip: LoadedClip, pseudo_tokens: torch.Tensor, template: str) -> torch.Tensor:
    """Reference: full-context tokenisation and encoding with the placeholder rows replaced (B, R, W) -> (B, D)."""
    model, batch, num_tokens = clip.model, pseudo_tokens.shape[0], pseudo_tokens.shape[1]
    texts = [template.format(" ".join([PLACEHOLDER] * num_tokens))] * batch
    token_ids = clip.tokenizer(texts)  # (B, 77)
    placeholder_id = clip.tokenizer([PLACEHOLDER])[0][1]
    rows, cols = (token_ids == placeholder_id).nonzero(as_tuple=True)
    x = model.token_embedding(token_ids).clone()
    x[rows, cols] = pseudo_tokens.reshape(-1, pseudo_tokens.shape[-1])
    x = x + model.positional_embedding
    x = model.ln_final(model.transformer(x, attn_mask=model.attn_mask))
    return x[torch.arange(batch), token_ids.argmax(dim=-1)] @ model.text_projection


def time_forward_backward(encode, pseudo_tokens: torch.Tensor, repeats: int) -> tuple[float, torch.Tensor]:
    """Median seconds of one forward+backward, and the output of the last run."""
    times = []
    for _ in range(repeats + 1):  # the first run warms up and is not counted
        tokens = pseudo_tokens.detach().clone().requires_grad_()
        start = time.perf_counter()
        out = encode(tokens)
        out.sum().backward()
        times.append(time.perf_counter() - start)
    return sorted(times[1:])[len(times[1:]) // 2], out.detach()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="one timed repeat instead of five")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    model = open_clip.create_model("ViT-B-32").eval().requires_grad_(False)  # random weights, frozen as in OTI
    clip = LoadedClip(model, None, open_clip.get_tokenizer("ViT-B-32"), "ViT-B-32", None)
    template, repeats = "a photo of {}", 1 if args.quick else 5
    pseudo_tokens = 0.02 * torch.randn(args.batch_size, 1, model.token_embedding.weight.shape[1])

    naive_s, naive_out = time_forward_backward(lambda t: naive_encode_text(clip, t, template), pseudo_tokens, repeats)
    lib_s, lib_out = time_forward_backward(
        lambda t: encode_text_with_pseudo_tokens(clip, t, template), pseudo_tokens, repeats
    )
    print(
        f"ViT-B-32 (random weights) text tower, batch {args.batch_size}, template {template!r}, "
        f"{args.threads} threads, median of {repeats}"
    )
    print(f"naive full context (77 tokens): {naive_s * 1e3:8.1f} ms per forward+backward")
    print(f"crossgap (truncated at EOT)   : {lib_s * 1e3:8.1f} ms per forward+backward")
    print(f"speed-up: {naive_s / lib_s:.2f}x   max |difference| of outputs: {(naive_out - lib_out).abs().max():.2e}")


if __name__ == "__main__":
    main()
