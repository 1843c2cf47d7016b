"""Benchmark: a training step with SoftTargetClipLoss vs the same step with open_clip's ClipLoss (the baseline).

One process, one model (``crossgap-tiny`` via ``open_clip.create_model``), batch 256 of random 64-px images and
random token ids. A step is forward + loss + backward + AdamW step. The soft step also looks its teacher embeddings
up in a precomputed bank (4,096 x 1,280 image and 4,096 x 384 text, as :func:`crossgap_lib.teachers.teacher_embeddings`
caches them) by the batch's indices. Steps alternate baseline / soft (ABAB...) so that load from other processes hits
both alike; the medians are compared. ``--intra`` adds IntraModalClipLoss (two extra image views through the image
tower and a 2-layer projection head: more compute by design, printed for information).
``--teachers`` instead measures the image teacher's cost and class-retrieval mAP per input resolution on the
generated shapes dataset (the measurements behind ``ImageTeacher``'s default).

    python benchmarks/bench_losses.py [--steps 10] [--batch 256] [--threads 1] [--intra] [--teachers]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _model(name: str) -> torch.nn.Module:
    import open_clip

    import crossgap_lib.models  # noqa: F401 - registers the crossgap-* configs with open_clip

    return open_clip.create_model(name)


def _timed(step) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def bench_steps(args: argparse.Namespace) -> None:
    from open_clip.loss import ClipLoss

    from crossgap_lib.losses import IntraModalClipLoss, SoftTargetClipLoss

    g = torch.Generator().manual_seed(0)
    model = _model(args.model)
    model.train()
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    context = model.context_length
    images = torch.randn(args.batch, 3, size, size, generator=g)
    tokens = torch.randint(1, 49406, (args.batch, context), generator=g)
    tokens[:, -1] = 49407  # end-of-text: open_clip pools at the argmax id
    bank_image = F.normalize(torch.randn(4096, 1280, generator=g), dim=-1)
    bank_text = F.normalize(torch.randn(4096, 384, generator=g), dim=-1)
    index = torch.randperm(4096, generator=g)[: args.batch]

    head = torch.nn.Sequential(torch.nn.Linear(model.visual.output_dim, 128), torch.nn.ReLU(), torch.nn.Linear(128, 64))
    optimizer = torch.optim.AdamW(list(model.parameters()) + list(head.parameters()), lr=1e-4)
    clip_loss, soft_loss = ClipLoss(), SoftTargetClipLoss(target_temperature=0.05)
    intra_loss = IntraModalClipLoss(intra_weight=1.0, simclr_temperature=0.1)

    def forward():
        out = model(images, tokens)  # normalised features and exp(logit_scale), as open_clip's training feeds ClipLoss
        if isinstance(out, dict):
            return out["image_features"], out["text_features"], out["logit_scale"]
        return out[:3]

    def baseline_step():
        optimizer.zero_grad(set_to_none=True)
        image_features, text_features, logit_scale = forward()
        clip_loss(image_features, text_features, logit_scale).backward()
        optimizer.step()

    def soft_step():
        optimizer.zero_grad(set_to_none=True)
        image_features, text_features, logit_scale = forward()
        soft_loss(image_features, text_features, logit_scale, bank_image[index], bank_text[index]).backward()
        optimizer.step()

    def intra_step():
        optimizer.zero_grad(set_to_none=True)
        image_features, text_features, logit_scale = forward()
        view1 = head(model.encode_image(images.flip(-1)))
        view2 = head(model.encode_image(images.roll(4, dims=-1)))
        intra_loss(image_features, text_features, logit_scale, view1, view2).backward()
        optimizer.step()

    steps = {"ClipLoss (baseline)": baseline_step, "SoftTargetClipLoss": soft_step}
    if args.intra:
        steps["IntraModalClipLoss"] = intra_step
    for step in steps.values():
        for _ in range(args.warmup):
            step()
    times = {name: [] for name in steps}
    for _ in range(args.steps):
        for name, step in steps.items():
            times[name].append(_timed(step))

    # the losses alone (forward + backward on fixed features), to show where the difference sits
    with torch.no_grad():
        fixed = forward()
    leaf_image, leaf_text = (f.detach().requires_grad_() for f in fixed[:2])
    loss_only = {
        "ClipLoss (baseline)": lambda: clip_loss(leaf_image, leaf_text, fixed[2]).backward(),
        "SoftTargetClipLoss": lambda: soft_loss(leaf_image, leaf_text, fixed[2], bank_image[index],
                                                bank_text[index]).backward(),
    }
    loss_times = {name: statistics.median(_timed(fn) for _ in range(20)) for name, fn in loss_only.items()}

    base = statistics.median(times["ClipLoss (baseline)"])
    print(f"model {args.model}, batch {args.batch}, {args.steps} alternating steps each after {args.warmup} warm-up, "
          f"{torch.get_num_threads()} thread(s), device cpu")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:22s} step median {median * 1000:8.1f} ms  (min {min(values) * 1000:7.1f}, "
              f"max {max(values) * 1000:7.1f})  ratio vs baseline {median / base:.3f}")
    for name, value in loss_times.items():
        print(f"  loss only: {name:22s} forward+backward {value * 1000:6.2f} ms")
    print(f"SoftTargetClipLoss / ClipLoss step-time ratio: {statistics.median(times['SoftTargetClipLoss']) / base:.3f} "
          "(target <= 1.05)")


def bench_teachers(args: argparse.Namespace) -> None:
    from crossgap_lib.datasets.shapes import ShapesConfig, make_shapes
    from crossgap_lib.teachers import ImageTeacher, efficientnet_lite0

    model = efficientnet_lite0()

    def class_map(embeddings: torch.Tensor, labels: torch.Tensor) -> float:
        similarity = embeddings @ embeddings.T
        similarity.fill_diagonal_(-float("inf"))
        order = similarity.argsort(dim=1, descending=True)[:, :-1]
        relevant = (labels[order] == labels[:, None]).float()
        precision = relevant.cumsum(1) / torch.arange(1, relevant.shape[1] + 1)
        return ((precision * relevant).sum(1) / relevant.sum(1).clamp(min=1)).mean().item()

    print(f"image teacher EfficientNet-Lite0, {args.teacher_images} shapes images, {torch.get_num_threads()} thread(s)")
    for native, sizes in ((64, (64, 96, 128, 224)), (32, (32, 64, 128))):
        dataset = make_shapes("train", n=args.teacher_images, config=ShapesConfig(image_size=native), seed=1)
        base_ms = None
        for size in sizes:
            teacher = ImageTeacher(model, image_size=size, mean=(0.5,) * 3, std=(0.5,) * 3, batch_size=64)
            teacher.encode(dataset.images[:8])
            start = time.perf_counter()
            embeddings = teacher.encode(dataset.images)
            ms = (time.perf_counter() - start) / len(dataset) * 1000
            base_ms = base_ms or ms
            print(f"  {native:3d}-px images at {size:3d} px: {ms:7.1f} ms/image ({ms / base_ms:5.1f}x the first row), "
                  f"class mAP {class_map(embeddings, dataset.labels):.3f} "
                  f"(chance ~{1 / len(dataset.class_names):.3f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="crossgap-tiny")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per loss (alternating)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (shared machines: keep 1)")
    parser.add_argument("--intra", action="store_true", help="also time IntraModalClipLoss")
    parser.add_argument("--teachers", action="store_true", help="measure the image teacher per resolution instead")
    parser.add_argument("--teacher-images", type=int, default=240)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    (bench_teachers if args.teachers else bench_steps)(args)


if __name__ == "__main__":
    main()
