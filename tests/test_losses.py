import math
import socket

import pytest
import torch
import torch.nn.functional as F
from open_clip import loss as open_clip_loss
from open_clip.loss import ClipLoss

from crossgap_lib.losses import IntraModalClipLoss, SoftTargetClipLoss, soft_cross_entropy, soft_targets


def _unit(*shape, seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    t = F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1)
    return t.requires_grad_(requires_grad)


def _batch(n=8, d=6, di=5, dt=7, seed=0):
    """Student image/text (n, d) with grad, teacher image (n, di) and text (n, dt) features."""
    return (_unit(n, d, seed=seed, requires_grad=True), _unit(n, d, seed=seed + 1, requires_grad=True),
            _unit(n, di, seed=seed + 2), _unit(n, dt, seed=seed + 3))


def _loop_reference(img, txt, scale, t_img, t_txt, tau, h):
    """Straight-from-the-definition soft-target loss with Python loops (float64)."""
    n = img.shape[0]
    s = [[(float(t_img[a] @ t_img[b]) + float(t_txt[a] @ t_txt[b])) / 2 for b in range(n)] for a in range(n)]
    total = 0.0
    for a in range(n):
        z = sum(math.exp(s[a][b] / tau) for b in range(n))
        q = [(1 - h) * math.exp(s[a][b] / tau) / z + h * (a == b) for b in range(n)]
        for queries, keys in ((img, txt), (txt, img)):
            logits = [scale * float(queries[a] @ keys[b]) for b in range(n)]
            lse = math.log(sum(math.exp(v) for v in logits))
            total += -sum(q[b] * (logits[b] - lse) for b in range(n)) / (2 * n)
    return total


# ---------------------------------------------------------------- values


@pytest.mark.parametrize("hard_weight", [0.0, 0.3])
def test_hand_computed_3x3(hard_weight):
    # Teachers: images 0 and 1 look alike, captions 1 and 2 read alike -> S = [[1,.5,0],[.5,1,.5],[0,.5,1]].
    t_img = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    t_txt = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    eye = torch.eye(3)  # students: logits = I (logit_scale 1), so log_softmax_aa = 1 - log(e + 2), others -log(e + 2)
    e = math.e
    q_diag = [e**2 / (e**2 + e + 1), e**2 / (e**2 + 2 * e), e**2 / (e**2 + e + 1)]  # softmax(S / 0.5) diagonal
    q_diag = [(1 - hard_weight) * q + hard_weight for q in q_diag]
    expected = math.log(e + 2) - sum(q_diag) / 3  # each row: -sum_b Q_ab log p_ab = log(e+2) - Q_aa
    loss = SoftTargetClipLoss(target_temperature=0.5, hard_weight=hard_weight)(eye, eye, 1.0, t_img, t_txt)
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    q = soft_targets(t_img, t_txt, 0.5, hard_weight)
    assert torch.allclose(q.diagonal(), torch.tensor(q_diag), atol=1e-6)
    assert torch.allclose(q.sum(1), torch.ones(3), atol=1e-6)


def test_matches_loop_reference_on_random_batch():
    img, txt, t_img, t_txt = _batch(n=5)
    for tau, h in ((0.05, 0.0), (0.7, 0.25)):
        got = SoftTargetClipLoss(target_temperature=tau, hard_weight=h)(img, txt, 3.0, t_img, t_txt)
        assert got.item() == pytest.approx(_loop_reference(img.detach(), txt.detach(), 3.0, t_img, t_txt, tau, h),
                                           abs=1e-6)


@pytest.mark.parametrize("kwargs", [{"hard_weight": 1.0}, {"target_temperature": 1e-4}])
def test_limits_equal_open_clip_clip_loss(kwargs):
    img, txt, t_img, t_txt = _batch(n=16, d=8)
    img32, txt32 = (x.detach().float().requires_grad_() for x in (img, txt))
    ours = SoftTargetClipLoss(**kwargs)(img32, txt32, torch.tensor(20.0), t_img.float(), t_txt.float())
    ref_img, ref_txt = (x.detach().float().requires_grad_() for x in (img, txt))
    ref = ClipLoss()(ref_img, ref_txt, torch.tensor(20.0))
    assert ours.item() == pytest.approx(ref.item(), abs=1e-5)
    ours.backward()
    ref.backward()
    assert torch.allclose(img32.grad, ref_img.grad, atol=1e-5)
    assert torch.allclose(txt32.grad, ref_txt.grad, atol=1e-5)


def test_soft_targets_differ_from_clip_loss_and_rows_slice():
    img, txt, t_img, t_txt = _batch(n=6)
    soft = SoftTargetClipLoss(target_temperature=0.5)(img, txt, 10.0, t_img, t_txt)
    assert abs(soft.item() - ClipLoss()(img, txt, 10.0).item()) > 1e-3
    full = soft_targets(t_img, t_txt, 0.2, 0.1)
    assert torch.allclose(soft_targets(t_img, t_txt, 0.2, 0.1, row_offset=2, n_rows=3), full[2:5])
    assert torch.equal(full.argmax(1), torch.arange(6))  # S_aa = 1 is each row's maximum
    assert torch.allclose(soft_cross_entropy(torch.zeros(2, 4), torch.full((2, 4), 0.25)), torch.tensor(math.log(4)))


def test_teacher_features_are_normalised_inside_and_output_dict():
    img, txt, t_img, t_txt = _batch(n=4)
    loss_fn = SoftTargetClipLoss(target_temperature=0.3)
    base = loss_fn(img, txt, 5.0, t_img, t_txt)
    scaled = loss_fn(img, txt, 5.0, 3.0 * t_img, 0.5 * t_txt, output_dict=True)
    assert set(scaled) == {"contrastive_loss"}
    assert scaled["contrastive_loss"].item() == pytest.approx(base.item(), abs=1e-9)


# ---------------------------------------------------------------- bad input


def test_bad_input_raises_clear_errors():
    img, txt, t_img, t_txt = _batch(n=4)
    loss_fn = SoftTargetClipLoss()
    with pytest.raises(ValueError, match="teacher_image_features has batch size 3"):
        loss_fn(img, txt, 1.0, t_img[:3], t_txt)
    with pytest.raises(ValueError, match="teacher_text_features has batch size 5"):
        loss_fn(img, txt, 1.0, t_img, torch.cat([t_txt, t_txt[:1]]))
    with pytest.raises(ValueError, match="text_features has batch size 3"):
        loss_fn(img, txt[:3], 1.0, t_img, t_txt)
    with pytest.raises(ValueError, match="text_features has dimension 5"):
        loss_fn(img, _unit(4, 5), 1.0, t_img, t_txt)
    with pytest.raises(ValueError, match="teacher_image_features must be a 2-D tensor"):
        loss_fn(img, txt, 1.0, t_img[0], t_txt)
    for bad in (0.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match="target_temperature must be > 0"):
            SoftTargetClipLoss(target_temperature=bad)
    for bad in (-0.01, 1.5):
        with pytest.raises(ValueError, match=r"hard_weight must be in \[0, 1\]"):
            SoftTargetClipLoss(hard_weight=bad)
    with pytest.raises(ValueError, match="simclr_temperature must be > 0"):
        IntraModalClipLoss(simclr_temperature=0)
    with pytest.raises(ValueError, match="intra_weight must be >= 0"):
        IntraModalClipLoss(intra_weight=-1)
    with pytest.raises(ValueError, match="image_view2_features has batch size 3"):
        IntraModalClipLoss()(img, txt, 1.0, img, img[:3])


def test_non_normalised_student_features_warn():
    img, txt, t_img, t_txt = _batch(n=4)
    with pytest.warns(UserWarning, match="image_features is not L2-normalised"):
        SoftTargetClipLoss()(2 * img, txt, 1.0, t_img, t_txt)
    with pytest.warns(UserWarning, match="text_features is not L2-normalised"):
        IntraModalClipLoss()(img, 0.5 * txt, 1.0, img, img)


# ---------------------------------------------------------------- intra-modal (SLIP-style) loss


def _simclr_loop(z1, z2, t):
    z = F.normalize(torch.cat([z1, z2]), dim=-1)
    n = z1.shape[0]
    total = 0.0
    for u in range(2 * n):
        partner = (u + n) % (2 * n)
        denom = sum(math.exp(float(z[u] @ z[v]) / t) for v in range(2 * n) if v != u)
        total += -(float(z[u] @ z[partner]) / t - math.log(denom))
    return total / (2 * n)


def test_intra_modal_loss_is_clip_loss_plus_weighted_simclr():
    img, txt, _, _ = _batch(n=6)
    view1, view2 = torch.randn(6, 4, dtype=torch.float64), torch.randn(6, 4, dtype=torch.float64)  # unnormalised head
    view1.requires_grad_()
    out = IntraModalClipLoss(intra_weight=0.5, simclr_temperature=0.2)(img, txt, 7.0, view1, view2, output_dict=True)
    assert set(out) == {"contrastive_loss", "simclr_loss"}
    assert out["contrastive_loss"].item() == pytest.approx(ClipLoss()(img, txt, 7.0).item(), abs=1e-9)
    assert out["simclr_loss"].item() == pytest.approx(0.5 * _simclr_loop(view1.detach(), view2, 0.2), abs=1e-9)
    scalar = IntraModalClipLoss(intra_weight=0.5, simclr_temperature=0.2)(img, txt, 7.0, view1, view2)
    assert scalar.item() == pytest.approx(sum(v.item() for v in out.values()), abs=1e-9)
    scalar.backward()
    assert view1.grad is not None and view1.grad.abs().sum() > 0
    no_intra = IntraModalClipLoss(intra_weight=0.0)(img, txt, 7.0, view1, view2)
    assert no_intra.item() == pytest.approx(ClipLoss()(img, txt, 7.0).item(), abs=1e-12)


# ---------------------------------------------------------------- gather (monkeypatched)


def _fake_gather(per_rank):
    """A stand-in for open_clip's gather_features: the other ranks' tensors come from ``per_rank``."""

    def gather(a, b, local_loss=False, gather_with_grad=False, rank=0, world_size=1, use_horovod=False):
        key = next(k for k, (pa, _) in per_rank.items() if pa.shape[1] == a.shape[1])
        parts = per_rank[key]
        chunks_a, chunks_b = list(parts[0].chunk(world_size)), list(parts[1].chunk(world_size))
        chunks_a[rank], chunks_b[rank] = a, b
        return torch.cat(chunks_a), torch.cat(chunks_b)

    return gather


@pytest.mark.parametrize("local_loss", [False, True])
def test_gather_logic_with_monkeypatched_gather(monkeypatch, local_loss):
    n, world = 8, 2
    img, txt, t_img, t_txt = (x.detach() for x in _batch(n=n, d=6, di=5, dt=7))
    view1, view2 = _unit(n, 3, seed=7), _unit(n, 3, seed=8)  # normalised: the loss gathers normalised views
    # feature widths are distinct (6, 5, 3) so the fake gather can tell which pair it is asked for
    monkeypatch.setattr(open_clip_loss, "gather_features",
                        _fake_gather({"student": (img, txt), "teacher": (t_img, t_txt), "views": (view1, view2)}))
    soft_full = SoftTargetClipLoss(target_temperature=0.2)(img, txt, 4.0, t_img, t_txt)
    intra_full = IntraModalClipLoss(simclr_temperature=0.3)(img, txt, 4.0, view1, view2)
    soft_ranks, intra_ranks = [], []
    for rank in range(world):
        rows = slice(rank * n // world, (rank + 1) * n // world)
        dist_kw = {"local_loss": local_loss, "rank": rank, "world_size": world}
        soft_ranks.append(SoftTargetClipLoss(target_temperature=0.2, **dist_kw)(
            img[rows], txt[rows], 4.0, t_img[rows], t_txt[rows]))
        intra_ranks.append(IntraModalClipLoss(simclr_temperature=0.3, **dist_kw)(
            img[rows], txt[rows], 4.0, view1[rows], view2[rows]))
    if local_loss:  # each rank holds its rows' share; their mean is the full-batch loss
        assert abs(soft_ranks[0].item() - soft_ranks[1].item()) > 1e-6
        soft_ranks, intra_ranks = [sum(soft_ranks) / world], [sum(intra_ranks) / world]
    for value in soft_ranks:
        assert value.item() == pytest.approx(soft_full.item(), abs=1e-10)
    for value in intra_ranks:
        assert value.item() == pytest.approx(intra_full.item(), abs=1e-10)


# ---------------------------------------------------------------- real 2-process gloo run

_MODES = [(False, False), (True, True), (False, True)]  # (local_loss, gather_with_grad)


def _views(n=8, d=3):
    """Two unnormalised view features (n, d), as a SimCLR projection head would give."""
    g = torch.Generator().manual_seed(9)
    return torch.randn(n, d, dtype=torch.float64, generator=g), torch.randn(n, d, dtype=torch.float64, generator=g)


def _distributed_worker(rank, world_size, port, out_dir):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        img, txt, t_img, t_txt = (x.detach() for x in _batch(n=8))
        view1, view2 = _views()
        rows = slice(rank * 4, rank * 4 + 4)
        results = {}
        for local_loss, gather_with_grad in _MODES:
            kw = {"local_loss": local_loss, "gather_with_grad": gather_with_grad, "rank": rank,
                  "world_size": world_size}
            for name, loss_fn, extra in (
                ("soft", SoftTargetClipLoss(target_temperature=0.2, hard_weight=0.1, **kw), (t_img[rows], t_txt[rows])),
                ("intra", IntraModalClipLoss(simclr_temperature=0.3, **kw), None),
            ):
                leaves = [x[rows].clone().requires_grad_() for x in (img, txt)]
                if extra is None:
                    extra = tuple(v[rows].clone().requires_grad_() for v in (view1, view2))
                    leaves += list(extra)
                loss = loss_fn(leaves[0], leaves[1], 4.0, *extra)
                loss.backward()
                results[(name, local_loss, gather_with_grad)] = (loss.detach(), [leaf.grad for leaf in leaves])
        torch.save(results, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gloo_matches_single_process(tmp_path):
    torch.multiprocessing.spawn(_distributed_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    per_rank = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    img, txt, t_img, t_txt = (x.detach() for x in _batch(n=8))
    view1, view2 = _views()
    for name in ("soft", "intra"):
        leaves = [x.clone().requires_grad_() for x in (img, txt)]
        if name == "soft":
            loss = SoftTargetClipLoss(target_temperature=0.2, hard_weight=0.1)(*leaves, 4.0, t_img, t_txt)
        else:
            leaves += [v.clone().requires_grad_() for v in (view1, view2)]
            loss = IntraModalClipLoss(simclr_temperature=0.3)(leaves[0], leaves[1], 4.0, leaves[2], leaves[3])
        loss.backward()
        for local_loss, gather_with_grad in _MODES:
            losses = [per_rank[r][(name, local_loss, gather_with_grad)][0] for r in range(2)]
            if local_loss:
                assert torch.allclose(sum(losses) / 2, loss.detach(), atol=1e-10)
            else:
                assert all(torch.allclose(v, loss.detach(), atol=1e-10) for v in losses)
            # Without gather_with_grad a rank's loss reaches only its own rows, giving exactly their full-batch
            # gradient; with it, all_gather's backward sums the world_size ranks' contributions (DDP then averages).
            factor = 2.0 if gather_with_grad else 1.0
            for r in range(2):
                grads = per_rank[r][(name, local_loss, gather_with_grad)][1]
                for got, leaf in zip(grads, leaves):
                    assert torch.allclose(got, factor * leaf.grad[r * 4:(r + 1) * 4], atol=1e-10), (name, r)
