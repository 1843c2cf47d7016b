"""Benchmark: crossgap_lib.metrics.retrieval_scores vs a per-query torchmetrics loop (the paper's way).

Random L2-normalised features (D=64), labels from 100 classes, 20,000 queries x 20,000 gallery items by default
(``--quick``: 4,000 x 4,000). The baseline loop (one ``torchmetrics.functional.retrieval_average_precision`` call per
query on a precomputed similarity row) is timed on the first ``--loop-queries`` queries only and extrapolated
linearly to all queries; the library runs on all of them. Prints both times, their ratio, the largest difference of
per-query AP and of mAP on the shared queries, the peak memory of the chunks, and a clearly labelled estimate for
the paper's largest case (ImageNet: 50,000 queries x 1.28M gallery items) on one GPU.

    python benchmarks/bench_metrics.py [--quick] [--threads 1] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import math
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from crossgap_lib.metrics import auto_chunk_size, retrieval_scores


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="4,000 x 4,000 instead of 20,000 x 20,000")
    parser.add_argument("--n", type=int, default=None, help="queries = gallery items (overrides --quick)")
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--chunk-size", type=int, default=None, help="queries per chunk (default: auto)")
    parser.add_argument("--loop-queries", type=int, default=300, help="queries timed in the baseline loop")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (shared machines: keep 1)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    from torchmetrics.functional.retrieval import retrieval_average_precision

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    n = args.n or (4_000 if args.quick else 20_000)
    g = torch.Generator().manual_seed(0)
    # CLIP-like features: a shared direction (all cosines > 0, as between CLIP image features; torchmetrics treats
    # items with a score <= 0 as non-relevant), a weak class signal and Gaussian noise, L2-normalised
    shared = torch.nn.functional.normalize(torch.randn(args.dim, generator=g), dim=0) * args.dim**0.5
    centers = torch.randn(args.classes, args.dim, generator=g) * 0.4

    def make(n_items: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.randint(0, args.classes, (n_items,), generator=g)
        raw = torch.randn(n_items, args.dim, generator=g) + shared + centers[labels]
        return torch.nn.functional.normalize(raw, dim=1).to(device), labels.to(device)

    query_features, query_labels = make(n)
    gallery_features, gallery_labels = make(n)
    chunk_size = auto_chunk_size(n, args.chunk_size)
    print(f"{n} queries x {n} gallery, {args.classes} classes, D={args.dim}, device={device}, "
          f"threads={torch.get_num_threads()}, chunk_size={chunk_size}")

    # --- library, all queries
    rss_before = _rss_mib()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        cuda_before = torch.cuda.memory_allocated()
    _sync(device)
    t0 = time.perf_counter()
    result = retrieval_scores(query_features, gallery_features, query_labels, gallery_labels,
                              ks=(1,), chunk_size=chunk_size, per_query=True)
    _sync(device)
    t_lib = time.perf_counter() - t0
    if device.type == "cuda":
        peak_mib = (torch.cuda.max_memory_allocated() - cuda_before) / 2**20
        peak_how = "torch.cuda.max_memory_allocated above the inputs"
    else:
        peak_mib = _rss_mib() - rss_before
        peak_how = "growth of the process's peak RSS (ru_maxrss) during the run"

    # --- baseline: per-query torchmetrics loop on a subset, extrapolated
    m = min(args.loop_queries, n)
    _sync(device)
    t0 = time.perf_counter()
    similarities = query_features[:m] @ gallery_features.T
    n_nonpositive = int((similarities <= 0).sum())
    baseline_ap = []
    for i in range(m):
        target = gallery_labels == query_labels[i]
        baseline_ap.append(float(retrieval_average_precision(similarities[i], target)))
    _sync(device)
    t_loop_subset = time.perf_counter() - t0
    t_loop = t_loop_subset * n / m

    lib_ap = result["per_query"]["AP"][:m]
    base_ap = torch.tensor(baseline_ap, dtype=torch.float64)
    print(f"library          : {t_lib:8.2f} s  (all {n} queries)  mAP={result['mAP']:.6f}")
    print(f"torchmetrics loop: {t_loop:8.2f} s  (extrapolated from {m} queries timed: {t_loop_subset:.2f} s)")
    print(f"speed-up ratio   : {t_loop / t_lib:8.1f} x   (target >= 10x)")
    print(f"max |AP diff| per query on the {m} shared queries: {float((lib_ap - base_ap).abs().max()):.2e}; "
          f"|mAP diff| on them: {abs(float(lib_ap.mean() - base_ap.mean())):.2e}")
    print(f"non-positive scores among the shared queries (torchmetrics would drop them): {n_nonpositive}")
    print(f"peak memory of the chunks: {peak_mib:.0f} MiB ({peak_how}); "
          f"size formula ~13 B x chunk x gallery = {13 * chunk_size * n / 2**20:.0f} MiB")

    # --- estimate for ImageNet (paper's largest case)
    pairs = n * n
    throughput = pairs / t_lib  # scored (query, gallery) pairs per second, measured here
    big_q, big_n, big_r, big_d = 50_000, 1_281_167, 1_281, 768
    log_ratio = math.log2(big_r + 1) / math.log2(n / args.classes + 1)  # searchsorted depth grows with log R
    print("\nESTIMATE (not measured) for ImageNet retrieval: 50,000 queries x 1,281,167 gallery, R ~ 1,281, D=768")
    print(f"  measured throughput here: {throughput / 1e6:.1f} M pairs/s on {device} with {torch.get_num_threads()} "
          f"thread(s)")
    t_here = big_q * big_n / throughput * log_ratio
    print(f"  same device, scaled by pairs and by log2 R ({log_ratio:.2f}x): ~{t_here / 3600:.1f} h "
          "(matmul cost at D=768 not included)")
    if device.type == "cuda":
        print(f"  this is a GPU: ~{t_here / 60:.1f} min on it under the same scaling")
    else:
        # assumptions: memory bound; per pair ~ 4 B score write + 4 B read by searchsorted + 8 B position write
        # + 8 B read by bincount + 8 B offset add (r+w) ~ 40 B; H100 HBM3 3.35 TB/s at 40 % efficiency;
        # matmul 2*D FLOP per pair at 50 TFLOP/s (TF32); chunks of 64 queries x 1.28M = 1 GB of working memory.
        bytes_per_pair, bandwidth, efficiency, flops = 40, 3.35e12, 0.4, 50e12
        t_mem = big_q * big_n * bytes_per_pair / (bandwidth * efficiency)
        t_mm = 2 * big_d * big_q * big_n / flops
        print(f"  one H100, assuming memory-bound ranking (~{bytes_per_pair} B/pair at {efficiency:.0%} of "
              f"3.35 TB/s) plus a TF32 matmul at 50 TFLOP/s: ~{t_mem + t_mm:.0f} s "
              f"({t_mem:.0f} s ranking + {t_mm:.0f} s matmul); chunk_size ~64 keeps chunks near 1 GB")


if __name__ == "__main__":
    main()
