"""Benchmark: crossgap_lib.metrics.retrieval_scores vs per-query torchmetrics loops (the paper's way).

Data: 20,000 queries x 20,000 gallery items (``--quick``: 4,000 x 4,000), 100 classes, D=64, L2-normalised
CLIP-like random features (a shared direction keeps every cosine positive, as between CLIP image features; a weak
class signal makes the rankings non-trivial).

Baselines, each timed on the first ``--loop-queries`` queries only (twice, before and after the library run; the
faster run is kept) and extrapolated linearly to all queries:
  * ``AP loop``: one ``torchmetrics.functional.retrieval_average_precision`` call per query on a precomputed
    similarity row (the similarity matmul is timed too);
  * ``4-metric loop``: what the library returns in one call, per query: torchmetrics AP, R-precision and hit-rate@1
    plus AP@R from a top-R sort (this loop is our own code, written for the comparison).
The library runs on all queries (on CPU through its numba-compiled loop; on CUDA through tensor operations).
Printed: both times, the ratios, the largest per-query differences against torchmetrics, the peak memory of the
chunks, and a clearly labelled estimate for the paper's largest case (ImageNet: 50,000 queries x 1,281,167 gallery
items) on one GPU.

    python benchmarks/bench_metrics.py [--quick] [--threads 1] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from crossgap_lib.metrics import _compiled_count_positions, auto_chunk_size, retrieval_scores

# assumptions of the GPU estimate (see the printout)
GPU_BANDWIDTH = 3.35e12  # bytes/s, H100 SXM HBM3
GPU_EFFICIENCY = 0.4  # fraction of peak bandwidth reached by the elementwise / gather passes
GPU_MATMUL_FLOPS = 50e12  # TF32 matmul throughput reached
BYTES_PER_PAIR = 90  # memory traffic of the ranking passes per (query, gallery) pair, counted from the code
GPU_CHUNK = 64  # queries per chunk on the GPU (64 x 1.28M pairs ~ 1.6 GB of working memory)
GPU_CHUNK_OVERHEAD = 60 * 10e-6  # ~60 kernel launches of ~10 us per chunk


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _make_data(n: int, dim: int, n_classes: int, device: torch.device):
    g = torch.Generator().manual_seed(0)
    shared = torch.nn.functional.normalize(torch.randn(dim, generator=g), dim=0) * 1.5 * dim**0.5
    centers = torch.randn(n_classes, dim, generator=g) * 0.4

    def make() -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.randint(0, n_classes, (n,), generator=g)
        raw = torch.randn(n, dim, generator=g) + shared + centers[labels]
        return torch.nn.functional.normalize(raw, dim=1).to(device), labels.to(device)

    return (*make(), *make())


def _ap_loop(query_features, gallery_features, query_labels, gallery_labels, m):
    from torchmetrics.functional.retrieval import retrieval_average_precision

    similarities = query_features[:m] @ gallery_features.T
    return [float(retrieval_average_precision(similarities[i], gallery_labels == query_labels[i])) for i in range(m)]


def _four_metric_loop(query_features, gallery_features, query_labels, gallery_labels, m):
    from torchmetrics.functional.retrieval import (
        retrieval_average_precision,
        retrieval_hit_rate,
        retrieval_r_precision,
    )

    similarities = query_features[:m] @ gallery_features.T
    out = []
    for i in range(m):
        row, target = similarities[i], gallery_labels == query_labels[i]
        n_rel = int(target.sum())
        ap = float(retrieval_average_precision(row, target))
        p_at_r = float(retrieval_r_precision(row, target))
        hit_at_1 = float(retrieval_hit_rate(row, target, top_k=1))
        top = target[row.topk(n_rel).indices].double()
        ap_at_r = float((top.cumsum(0) / torch.arange(1, n_rel + 1, device=row.device) * top).sum() / n_rel)
        out.append((ap, ap_at_r, p_at_r, hit_at_1))
    return out


def _timed(device, fn, *args):
    _sync(device)
    t0 = time.perf_counter()
    out = fn(*args)
    _sync(device)
    return out, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="4,000 x 4,000 instead of 20,000 x 20,000")
    parser.add_argument("--n", type=int, default=None, help="queries = gallery items (overrides --quick)")
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--chunk-size", type=int, default=None, help="queries per chunk (default: auto)")
    parser.add_argument("--loop-queries", type=int, default=200, help="queries timed in the AP loop")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (shared machines: keep 1)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    n = args.n or (4_000 if args.quick else 20_000)
    query_features, query_labels, gallery_features, gallery_labels = _make_data(n, args.dim, args.classes, device)
    chunk_size = auto_chunk_size(n, args.chunk_size) if device.type == "cpu" else (args.chunk_size or 256)
    m = min(args.loop_queries, n)
    m4 = max(1, m // 2)
    path = "numba-compiled loop" if device.type == "cpu" and _compiled_count_positions() else "tensor operations"
    print(f"{n} queries x {n} gallery, {args.classes} classes, D={args.dim}, device={device}, "
          f"threads={torch.get_num_threads()}, chunk_size={chunk_size}, ranking by {path}")

    loops = {"AP": [], "4-metric": []}
    ap_base, t = _timed(device, _ap_loop, query_features, gallery_features, query_labels, gallery_labels, m)
    loops["AP"].append(t)
    four_base, t = _timed(device, _four_metric_loop, query_features, gallery_features, query_labels, gallery_labels, m4)
    loops["4-metric"].append(t)

    warm = 2 * chunk_size  # warm-up on two chunks: the timed run starts with the allocator and caches primed
    _, t_warm = _timed(device, retrieval_scores, query_features[:warm], gallery_features, query_labels[:warm],
                       gallery_labels, (False), (1,), chunk_size)
    rss_before = _rss_mib()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        cuda_before = torch.cuda.memory_allocated()
    result, t_lib = _timed(device, lambda: retrieval_scores(query_features, gallery_features, query_labels,
                                                            gallery_labels, ks=(1,), chunk_size=chunk_size,
                                                            per_query=True))
    if device.type == "cuda":
        peak_mib = (torch.cuda.max_memory_allocated() - cuda_before) / 2**20
        peak_how = "torch.cuda.max_memory_allocated above the inputs"
    else:
        peak_mib = _rss_mib() - rss_before
        peak_how = "growth of the process's peak RSS during the run"

    loops["AP"].append(_timed(device, _ap_loop, query_features, gallery_features, query_labels, gallery_labels, m)[1])
    loops["4-metric"].append(_timed(device, _four_metric_loop, query_features, gallery_features, query_labels,
                                    gallery_labels, m4)[1])
    t_ap = min(loops["AP"]) * n / m
    t_four = min(loops["4-metric"]) * n / m4

    per_query = result["per_query"]
    ap_diff = (per_query["AP"][:m] - torch.tensor(ap_base, dtype=torch.float64)).abs()
    four = torch.tensor(four_base, dtype=torch.float64)
    four_diff = {key: float((per_query[key][:m4] - four[:, i]).abs().max())
                 for i, key in enumerate(("AP", "AP@R", "P@R", "R@1"))}
    print(f"library        : {t_lib:8.2f} s  (all {n} queries: mAP, mAP@R, P@R, R@1)  mAP={result['mAP']:.6f}")
    print(f"AP loop        : {t_ap:8.2f} s  (extrapolated from {m} queries, best of 2 runs: "
          f"{min(loops['AP']):.2f} s)")
    print(f"4-metric loop  : {t_four:8.2f} s  (extrapolated from {m4} queries, best of 2 runs: "
          f"{min(loops['4-metric']):.2f} s)")
    print(f"warm-up call on {warm} queries: {t_warm:.2f} s (includes loading or compiling the numba loop once per "
          f"process); ratio vs AP loop counting it: {t_ap / (t_lib + t_warm):.1f} x")
    print(f"ratio vs AP loop      : {t_ap / t_lib:6.1f} x   (target >= 10x)")
    print(f"ratio vs 4-metric loop: {t_four / t_lib:6.1f} x")
    n_nonpositive = int(((query_features[:m] @ gallery_features.T) <= 0).sum())
    print(f"non-positive similarities among the compared queries (torchmetrics drops such items): {n_nonpositive}")
    print(f"max |AP diff| per query vs torchmetrics on {m} queries: {float(ap_diff.max()):.2e}; "
          f"|mAP diff| on them: {abs(float(per_query['AP'][:m].mean()) - sum(ap_base) / m):.2e}")
    print("max |diff| vs the 4-metric loop: " + ", ".join(f"{k} {v:.1e}" for k, v in four_diff.items()))
    print(f"peak memory of the chunks: {peak_mib:.0f} MiB ({peak_how}); "
          f"working set ~30 B x chunk x gallery = {30 * chunk_size * n / 2**20:.0f} MiB")

    # --- estimate for ImageNet (the paper's largest case)
    pairs = n * n
    throughput = pairs / t_lib
    big_q, big_n, big_d = 50_000, 1_281_167, 768
    big_pairs = big_q * big_n
    print("\nESTIMATE, not a measurement: ImageNet retrieval, 50,000 queries x 1,281,167 gallery items, D=768")
    print(f"  measured here: {throughput / 1e6:.1f} M pairs/s ({device}, {torch.get_num_threads()} thread(s), "
          f"D={args.dim}); at that rate: ~{big_pairs / throughput / 3600:.1f} h (the D=768 matmul would add more)")
    if device.type == "cuda":
        print(f"  this device is a GPU: ~{big_pairs / throughput / 60:.1f} min at the measured rate")
    t_mem = big_pairs * BYTES_PER_PAIR / (GPU_BANDWIDTH * GPU_EFFICIENCY)
    t_mm = 2 * big_d * big_pairs / GPU_MATMUL_FLOPS
    t_launch = big_q / GPU_CHUNK * GPU_CHUNK_OVERHEAD
    print(f"  one H100, assuming ~{BYTES_PER_PAIR} B of memory traffic per pair at {GPU_EFFICIENCY:.0%} of "
          f"{GPU_BANDWIDTH / 1e12:.2f} TB/s, a TF32 matmul at {GPU_MATMUL_FLOPS / 1e12:.0f} TFLOP/s and chunks of "
          f"{GPU_CHUNK} queries: ~{t_mem + t_mm + t_launch:.0f} s ({t_mem:.0f} s ranking, {t_mm:.0f} s matmul, "
          f"{t_launch:.1f} s launches)")


if __name__ == "__main__":
    main()
