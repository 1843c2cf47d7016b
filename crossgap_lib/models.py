"""Loading CLIP-family models (OpenAI CLIP, OpenCLIP, SigLIP, SLIP, project tiny configs) through open_clip."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch


@dataclass
class LoadedClip:
    """A CLIP-style model with what is needed to feed it."""

    model: torch.nn.Module
    preprocess: Callable[[Any], torch.Tensor]
    tokenizer: Callable[..., torch.Tensor]
    name: str
    pretrained: str | None
    device: str = "cpu"
