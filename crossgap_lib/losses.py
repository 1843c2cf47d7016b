"""Contrastive losses for training tiny CLIPs: soft uni-modal targets and a SLIP-style intra-modal term.

Both losses extend open_clip's :class:`~open_clip.loss.ClipLoss` (the baseline) and gather features across processes
with open_clip's own ``gather_features``, so ``local_loss`` / ``gather_with_grad`` mean exactly what they mean there.
Features are expected L2-normalised and ``logit_scale`` already exponentiated, as for ``ClipLoss``.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from open_clip import loss as open_clip_loss
from open_clip.loss import ClipLoss

__all__ = ["IntraModalClipLoss", "SoftTargetClipLoss", "soft_cross_entropy", "soft_targets"]

_NORM_TOLERANCE = 1e-2  # loose enough for features normalised under bf16/fp16 autocast


def _check_pair(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor, same_dim: bool) -> None:
    for name, t in ((name_a, a), (name_b, b)):
        if not isinstance(t, torch.Tensor) or t.ndim != 2:
            got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{name} must be a 2-D tensor (batch, dim), got {got}")
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"{name_b} has batch size {b.shape[0]} but {name_a} has {a.shape[0]}; they must match")
    if same_dim and a.shape[1] != b.shape[1]:
        raise ValueError(f"{name_b} has dimension {b.shape[1]} but {name_a} has {a.shape[1]}; they must match")


def _warn_if_not_normalised(name: str, features: torch.Tensor) -> None:
    with torch.no_grad():
        worst = (features.detach().float().norm(dim=-1) - 1).abs().max().item()
    if worst > _NORM_TOLERANCE:
        warnings.warn(
            f"{name} is not L2-normalised (a row norm is off from 1 by {worst:.3g}); the loss uses it as given. "
            "Normalise student features (e.g. open_clip's model(..., ) output or F.normalize) before the loss.",
            stacklevel=3,
        )


def _at_least_float32(t: torch.Tensor) -> torch.Tensor:
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def _check_temperature(name: str, value: float) -> float:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return float(value)


def soft_targets(
    teacher_image_features: torch.Tensor,
    teacher_text_features: torch.Tensor,
    target_temperature: float = 0.05,
    hard_weight: float = 0.0,
    row_offset: int = 0,
    n_rows: int | None = None,
    teachers: str = "both",
) -> torch.Tensor:
    """Target matrix Q (n_rows, N) from teacher features (N, Di) and (N, Dt); rows ``row_offset:row_offset+n_rows``.

    ``S = (cos(m_i(I_a), m_i(I_b)) + cos(m_t(T_a), m_t(T_b))) / 2`` (``teachers="image"`` / ``"text"``: only that
    teacher's cosine, the ablations of the book's soft-target chapter) and
    ``Q = (1 - hard_weight) * softmax(S / target_temperature, dim=1) + hard_weight * Id``. Teacher features are
    L2-normalised here (so S is a cosine and its diagonal is 1). Computed in (at least) float32 without gradient.
    """
    _check_pair("teacher_image_features", teacher_image_features, "teacher_text_features", teacher_text_features, False)
    _check_temperature("target_temperature", target_temperature)
    if not 0.0 <= hard_weight <= 1.0:
        raise ValueError(f"hard_weight must be in [0, 1], got {hard_weight!r}")
    _check_teachers(teachers)
    n_total = teacher_image_features.shape[0]
    n_rows = n_total - row_offset if n_rows is None else n_rows
    if row_offset < 0 or n_rows < 1 or row_offset + n_rows > n_total:
        raise ValueError(f"rows [{row_offset}, {row_offset + n_rows}) do not fit in a batch of {n_total}")
    with torch.no_grad():
        image_t = F.normalize(_at_least_float32(teacher_image_features), dim=-1)
        text_t = F.normalize(_at_least_float32(teacher_text_features), dim=-1)
        rows = slice(row_offset, row_offset + n_rows)
        image_s, text_s = image_t[rows] @ image_t.T, text_t[rows] @ text_t.T  # (n_rows, N) each
        similarity = {"both": (image_s + text_s) / 2, "image": image_s, "text": text_s}[teachers]
        targets = torch.softmax(similarity / target_temperature, dim=1) * (1.0 - hard_weight)
        if hard_weight > 0:
            local = torch.arange(n_rows, device=targets.device)
            targets[local, local + row_offset] += hard_weight
    return targets


TEACHERS = ("both", "image", "text")


def _check_teachers(teachers: str) -> str:
    if teachers not in TEACHERS:
        raise ValueError(f"teachers must be one of {TEACHERS}, got {teachers!r}")
    return teachers


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over rows of ``-sum_b targets[a, b] * log_softmax(logits)[a, b]``; logits and targets (B, N) -> scalar."""
    return -(targets * torch.log_softmax(_at_least_float32(logits), dim=1)).sum(dim=1).mean()


class SoftTargetClipLoss(ClipLoss):
    r"""CLIP loss against soft targets built from frozen uni-modal teachers.

    For a (gathered) batch of N pairs with student features :math:`f_I, f_T` (L2-normalised, (N, D)) and teacher
    embeddings :math:`m_i(I), m_t(T)`:

    .. math::

        S_{ab} = \tfrac12\big(\cos(m_i(I_a), m_i(I_b)) + \cos(m_t(T_a), m_t(T_b))\big), \qquad S_{aa} = 1

        Q = (1 - h)\,\mathrm{softmax}_b(S / \tau_Q) + h\,\mathbb{1}

        \mathcal L = \tfrac12\Big(\tfrac1N\sum_a H\big(Q_a, \mathrm{softmax}(s f_{I_a} f_T^\top)\big)
                    + \tfrac1N\sum_a H\big(Q_a, \mathrm{softmax}(s f_{T_a} f_I^\top)\big)\Big)

    with :math:`H(q, p) = -\sum_b q_b \log p_b`, :math:`s` = ``logit_scale`` (already exponentiated),
    :math:`\tau_Q` = ``target_temperature`` and :math:`h` = ``hard_weight``. S is symmetric, so the same Q serves both
    directions. ``hard_weight=1`` (or :math:`\tau_Q \to 0` with distinct teacher features) is open_clip's ``ClipLoss``.

    Distributed: student and teacher features are gathered with open_clip's ``gather_features``. Without
    ``local_loss`` every rank computes the loss on the full N x N matrix; with it, rank r's rows are its local batch
    against all gathered columns and its targets are rows ``r*B : (r+1)*B`` of Q (equal per-rank batches, as
    ``ClipLoss`` assumes). Teacher features never carry gradient.

    Input checks: mismatched batch sizes or student dimensions raise ``ValueError``. Teacher features are
    normalised inside; student features that are not unit-norm (tolerance 1e-2) trigger a warning and are used as
    given (normalising them here would silently change the gradient).
    """

    def __init__(
        self,
        target_temperature: float = 0.05,
        hard_weight: float = 0.0,
        local_loss: bool = False,
        gather_with_grad: bool = False,
        rank: int = 0,
        world_size: int = 1,
        teachers: str = "both",
    ):
        super().__init__(local_loss=local_loss, gather_with_grad=gather_with_grad, rank=rank, world_size=world_size)
        self.teachers = _check_teachers(teachers)
        self.target_temperature = _check_temperature("target_temperature", target_temperature)
        if not 0.0 <= hard_weight <= 1.0:
            raise ValueError(f"hard_weight must be in [0, 1], got {hard_weight!r}")
        self.hard_weight = float(hard_weight)

    def gather_teacher_features(
        self, teacher_image_features: torch.Tensor, teacher_text_features: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """All ranks' teacher features, (N, Di) and (N, Dt), in rank order; no gradient."""
        if self.world_size == 1:
            return teacher_image_features, teacher_text_features
        with torch.no_grad():
            return open_clip_loss.gather_features(
                teacher_image_features.detach().contiguous(),
                teacher_text_features.detach().contiguous(),
                local_loss=True,  # teachers have no gradient to keep: do not re-insert the local tensors
                gather_with_grad=False,
                rank=self.rank,
                world_size=self.world_size,
            )

    def forward(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        logit_scale: torch.Tensor | float,
        teacher_image_features: torch.Tensor,
        teacher_text_features: torch.Tensor,
        output_dict: bool = False,
    ) -> torch.Tensor | dict[str, torch.Tensor]:
        """Soft-target loss for local features (B, D), (B, D) and teacher features (B, Di), (B, Dt) -> scalar."""
        _check_pair("image_features", image_features, "text_features", text_features, True)
        _check_pair("image_features", image_features, "teacher_image_features", teacher_image_features, False)
        _check_pair("image_features", image_features, "teacher_text_features", teacher_text_features, False)
        _warn_if_not_normalised("image_features", image_features)
        _warn_if_not_normalised("text_features", text_features)

        logits_per_image, logits_per_text = self.get_logits(image_features, text_features, logit_scale)
        all_teacher_image, all_teacher_text = self.gather_teacher_features(
            teacher_image_features, teacher_text_features
        )
        local_rows = self.world_size > 1 and self.local_loss
        targets = soft_targets(
            all_teacher_image,
            all_teacher_text,
            self.target_temperature,
            self.hard_weight,
            row_offset=self.rank * image_features.shape[0] if local_rows else 0,
            n_rows=logits_per_image.shape[0],
            teachers=self.teachers,
        ).to(logits_per_image.device)
        total_loss = (soft_cross_entropy(logits_per_image, targets) + soft_cross_entropy(logits_per_text, targets)) / 2
        return {"contrastive_loss": total_loss} if output_dict else total_loss


class IntraModalClipLoss(ClipLoss):
    r"""SLIP-style loss: open_clip's CLIP loss plus ``intra_weight`` times an image-image SimCLR (NT-Xent) term.

    With :math:`z^1, z^2` the two augmented views' features of the N (gathered) images, L2-normalised here, and
    :math:`t` = ``simclr_temperature``, each of the 2N view features :math:`u` has its partner :math:`u^+` as the
    positive and the other 2N - 2 as negatives:

    .. math::

        \mathcal L_{SimCLR} = \frac{1}{2N}\sum_u -\log \frac{\exp(u\cdot u^+ / t)}
                              {\sum_{v \ne u} \exp(u \cdot v / t)}, \qquad
        \mathcal L = \mathcal L_{CLIP} + \lambda\,\mathcal L_{SimCLR}

    The view features may come from a projection head that the training code owns (as in SLIP, where a 3-layer MLP
    maps the image embedding of each view to the SimCLR space); this loss only sees its outputs, (B, D_ssl).
    Distributed semantics follow ``ClipLoss``: with ``local_loss`` the rows are the local 2B views against all
    gathered 2N columns. ``output_dict=True`` returns ``contrastive_loss`` and ``simclr_loss`` (already weighted),
    whose sum is the scalar returned otherwise.
    """

    def __init__(
        self,
        intra_weight: float = 1.0,
        simclr_temperature: float = 0.1,
        local_loss: bool = False,
        gather_with_grad: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ):
        super().__init__(local_loss=local_loss, gather_with_grad=gather_with_grad, rank=rank, world_size=world_size)
        if not intra_weight >= 0:
            raise ValueError(f"intra_weight must be >= 0, got {intra_weight!r}")
        self.intra_weight = float(intra_weight)
        self.simclr_temperature = _check_temperature("simclr_temperature", simclr_temperature)

    def simclr_loss(self, view1_features: torch.Tensor, view2_features: torch.Tensor) -> torch.Tensor:
        """NT-Xent between two views' local features (B, D_ssl) each (gathered across ranks) -> scalar."""
        view1 = F.normalize(view1_features, dim=-1)
        view2 = F.normalize(view2_features, dim=-1)
        batch = view1.shape[0]
        if self.world_size > 1:
            all_view1, all_view2 = open_clip_loss.gather_features(
                view1, view2, local_loss=self.local_loss, gather_with_grad=self.gather_with_grad,
                rank=self.rank, world_size=self.world_size,
            )
        else:
            all_view1, all_view2 = view1, view2
        n_total = all_view1.shape[0]
        columns = torch.cat([all_view1, all_view2])  # (2N, D)
        if self.world_size > 1 and self.local_loss:
            rows, offset = torch.cat([view1, view2]), self.rank * batch
        else:
            rows, offset, batch = columns, 0, n_total
        logits = rows @ columns.T / self.simclr_temperature  # (2B, 2N)
        index = torch.arange(batch, device=logits.device) + offset
        self_columns = torch.cat([index, index + n_total])
        partner_columns = torch.cat([index + n_total, index])
        is_self = torch.zeros(logits.shape, dtype=torch.bool, device=logits.device)
        is_self[torch.arange(2 * batch, device=logits.device), self_columns] = True
        logits = _at_least_float32(logits).masked_fill(is_self, float("-inf"))
        return F.cross_entropy(logits, partner_columns)

    def forward(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        logit_scale: torch.Tensor | float,
        image_view1_features: torch.Tensor,
        image_view2_features: torch.Tensor,
        output_dict: bool = False,
    ) -> torch.Tensor | dict[str, torch.Tensor]:
        """CLIP loss on (B, D), (B, D) plus the weighted SimCLR loss on two views (B, D_ssl) -> scalar."""
        _check_pair("image_features", image_features, "text_features", text_features, True)
        _check_pair("image_view1_features", image_view1_features, "image_view2_features", image_view2_features, True)
        _check_pair("image_features", image_features, "image_view1_features", image_view1_features, False)
        _warn_if_not_normalised("image_features", image_features)
        _warn_if_not_normalised("text_features", text_features)
        clip_loss = super().forward(image_features, text_features, logit_scale)
        simclr = self.intra_weight * self.simclr_loss(image_view1_features, image_view2_features)
        if output_dict:
            return {"contrastive_loss": clip_loss, "simclr_loss": simclr}
        return clip_loss + simclr
