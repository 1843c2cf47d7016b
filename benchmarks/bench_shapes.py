"""Images/second of ``make_shapes`` (vectorised numpy, captions included) against a naive per-image PIL reference.

Usage: ``python benchmarks/bench_shapes.py [--n 5000] [--size 64] [--reference-n 1000]``. Both run in this process on
one thread, timed by wall clock and by process CPU time (the fair number when other jobs share the cores). The
reference draws each image on its own with ``PIL.ImageDraw`` (background colour, a linear ramp, distractors and the
rotated main shape as polygons, Gaussian noise): PIL's C rasteriser is fast, and the reference skips textures, fill
patterns and captions, so the ratio compares throughput, not equal work.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
shapes = importlib.import_module("crossgap_lib.datasets.shapes")

VERTICES = {"circle": 32, "square": 4, "triangle": 3, "star": 10}


def _polygon(shape: str, cx: float, cy: float, radius: float, angle: float) -> list[tuple[float, float]]:
    n = VERTICES[shape]
    radii = [radius * (0.45 if shape == "star" and k % 2 else 1.0) for k in range(n)]
    return [(cx + r * np.sin(angle + 2 * np.pi * k / n), cy - r * np.cos(angle + 2 * np.pi * k / n))
            for k, r in enumerate(radii)]


def naive_reference(n: int, config, seed: int = 0) -> torch.Tensor:
    """Per-image PIL ImageDraw rendering of comparable scenes: uint8 (n, 3, S, S)."""
    rng, size = np.random.default_rng(seed), config.image_size
    backgrounds, colours = list(shapes.BACKGROUND_RGB.values()), [shapes.COLOUR_RGB[c] for c in config.colours]
    ramp = np.linspace(-45, 45, size, dtype=np.float32)
    images = np.empty((n, 3, size, size), np.uint8)
    for i in range(n):
        image = Image.new("RGB", (size, size), backgrounds[rng.integers(len(backgrounds))])
        draw = ImageDraw.Draw(image)
        for _ in range(rng.integers(config.max_distractors + 1)):
            draw.polygon(_polygon(config.shapes[rng.integers(len(config.shapes))], *rng.uniform(0, size, 2),
                                  size * 0.06, rng.uniform(0, 2 * np.pi)), fill=colours[rng.integers(len(colours))])
        draw.polygon(_polygon(config.shapes[rng.integers(len(config.shapes))], *rng.uniform(0.3, 0.7, 2) * size,
                              size * rng.choice([0.16, 0.24, 0.32]), rng.uniform(0, 2 * np.pi)),
                     fill=colours[rng.integers(len(colours))])
        noise = rng.normal(0, config.pixel_noise, (size, size, 3))
        pixels = np.asarray(image, np.float32) + ramp[None, :, None] + noise
        images[i] = np.clip(pixels, 0, 255).astype(np.uint8).transpose(2, 0, 1)
    return torch.from_numpy(images)


def _timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--reference-n", type=int, default=1000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = shapes.ShapesConfig(image_size=args.size)

    shapes.make_shapes("train", n=64, config=config)  # warm-up
    fast, fast_wall, fast_cpu = _timed(lambda: shapes.make_shapes("train", n=args.n, config=config, seed=1))
    reference, reference_wall, reference_cpu = _timed(lambda: naive_reference(args.reference_n, config))
    assert fast.images.shape == (args.n, 3, args.size, args.size) and reference.shape[0] == args.reference_n

    print("rates in images/s; wall time is inflated when other processes share the cores, CPU time is not")
    for name, n, wall, cpu, note in (("make_shapes", args.n, fast_wall, fast_cpu, "captions included"),
                                     ("naive PIL reference", args.reference_n, reference_wall, reference_cpu,
                                      "no captions, textures or patterns")):
        print(f"{name:20s} {n:5d} images at {args.size}px: wall {n / wall:7.0f}  CPU {n / cpu:7.0f}  ({note})")
    fast_rate = args.n / fast_cpu
    print(f"ratio make_shapes / reference: wall {(args.n / fast_wall) / (args.reference_n / reference_wall):.2f}x, "
          f"CPU {fast_rate / (args.reference_n / reference_cpu):.2f}x")
    print(f"target >= 1000 images/s (CPU time, one thread): {'met' if fast_rate >= 1000 else 'NOT met'}")

if __name__ == "__main__":
    main()
