"""SAM's promptable half: ``PromptEncoder`` + ``MaskDecoder`` as one module, and its builder.

Follows segment-anything (Kirillov et al., "Segment Anything", 2023): the constructor arguments are
those of ``segment_anything/build_sam.py`` and the child names are SAM's, so an official checkpoint's
``prompt_encoder.*`` / ``mask_decoder.*`` keys load with ``strict=True``. Neither child holds a
size-dependent tensor (the prompt encoder's random Fourier features are size-free), so one set of
weights serves any embedding grid and input size: a 1024 px teacher and a 256 px student alike.

Legend: K prompts, P points per prompt, T tokens (O output tokens, then the prompt's), C the 256
embedding channels, h/w the embedding grid, L = h * w, H/W the 4h x 4w grid the masks come out on.
"""

from __future__ import annotations

import torch
from torch import nn

from vfmkd_ray.models.checkpoint_io import load_weights
from vfmkd_ray.models.teachers.base import RANDOM_WEIGHTS
from vfmkd_ray.models.teachers.config import TeacherConfig
from vfmkd_ray.models.teachers.sam import SAM_OUT_CHANNELS, SAM_PATCH, SAM_SPECS

SAM_MASK_IN_CHANS = 16
SAM_MULTIMASK_OUTPUTS = 3
CHECKPOINT_PREFIXES = ("prompt_encoder.", "mask_decoder.")
# Random decoders draw from seed ``random_seed + DECODER_SEED_OFFSET``: a stream apart from the one
# ``build_teacher`` seeds the image encoder with (``random_seed``), so the two inits do not share draws.
DECODER_SEED_OFFSET = 7919


class SamPromptDecoder(nn.Module):
    """SAM's prompt encoder and mask decoder for one embedding grid and input size.

    Args:
        embed_hw: the image embedding's grid (h, w).
        input_size: the side of the square input that prompt coordinates are given in.
    """

    def __init__(self, embed_hw: tuple[int, int], input_size: int) -> None:
        super().__init__()
        from segment_anything.modeling import MaskDecoder, PromptEncoder, TwoWayTransformer  # as in sam.py

        self.prompt_encoder = PromptEncoder(
            embed_dim=SAM_OUT_CHANNELS,
            image_embedding_size=tuple(embed_hw),
            input_image_size=(input_size, input_size),
            mask_in_chans=SAM_MASK_IN_CHANS,
        )
        self.mask_decoder = MaskDecoder(
            num_multimask_outputs=SAM_MULTIMASK_OUTPUTS,
            transformer=TwoWayTransformer(depth=2, embedding_dim=SAM_OUT_CHANNELS, mlp_dim=2048, num_heads=8),
            transformer_dim=SAM_OUT_CHANNELS,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        )

    @property
    def embed_hw(self) -> tuple[int, int]:
        return tuple(self.prompt_encoder.image_embedding_size)

    @property
    def input_size(self) -> int:
        return int(self.prompt_encoder.input_image_size[0])

    def with_geometry(self, embed_hw: tuple[int, int], input_size: int) -> SamPromptDecoder:
        """A new decoder for another grid and input size holding a copy of these weights."""
        reference = next(self.parameters())
        other = SamPromptDecoder(embed_hw, input_size).to(device=reference.device, dtype=reference.dtype)
        other.load_state_dict(self.state_dict(), strict=True)
        return other

    def decode(
        self,
        embed_KChw: torch.Tensor,
        boxes_K4: torch.Tensor,
        points_KP2: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Single-mask prediction for K box prompts (and positive points), each on its own image.

        ``MaskDecoder.predict_masks`` repeats one image's embedding over that image's prompts; this
        is the same computation given each prompt's embedding (``embed_BChw[image_K]``), so the
        prompts of a whole batch run as one batch. Only the first (single-mask) output token's
        hypernetwork runs, as ``MaskDecoder.forward(multimask_output=False)`` keeps only its mask.

        Args:
            embed_KChw: each prompt's image embedding, K x 256 x h x w on ``embed_hw``.
            boxes_K4: ``x1, y1, x2, y2`` in input pixels.
            points_KP2: ``x, y`` of positive points in input pixels, or None for boxes only.

        Returns:
            ``K x 4h x 4w`` mask logits and the ``K`` predicted IoUs.
        """
        if tuple(embed_KChw.shape[-2:]) != self.embed_hw or embed_KChw.shape[0] != boxes_K4.shape[0]:
            raise ValueError(
                f"decode takes one embedding on grid {self.embed_hw} per prompt, got "
                f"{tuple(embed_KChw.shape)} for {boxes_K4.shape[0]} boxes"
            )
        points = None
        if points_KP2 is not None:
            points = (points_KP2, torch.ones(points_KP2.shape[:2], device=points_KP2.device))
        sparse_KTC, dense_KChw = self.prompt_encoder(points=points, boxes=boxes_K4, masks=None)
        decoder = self.mask_decoder
        output_tokens_OC = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
        tokens_KTC = torch.cat([output_tokens_OC.expand(len(boxes_K4), -1, -1), sparse_KTC], dim=1)
        src_KChw = embed_KChw + dense_KChw
        pos_KChw = self.prompt_encoder.get_dense_pe().expand_as(src_KChw)
        hs_KTC, src_KLC = decoder.transformer(src_KChw, pos_KChw, tokens_KTC)
        num_masks, channels, height, width = src_KChw.shape
        upscaled_KCHW = decoder.output_upscaling(
            src_KLC.transpose(1, 2).reshape(num_masks, channels, height, width)
        )
        hyper_KC = decoder.output_hypernetworks_mlps[0](hs_KTC[:, 1])
        logits_KHW = torch.einsum("kc,kchw->khw", hyper_KC, upscaled_KCHW)
        iou_K = decoder.iou_prediction_head(hs_KTC[:, 0])[:, 0]
        return logits_KHW, iou_K

    def unused_parameter_names(self, with_points: bool) -> list[str]:
        """Parameters that single-mask box prompting (with positive points when ``with_points``)
        never reaches: negative-point, padding-point and mask-prompt embeddings, and the
        hypernetwork MLPs of the three multimask outputs."""
        unused_prefixes = [
            "prompt_encoder.point_embeddings.0.",  # negative points
            "prompt_encoder.not_a_point_embed.",  # padding point, added only when no box is given
            "prompt_encoder.mask_downscaling.",  # mask prompts
        ]
        if not with_points:
            unused_prefixes.append("prompt_encoder.point_embeddings.1.")  # positive points
        for index in range(1, 1 + SAM_MULTIMASK_OUTPUTS):
            unused_prefixes.append(f"mask_decoder.output_hypernetworks_mlps.{index}.")
        return [name for name, _ in self.named_parameters() if name.startswith(tuple(unused_prefixes))]

    def load_checkpoint(self, state_dict: dict[str, torch.Tensor], source: str) -> None:
        """Loads the ``prompt_encoder.*`` / ``mask_decoder.*`` keys of a SAM checkpoint; the rest
        (``image_encoder.*``) is ignored.

        Raises:
            ValueError: the checkpoint (named by ``source``) lacks or mismatches those keys.
        """
        own = {k: v for k, v in state_dict.items() if k.startswith(CHECKPOINT_PREFIXES)}
        if not own:
            raise ValueError(
                f"{source} holds no SAM prompt encoder / mask decoder "
                f"(no {' or '.join(p + '*' for p in CHECKPOINT_PREFIXES)} keys)"
            )
        try:
            self.load_state_dict(own, strict=True)
        except RuntimeError as err:
            raise ValueError(f"{source}: SAM prompt encoder / mask decoder do not load: {err}") from None


def build_sam_prompt_decoder(teacher: TeacherConfig) -> SamPromptDecoder:
    """The prompt encoder and mask decoder of the SAM teacher ``teacher``, for its input size.

    Random weights (``weights: random``) are drawn from seed ``random_seed + DECODER_SEED_OFFSET``
    inside ``fork_rng``, so the caller's RNG is untouched; otherwise the checkpoint's
    ``prompt_encoder.*`` / ``mask_decoder.*`` tensors are loaded (sha256-checked when given).

    Raises:
        ValueError: not a SAM teacher, no weights set, a bad input size, or a checkpoint without a
            prompt encoder and mask decoder (naming the file).
    """
    if teacher.name not in SAM_SPECS:
        raise ValueError(f"teacher {teacher.name} has no SAM mask decoder; SAM teachers: {sorted(SAM_SPECS)}")
    if teacher.input_size % SAM_PATCH:
        raise ValueError(f"teacher.input_size must be a multiple of {SAM_PATCH}, got {teacher.input_size}")
    if teacher.weights is None:
        raise ValueError(f"teacher.weights is not set for {teacher.name}: give a checkpoint or 'random'")
    side = teacher.input_size // SAM_PATCH
    if teacher.weights == RANDOM_WEIGHTS:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(teacher.random_seed + DECODER_SEED_OFFSET)
            return SamPromptDecoder((side, side), teacher.input_size)
    decoder = SamPromptDecoder((side, side), teacher.input_size)
    decoder.load_checkpoint(load_weights(teacher.weights, teacher.sha256).state_dict, teacher.weights)
    return decoder
