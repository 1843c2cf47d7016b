"""Tower plumbing behind OTI and OVI: open_clip text and image towers run with pseudo tokens in place of a word or
of image patches.

Text: the placeholder word (``"£"`` by default) is replaced by R pseudo-token embeddings; pooling always uses the
original token ids. Causal text towers run only the tokens up to the pooled position, which the causal mask makes
exact (6 of 77 tokens for "a photo of £"). Image: R visual pseudo tokens are spread over the ViT patch grid by nearest
interpolation and run through the rest of the vision tower.
"""

from __future__ import annotations

import contextlib
import string
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from open_clip.model import CLIP, CustomTextCLIP
from open_clip.modified_resnet import ModifiedResNet
from open_clip.timm_model import TimmModel
from open_clip.transformer import TextTransformer, VisionTransformer, _expand_token
from torch import Tensor, nn

from .models import LoadedClip

# Autocast precisions on CUDA (CPU always runs fp32). The authors run OTI/OVI under fp16 autocast with a gradient
# scaler (miccunifi/Cross-the-Gap src/oti.py and src/ovi.py: torch.cuda.amp.autocast() + torch.cuda.amp.GradScaler()).
PRECISIONS = ("fp16", "bf16", "fp32")
DEFAULT_PRECISION = "fp16"

# The placeholder word is chosen per tokenizer, at run time: "£" (the authors' word; id 1950 in CLIP's BPE, below the
# end-of-text id) when it is one known token, else the first fallback that is. SigLIP's tokenizer (open_clip HFTokenizer
# "timm/ViT-B-16-SigLIP", clean="canonicalize") deletes ASCII punctuation before its SentencePiece model sees the text,
# so "*" ... "@" can never be its placeholder; on the dry run's stand-in vocabulary "£", "§", "¤" are unknown and "z" is
# chosen. Whether the real c4_en SentencePiece model keeps "£" as one piece was not checked here (its spiece.model is
# not vendored in any public repository we could find); tests/test_inversion.py checks it wherever it is cached.
PLACEHOLDER = "£"
PLACEHOLDER_FALLBACKS = ("§", "¤", "*", "#", "~", "|", "^", "@", "x", "z", "q")


def _check_positive_int(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")


# ------------------------------------------------------------------------------------------------------ text tower
@dataclass
class _TextTower:
    """The pieces of an open_clip text tower that ``encode_text`` runs, whatever class holds them."""

    token_embedding: nn.Embedding
    positional_embedding: Tensor
    transformer: nn.Module
    ln_final: nn.Module
    text_projection: nn.Module | Tensor | None
    causal_mask: Tensor | None
    pool_type: str
    eos_id: int | None
    context_length: int
    pad_mask: Callable[[Tensor, int, torch.dtype], Tensor] | None = None

    @property
    def width(self) -> int:
        return self.token_embedding.weight.shape[1]


def _unwrap(clip: LoadedClip | nn.Module) -> nn.Module:
    return clip.model if isinstance(clip, LoadedClip) else clip


def _text_tower(model: nn.Module) -> _TextTower:
    if isinstance(model, CLIP):
        return _TextTower(
            model.token_embedding,
            model.positional_embedding,
            model.transformer,
            model.ln_final,
            model.text_projection,
            model.attn_mask,
            model.text_pool_type,
            getattr(model, "text_eos_id", None),
            model.context_length,
        )
    text = getattr(model, "text", None)
    if isinstance(model, CustomTextCLIP) and isinstance(text, TextTransformer):
        if text.cls_emb is not None:
            raise ValueError("text towers with an appended class token (CoCa-style cls_emb) are not supported")
        return _TextTower(
            text.token_embedding,
            text.positional_embedding,
            text.transformer,
            text.ln_final,
            text.text_projection,
            text.attn_mask,
            text.pool_type,
            text.eos_id,
            text.context_length,
            pad_mask=text._build_additive_mask if text.use_pad_mask else None,
        )
    raise ValueError(
        f"clip must hold an open_clip CLIP or a CustomTextCLIP whose text tower is a TextTransformer; got "
        f"{type(model).__name__} with text tower {type(text).__name__ if text is not None else 'None'} "
        "(Hugging Face text towers are not supported)"
    )


@dataclass
class _TextTemplate:
    """A tokenised template: ids (L,), placeholder positions (R,), pooled position and tokens run through the tower."""

    token_ids: Tensor
    placeholder_positions: Tensor
    pool_index: int
    length: int


def _check_template(template: str) -> None:
    if not isinstance(template, str):
        kind = type(template).__name__
        raise ValueError(f"template must be a str with one '{{}}' placeholder, got {kind}")  # noqa: TRY004
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as err:
        raise ValueError(f"template {template!r} is not a valid format string ({err}); expected one '{{}}'") from None
    if fields != [""]:
        raise ValueError(
            f"template must contain exactly one empty '{{}}' placeholder (e.g. 'a photo of {{}}'), got {template!r}"
        )


def _single_token(tokenizer: Callable[..., Tensor], word: str) -> int | None:
    """The id of ``word`` when the tokenizer maps it (alone and repeated) to exactly one known token, else None (an
    unknown-token id would also match any other unknown character of the template)."""
    special = set(tokenizer([""])[0].tolist())
    ids = [t for t in tokenizer([word])[0].tolist() if t not in special]
    repeated = [t for t in tokenizer([f"{word} {word}"])[0].tolist() if t not in special]
    unknown = getattr(getattr(tokenizer, "tokenizer", None), "unk_token_id", None)  # open_clip HFTokenizer
    return ids[0] if len(ids) == 1 and repeated == ids * 2 and ids[0] != unknown else None


def _placeholder(tokenizer: Callable[..., Tensor]) -> tuple[str, int]:
    """The placeholder word and its token id: ``"£"`` (the paper's, one token in CLIP's BPE), or the first of
    :data:`PLACEHOLDER_FALLBACKS` that is one token for this tokenizer (e.g. a SentencePiece vocabulary)."""
    for word in (PLACEHOLDER, *PLACEHOLDER_FALLBACKS):
        token = _single_token(tokenizer, word)
        if token is not None:
            return word, token
    ids = tokenizer([PLACEHOLDER])[0].tolist()
    raise ValueError(
        f"the tokenizer must map the placeholder {PLACEHOLDER!r} (or one of {PLACEHOLDER_FALLBACKS}) to exactly one "
        f"token, got ids {ids[:8]} for {PLACEHOLDER!r}; pass a tokenizer with a single-token placeholder word"
    )


def _pool_index(tower: _TextTower, token_ids: Tensor) -> int:
    if tower.pool_type == "argmax":
        return int(token_ids.argmax())
    if tower.pool_type == "eos":
        return int((token_ids == tower.eos_id).int().argmax())
    if tower.pool_type == "first":
        return 0
    if tower.pool_type == "last":
        return token_ids.shape[0] - 1
    raise ValueError(f"text pool_type {tower.pool_type!r} gives no pooled feature; expected argmax, eos, first or last")


def _prepare_text_template(clip: LoadedClip, tower: _TextTower, template: str, num_pseudo_tokens: int) -> _TextTemplate:
    _check_template(template)
    _check_positive_int("num_pseudo_tokens", num_pseudo_tokens)
    if not isinstance(clip, LoadedClip) or clip.tokenizer is None:
        raise ValueError(f"clip must be a LoadedClip with a tokenizer to encode a template, got {type(clip).__name__}")
    placeholder, placeholder_id = _placeholder(clip.tokenizer)
    text = template.format(" ".join([placeholder] * num_pseudo_tokens))
    token_ids = clip.tokenizer([text])[0].to(torch.long)
    if token_ids.shape[0] != tower.context_length:
        raise ValueError(
            f"the tokenizer gives {token_ids.shape[0]} tokens but the text tower expects context_length "
            f"{tower.context_length}; use the tokenizer made for this model"
        )
    positions = (token_ids == placeholder_id).nonzero().flatten()
    if positions.shape[0] != num_pseudo_tokens:
        raise ValueError(
            f"num_pseudo_tokens={num_pseudo_tokens} placeholders do not fit template {template!r} in the text context "
            f"of {tower.context_length} tokens (found {positions.shape[0]} after tokenisation; the template must not "
            f"contain {placeholder!r} itself)"
        )
    pool_index = _pool_index(tower, token_ids)
    if pool_index in positions.tolist():
        raise ValueError(
            f"the pooled position {pool_index} falls on a placeholder: the placeholder id {placeholder_id} must be "
            f"below the end-of-text id for argmax pooling"
        )
    causal = tower.causal_mask is not None and tower.pad_mask is None
    length = pool_index + 1 if causal else tower.context_length
    device = tower.token_embedding.weight.device
    return _TextTemplate(token_ids.to(device), positions.to(device), pool_index, length)


def _template_embeddings(tower: _TextTower, tmpl: _TextTemplate) -> tuple[Tensor, Tensor]:
    """Template token + positional embeddings (L, width); positional embeddings at the placeholders (R, width)."""
    cast_dtype = tower.transformer.get_cast_dtype()
    ids = tmpl.token_ids[: tmpl.length]
    positional = tower.positional_embedding[: tmpl.length].to(cast_dtype)
    base = tower.token_embedding(ids).to(cast_dtype) + positional
    return base, positional[tmpl.placeholder_positions]


def _encode_text(
    tower: _TextTower, tmpl: _TextTemplate, pseudo_tokens: Tensor, base: Tensor, placeholder_pos: Tensor
) -> Tensor:
    """Run the text tower on the template with its placeholders replaced by pseudo tokens (B, R, width) -> (B, D)."""
    batch, length = pseudo_tokens.shape[0], tmpl.length
    x = base.unsqueeze(0).expand(batch, -1, -1).clone()
    x[:, tmpl.placeholder_positions] = pseudo_tokens.to(x.dtype) + placeholder_pos
    attn_mask = None if tower.causal_mask is None else tower.causal_mask[:length, :length]
    if tower.pad_mask is not None:
        ids = tmpl.token_ids[:length].unsqueeze(0).expand(batch, -1)
        pad = tower.pad_mask(ids, length, x.dtype)
        attn_mask = pad if attn_mask is None else attn_mask.unsqueeze(0) + pad
    x = tower.transformer(x, attn_mask=attn_mask)
    pooled = tower.ln_final(x)[:, tmpl.pool_index]
    if isinstance(tower.text_projection, nn.Linear):
        return tower.text_projection(pooled)
    return pooled if tower.text_projection is None else pooled @ tower.text_projection


def _check_pseudo_tokens(pseudo_tokens: Tensor, width: int, num_pseudo_tokens: int | None, what: str) -> None:
    if not isinstance(pseudo_tokens, Tensor) or pseudo_tokens.dim() != 3 or pseudo_tokens.shape[-1] != width:
        shape = tuple(pseudo_tokens.shape) if isinstance(pseudo_tokens, Tensor) else type(pseudo_tokens).__name__
        raise ValueError(f"pseudo_tokens must have shape (B, R, {width}) ({what} width), got {shape}")
    if pseudo_tokens.shape[0] < 1 or pseudo_tokens.shape[1] < 1:
        raise ValueError(f"pseudo_tokens must have B >= 1 and R >= 1, got shape {tuple(pseudo_tokens.shape)}")
    if num_pseudo_tokens is not None and pseudo_tokens.shape[1] > num_pseudo_tokens:
        raise ValueError(f"pseudo_tokens has R={pseudo_tokens.shape[1]} but at most {num_pseudo_tokens} fit the {what}")


def encode_text_with_pseudo_tokens(
    clip: LoadedClip, pseudo_tokens: Tensor, template: str = "a photo of {}", normalize: bool = False
) -> Tensor:
    """Text features (B, embed_dim) of ``template`` with its ``{}`` filled by pseudo tokens (B, R, text_width)."""
    model = _unwrap(clip)
    tower = _text_tower(model)
    _check_pseudo_tokens(pseudo_tokens, tower.width, None, "text token")
    tmpl = _prepare_text_template(clip, tower, template, pseudo_tokens.shape[1])
    features = _encode_text(tower, tmpl, pseudo_tokens, *_template_embeddings(tower, tmpl))
    return F.normalize(features, dim=-1) if normalize else features


# ---------------------------------------------------------------------------------------------------- vision tower
def _vision_parts(model: nn.Module) -> tuple[nn.Module, int, int]:
    """(tower, width, number of patches) of a ViT image tower; ``ValueError`` for anything else."""
    visual = getattr(model, "visual", None)
    if isinstance(visual, VisionTransformer):
        return visual, visual.conv1.out_channels, visual.grid_size[0] * visual.grid_size[1]
    if isinstance(visual, TimmModel):
        from timm.models.vision_transformer import VisionTransformer as TimmViT

        if isinstance(visual.trunk, TimmViT):
            return visual, visual.trunk.embed_dim, visual.trunk.patch_embed.num_patches
    name = type(visual).__name__ if visual is not None else "None"
    if isinstance(visual, TimmModel):
        name = f"TimmModel({type(visual.trunk).__name__})"
    kind = "a ModifiedResNet (no patch tokens)" if isinstance(visual, ModifiedResNet) else name
    raise ValueError(
        f"visual pseudo tokens need a ViT image tower (open_clip VisionTransformer or a timm VisionTransformer "
        f"trunk); got {kind}"
    )


def patch_embeddings(clip: LoadedClip | nn.Module, images: Tensor) -> Tensor:
    """Patch embeddings (B, num_patches, vision_width) of preprocessed images (B, 3, H, W), before class/pos tokens."""
    visual, _, _ = _vision_parts(_unwrap(clip))
    if isinstance(visual, VisionTransformer):
        x = visual.conv1(images)
        return x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
    x = visual.trunk.patch_embed(images)
    return x.reshape(x.shape[0], -1, x.shape[-1])


def _encode_patches(visual: nn.Module, patches: Tensor) -> Tensor:
    """Run a ViT image tower from its patch embeddings (B, N, width) -> (B, embed_dim), as ``encode_image`` does."""
    if isinstance(visual, VisionTransformer):
        x = torch.cat([_expand_token(visual.class_embedding, patches.shape[0]).to(patches.dtype), patches], dim=1)
        x = x + visual.positional_embedding.to(x.dtype)
        x = visual.ln_pre(visual.patch_dropout(x))
        pooled, _ = visual._pool(visual.transformer(x))
        return pooled if visual.proj is None else pooled @ visual.proj
    trunk = visual.trunk
    if trunk.dynamic_img_size:
        patches = patches.reshape(patches.shape[0], *trunk.patch_embed.grid_size, patches.shape[-1])
    x = trunk.norm_pre(trunk.patch_drop(trunk._pos_embed(patches)))
    x = trunk.norm(trunk.blocks(x))
    return visual.head(trunk.forward_head(x))


def _spread_over_patches(pseudo_tokens: Tensor, num_patches: int) -> Tensor:
    """Nearest-interpolate pseudo tokens (B, R, width) over all patch positions -> (B, num_patches, width)."""
    return F.interpolate(pseudo_tokens.transpose(1, 2), size=num_patches, mode="nearest").transpose(1, 2)


def encode_image_with_pseudo_tokens(
    clip: LoadedClip | nn.Module, pseudo_tokens: Tensor, normalize: bool = False
) -> Tensor:
    """Image features (B, embed_dim) of visual pseudo tokens (B, R, vision_width) spread over the patch grid."""
    visual, width, num_patches = _vision_parts(_unwrap(clip))
    _check_pseudo_tokens(pseudo_tokens, width, num_patches, f"patch grid of {num_patches} patches (vision")
    weight = visual.conv1.weight if isinstance(visual, VisionTransformer) else visual.trunk.patch_embed.proj.weight
    patches = _spread_over_patches(pseudo_tokens.to(weight.dtype), num_patches)
    features = _encode_patches(visual, patches)
    return F.normalize(features, dim=-1) if normalize else features


@contextlib.contextmanager
def _frozen(model: nn.Module) -> Iterator[None]:
    """Eval mode and requires_grad=False for every parameter; both restored on exit."""
    flags, training = [p.requires_grad for p in model.parameters()], model.training
    model.eval().requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)
        model.train(training)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _autocast_dtype(device: torch.device | str, precision: str = DEFAULT_PRECISION) -> torch.dtype | None:
    """The autocast dtype of ``precision`` on ``device``: None (fp32) off CUDA and for "fp32"; fp16 or bf16 on CUDA."""
    _check_precision(precision)
    if torch.device(device).type != "cuda" or precision == "fp32":
        return None
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise ValueError("precision='bf16' needs a GPU with bfloat16 support (torch.cuda.is_bf16_supported() is False "
                         "here); use precision='fp16' (the authors' choice) or 'fp32'")
    return torch.bfloat16 if precision == "bf16" else torch.float16


def _check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS} (autocast on CUDA; CPU always runs fp32), "
                         f"got {precision!r}")


def _check_dim(
    name: str,
    features: Tensor,
    encode: Callable[[Tensor], Tensor],
    token_shape: tuple[int, int],
    tower: str,
    device: torch.device,
) -> None:
    """Compare the feature width with the tower's output width, found by encoding one all-zero pseudo token set."""
    with torch.no_grad():
        embed_dim = encode(torch.zeros(1, *token_shape, device=device)).shape[-1]
    if features.shape[1] != embed_dim:
        raise ValueError(
            f"{name} must have shape (N, {embed_dim}) to match the model's {tower} embedding, "
            f"got {tuple(features.shape)}"
        )

