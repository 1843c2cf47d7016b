"""Where a laboratory model's time goes, and what the laboratory's speed choices buy, measured in one run.

Part 1 prints, per kind of lab model (trained from scratch with each loss, and fine-tuned), the seconds spent on
data (generating the images, teacher embeddings for the soft loss), training, OTI, OVI, one OTI curve and the rest
of the evaluation, with the LabConfig of the default book (or a quick one with ``--quick``).

Part 2 prints ratios against a baseline run in the same invocation:
- the ``intra`` loss with its CLIP image taken from the first augmented view (2 image forwards per step) against a
  separate clean image (3 forwards), same process;
- a fine-tuning step with a fused AdamW against the per-tensor one (crossgap-small's full token embedding);
- a fine-tuning batch of lab images made in one vectorised step against item by item through the PIL preprocess,
  and captions tokenized once against tokenized every step;
- training throughput on two idle cores: two single-thread processes side by side (how the laboratory evaluates
  its models, ``evaluation._units_in_parallel``) against one process with two threads;
- a training step while a second CPU-bound process runs: 2 OpenMP threads spinning (``OMP_WAIT_POLICY=ACTIVE``,
  the OpenMP default) or sleeping (``PASSIVE``) against 1 thread, what the laboratory picks there
  (``lab.free_cores``); and on an idle machine, 2 sleeping threads against 2 spinning ones (why crossgap keeps the
  default policy and sizes threads instead). The policy is read when torch loads, so each runs in a fresh
  subprocess, timed the same way.

    python benchmarks/bench_lab.py [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace

import torch

from crossgap_lib.lab import LabConfig


@contextlib.contextmanager
def timed(row: dict, phase: str):
    """Add the block's wall-clock seconds to ``row[phase]``."""
    start = time.perf_counter()
    try:
        yield
    finally:
        row[phase] = row.get(phase, 0.0) + time.perf_counter() - start


def breakdown(config: LabConfig, cache: str) -> list[dict]:
    """Seconds per phase for one seed of every setting of ``config`` (cold: a fresh cache folder)."""
    from crossgap_lib import pipeline
    from crossgap_lib.datasets.shapes import make_shapes
    from crossgap_lib.dynamics import log_steps, oti_curve
    from crossgap_lib.finetune import finetune_clip
    from crossgap_lib.teachers import ImageTeacher, TextTeacher, teacher_embeddings
    from crossgap_lib.train import train_clip, training_dataset

    rows, trained = [], {}
    for setting in config.settings:
        seed = config.seeds_of(setting)[0]
        base = next(s for s in config.settings if s["name"] == setting["finetune"]["from"]) \
            if "finetune" in setting else setting
        train_config = replace(config.train_config(base, seed), out_dir=cache, progress=False)
        row = {"setting": setting["name"], "OVI": 0.0, "OTI curve": 0.0}
        with timed(row, "data"):
            dataset = training_dataset(train_config)  # generated once per process, then remembered
        loss = setting.get("finetune", {}).get("loss", train_config.loss)
        if loss == "soft":
            with timed(row, "data"):
                teacher_embeddings(dataset, image_teacher=ImageTeacher(), text_teacher=TextTeacher(), cache_dir=cache)
        with timed(row, "training"):
            if "finetune" in setting:
                clip = finetune_clip(trained[base["name"]], dataset,
                                     replace(config.finetune_config(setting, seed), progress=False),
                                     cache_dir=cache, progress=False).clip
            else:
                clip = trained[setting["name"]] = train_clip(train_config, progress=False).load()
        data = {**config.data, **config.eval_data}
        test = make_shapes("test", n=config.n_test, config=data, seed=config.data_seed)
        gallery = make_shapes("val", n=config.n_gallery, config=data, seed=config.data_seed)
        with timed(row, "evaluation (encode)"):
            queries = pipeline.encode_images(clip, test)
            gallery_features = pipeline.encode_images(clip, gallery)
        with timed(row, "OTI"):
            pipeline.invert_dataset(clip, "oti", queries, config=config.inversion("oti"))
        if "text" in config.tasks_of(setting):
            texts = pipeline.encode_texts(clip, [c[0] for c in test.captions[: config.ovi_queries]])
            with timed(row, "OVI"):
                pipeline.invert_dataset(clip, "ovi", texts, config=config.inversion("ovi"))
        curve = config.oti_curve
        if curve is not None and curve["setting"] == setting["name"]:
            n = curve["queries"]
            steps = log_steps(curve["steps"]) if curve["record"] == "log" else None
            with timed(row, "OTI curve"):
                oti_curve(clip, queries[:n], gallery_features, test.labels[:n], gallery.labels,
                          num_pseudo_tokens=curve["focus"], steps=curve["steps"], record_every=1, record_steps=steps)
        rows.append(row)
    return rows


def _batch_inputs(steps: int) -> tuple[float, float, float, float]:
    """Seconds per fine-tuning batch of 128 lab images and captions: (images item by item through the model's PIL
    preprocess, images in one vectorised step, captions tokenized every step, captions looked up once tokenized)."""
    import open_clip

    from crossgap_lib import pipeline
    from crossgap_lib.cache import encode_distinct
    from crossgap_lib.datasets.shapes import make_shapes, to_model_input

    dataset = make_shapes("train", n=1024, seed=0)
    preprocess = open_clip.image_transform(64, is_train=False)
    tokenizer = open_clip.get_tokenizer("crossgap-small")
    inputs = pipeline._ModelInputs(dataset, preprocess, (64, 64))
    mean, std = open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD
    flat = [c for captions in dataset.captions for c in captions]
    memo: dict = {}
    encode_distinct(flat, tokenizer, memo)  # fine-tuning's memo once every caption has been seen
    batches = [torch.randint(0, 1024, (128,), generator=torch.Generator().manual_seed(k)) for k in range(steps)]
    texts = [[flat[int(i) * len(dataset.captions[0])] for i in index] for index in batches]
    timings = []
    for make in (lambda k: torch.stack([inputs[int(i)] for i in batches[k]]),
                 lambda k: to_model_input(dataset.images[batches[k]], mean, std),
                 lambda k: tokenizer(texts[k]),
                 lambda k: encode_distinct(texts[k], tokenizer, memo)):
        start = time.perf_counter()
        for k in range(steps):
            make(k)
        timings.append((time.perf_counter() - start) / steps)
    return tuple(timings)


def _intra_steps(clean_image: bool, steps: int) -> float:
    """Seconds per step of the intra loss's forward + backward, with or without a separate clean CLIP image."""
    import open_clip

    from crossgap_lib.losses import IntraModalClipLoss
    from crossgap_lib.models import quiet_random_init
    from crossgap_lib.train import ProjectionHead, _Trainee

    torch.manual_seed(0)
    with quiet_random_init():
        clip = open_clip.create_model("crossgap-small")
    trainee = _Trainee(clip, ProjectionHead(64, 64))
    loss_fn = IntraModalClipLoss()
    images, views = torch.randn(128, 3, 64, 64), torch.randn(256, 3, 64, 64)
    tokens = torch.randint(1, 400, (128, 16))

    def step():
        out = trainee(images if clean_image else None, tokens, views)
        view_a, view_b = out["view_projections"].chunk(2)
        loss_fn(out["image_features"], out["text_features"], out["logit_scale"], view_a, view_b).backward()

    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


_CHILD = """
import time, torch, open_clip
import crossgap_lib.models
from open_clip import ClipLoss
torch.set_num_threads({threads})
m = open_clip.create_model("crossgap-small")
opt = torch.optim.AdamW(m.parameters(), lr=1e-3, fused={fused})
img, tok = torch.randn(128, 3, 64, 64), torch.randint(1, 400, (128, 16))
def step():
    loss = ClipLoss()(m.encode_image(img, normalize=True), m.encode_text(tok, normalize=True), m.logit_scale.exp())
    opt.zero_grad(); loss.backward(); opt.step()
step()
start = time.perf_counter()
for _ in range({steps}):
    step()
print((time.perf_counter() - start) / {steps})
"""


def _busy(seconds: float) -> None:
    end = time.time() + seconds
    x = 0
    while time.time() < end:
        x += 1


def _step_in_child(policy: str, threads: int, steps: int, beside_busy: bool, fused: bool = False) -> float:
    """Seconds per CLIP-loss step of crossgap-small (its full 49408-row token embedding, as fine-tuning trains it)
    in a fresh subprocess with ``OMP_WAIT_POLICY=policy`` and ``threads`` threads, alone or beside a busy process (the
    policy is read when torch loads, hence the subprocess), with a per-tensor or a ``fused`` AdamW."""
    busy = multiprocessing.Process(target=_busy, args=(600,)) if beside_busy else None
    if busy is not None:
        busy.start()
    try:
        env = {**os.environ, "OMP_WAIT_POLICY": policy, "OMP_NUM_THREADS": str(threads)}
        out = subprocess.run([sys.executable, "-c", _CHILD.format(steps=steps, threads=threads, fused=fused)], env=env,
                             capture_output=True, text=True, check=True)
        return float(out.stdout.strip().splitlines()[-1])
    finally:
        if busy is not None:
            busy.terminate()
            busy.join()


def _two_single_thread_children(steps: int) -> float:
    """Seconds per step of each of two single-thread processes training side by side (the laboratory's workers)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    children = [subprocess.Popen([sys.executable, "-c", _CHILD.format(steps=steps, threads=1, fused=False)], env=env,
                                 stdout=subprocess.PIPE, text=True) for _ in range(2)]
    return sum(float(child.communicate()[0].strip().splitlines()[-1]) for child in children) / 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="toy sizes (seconds), for `make bench`")
    args = parser.parse_args()
    config = LabConfig()
    if args.quick:
        config = LabConfig(settings=[{"name": "clip", "loss": "clip"},
                                     {"name": "intra", "loss": "intra", "tasks": ["image"]},
                                     {"name": "clip ft T=1", "finetune": {"from": "clip", "temperature": 1.0},
                                      "tasks": ["image"]}],
                           seeds=[0], train={"n_train": 256, "epochs": 1, "batch_size": 64, "warmup": 1},
                           finetune={"steps": 2, "batch_size": 64, "warmup": 1}, n_test=64, n_gallery=128,
                           oti={"steps": 10}, ovi={"steps": 10}, ovi_queries=16,
                           oti_curve={"setting": "clip", "seeds": [0], "num_pseudo_tokens": [1], "focus": 1,
                                      "steps": 20, "record": "log", "queries": 16})
    torch.set_num_threads(config.num_threads)
    with tempfile.TemporaryDirectory() as cache:
        rows = breakdown(config, cache)
    phases = ["data", "training", "OTI", "OVI", "OTI curve", "evaluation (encode)"]
    print(f"{'setting':<24}" + "".join(f"{p:>21}" for p in phases) + f"{'total':>10}")
    for row in rows:
        print(f"{row['setting']:<24}" + "".join(f"{row[p]:>20.1f}s" for p in phases)
              + f"{sum(row[p] for p in phases):>9.1f}s")
    steps = 3 if args.quick else 10
    three, two = _intra_steps(True, steps), _intra_steps(False, steps)
    print(f"intra loss step: 3 image forwards {1000 * three:.0f} ms, 2 forwards {1000 * two:.0f} ms "
          f"-> ratio {three / two:.2f}x")
    per_tensor, fused = _step_in_child("ACTIVE", 2, steps, False), _step_in_child("ACTIVE", 2, steps, False, True)
    print(f"fine-tuning step, full vocabulary: per-tensor AdamW {1000 * per_tensor:.0f} ms, fused "
          f"{1000 * fused:.0f} ms -> ratio {per_tensor / fused:.2f}x")
    itemwise, vectorised, tokenize, lookup = _batch_inputs(steps)
    print(f"fine-tuning batch of 128 lab images: item by item {1000 * itemwise:.1f} ms, vectorised "
          f"{1000 * vectorised:.1f} ms -> ratio {itemwise / vectorised:.1f}x; captions: tokenized each step "
          f"{1000 * tokenize:.1f} ms, tokenized once {1000 * lookup:.2f} ms -> ratio {tokenize / lookup:.0f}x")
    two_threads, side_by_side = _step_in_child("ACTIVE", 2, steps, False), _two_single_thread_children(steps)
    print(f"training throughput on 2 idle cores: one process with 2 threads {1 / two_threads:.1f} steps/s, two "
          f"single-thread processes side by side {2 / side_by_side:.1f} steps/s -> ratio "
          f"{two_threads * 2 / side_by_side:.2f}x (the laboratory's worker processes)")
    spin_busy, one_busy = _step_in_child("ACTIVE", 2, steps, True), _step_in_child("ACTIVE", 1, steps, True)
    sleep_busy = _step_in_child("PASSIVE", 2, steps, True)
    print(f"training step beside a busy process: 2 spinning threads {1000 * spin_busy:.0f} ms, 2 sleeping threads "
          f"{1000 * sleep_busy:.0f} ms, 1 thread (what free_cores() picks) {1000 * one_busy:.0f} ms -> ratios "
          f"{spin_busy / one_busy:.2f}x and {sleep_busy / one_busy:.2f}x")
    spin_idle, sleep_idle = _step_in_child("ACTIVE", 2, steps, False), _step_in_child("PASSIVE", 2, steps, False)
    print(f"training step on an idle machine, 2 threads: sleeping {1000 * sleep_idle:.0f} ms, spinning (the OpenMP "
          f"default, which crossgap keeps) {1000 * spin_idle:.0f} ms -> ratio {sleep_idle / spin_idle:.2f}x")


if __name__ == "__main__":
    main()
