"""The sam_mask head: SAM's decoder on the student, KD to a SAM teacher's masks, the head contract,
and the SAM checkpoint loader of ``models.teachers.sam_decoder``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

from vfmkd_ray.batch import MASK_STRIDE, Batch
from vfmkd_ray.data.coco import read_dataset
from vfmkd_ray.data.config import DataConfig, SyntheticConfig
from vfmkd_ray.data.image_tensors import normalize
from vfmkd_ray.data.samples import load_sample
from vfmkd_ray.data.synthetic import write_synthetic_coco
from vfmkd_ray.heads.base import DataNeeds, Features, HeadContext
from vfmkd_ray.heads.sam_mask.config import SamMaskHeadConfig
from vfmkd_ray.heads.sam_mask.head import SamMaskHead
from vfmkd_ray.heads.sam_mask.losses import binary_kl, sigmoid_focal_loss
from vfmkd_ray.losses.base import StudentLevels
from vfmkd_ray.losses.config import FeatureMSEConfig
from vfmkd_ray.losses.feature_mse import FeatureMSE
from vfmkd_ray.models.students.yolov8_cspdarknet import YOLOv8CSPDarknet
from vfmkd_ray.models.teachers.build import build_teacher
from vfmkd_ray.models.teachers.config import TeacherConfig
from vfmkd_ray.models.teachers.sam_decoder import SamPromptDecoder, build_sam_prompt_decoder

TEACHER = TeacherConfig(name="sam_vit_b", weights="random", input_size=256)
EMBED_TERM = "sam_s16"


@pytest.fixture(scope="module")
def backbone_info():
    return YOLOv8CSPDarknet("n", (1, 2, 3, 4)).feature_info


def _context(backbone_info, input_size: int, with_term: bool = False, **teachers) -> HeadContext:
    terms = {}
    if with_term:
        terms[EMBED_TERM] = FeatureMSE(
            EMBED_TERM, FeatureMSEConfig(), StudentLevels(backbone_info), "sam/image_embed", (256, 16, 16)
        )
    return HeadContext(
        backbone_info=backbone_info,
        neck_info=None,
        input_size=input_size,
        student_name="yolov8_cspdarknet",
        student_size="n",
        teacher_shapes={"sam": {"image_embed": (256, 16, 16)}},
        teachers=teachers,
        terms=terms,
    )


def _box_batch(size: int, boxes_per_image: list[list[list[float]]], max_masks: int = 4) -> Batch:
    """Images with an ellipse inside each box; every box has its mask."""
    num_images, grid = len(boxes_per_image), size // MASK_STRIDE
    boxes_BN4 = torch.zeros(num_images, 6, 4)
    labels_BN = torch.full((num_images, 6), -1)
    masks_BMhw = torch.zeros(num_images, max_masks, grid, grid, dtype=torch.uint8)
    mask_box_BM = torch.full((num_images, max_masks), -1)
    ys, xs = torch.meshgrid(torch.arange(grid) + 0.5, torch.arange(grid) + 0.5, indexing="ij")
    for image, boxes in enumerate(boxes_per_image):
        for row, box in enumerate(boxes):
            boxes_BN4[image, row] = torch.tensor(box)
            labels_BN[image, row] = row % 3
            x1, y1, x2, y2 = (v / MASK_STRIDE for v in box)
            inside = ((xs - (x1 + x2) / 2) / ((x2 - x1) / 2)) ** 2 + (
                (ys - (y1 + y2) / 2) / ((y2 - y1) / 2)
            ) ** 2
            masks_BMhw[image, row] = (inside <= 1).to(torch.uint8)
            mask_box_BM[image, row] = row
    images_BCHW = torch.randn(num_images, 3, size, size, generator=torch.Generator().manual_seed(1))
    return Batch(
        images_BCHW=images_BCHW,
        valid_hw_B2=torch.tensor([[size, size]] * num_images),
        boxes_BN4=boxes_BN4,
        labels_BN=labels_BN,
        masks_BMhw=masks_BMhw,
        mask_box_BM=mask_box_BM,
    )


def _random_features(backbone_info, size: int, num_images: int) -> Features:
    levels = tuple(
        torch.randn(num_images, channels, size // stride, size // stride, requires_grad=True)
        for channels, stride in zip(backbone_info.channels(), backbone_info.reduction(), strict=True)
    )
    return Features(backbone=levels, neck=None, adapted={})


def test_kd_is_zero_for_the_teachers_embedding_and_positive_otherwise(backbone_info):
    teacher = build_teacher(TEACHER)
    batch = _box_batch(256, [[[20, 30, 140, 120], [150, 40, 240, 230]], [[60, 60, 200, 180]]])
    with torch.no_grad():
        embed_BChw = teacher(batch.images_BCHW)["image_embed"]
    batch.teacher_features = {"sam/image_embed": embed_BChw}
    cfg = SamMaskHeadConfig(features=EMBED_TERM, teacher="sam", point_prompts=2)
    head = SamMaskHead("masks", cfg, _context(backbone_info, 256, with_term=True, sam=TEACHER))
    assert head.teacher_layers == ("sam/image_embed",)
    module = head.build_module()
    teacher_state = head._teacher_decoder.state_dict()
    for key, value in module.decoder.state_dict().items():
        assert torch.equal(value, teacher_state[key]), key

    student_BChw = embed_BChw.clone().requires_grad_(True)
    features = Features(backbone=(), neck=None, adapted={EMBED_TERM: student_BChw})
    same = head.loss(module, module(features), batch, rerun=None)
    assert abs(same["kd"].item()) < 1e-6
    same["loss"].backward()
    assert student_BChw.grad is not None
    assert all(not p.requires_grad and p.grad is None for p in head._teacher_decoder.parameters())

    # A random decoder's logits are small (std ~0.06 here), and so is its KL (~1e-4 for an unrelated
    # embedding): positive means well above the 1e-6 bound of the equal case.
    other_BChw = torch.randn(embed_BChw.shape, generator=torch.Generator().manual_seed(2))
    features = Features(backbone=(), neck=None, adapted={EMBED_TERM: other_BChw})
    assert head.loss(module, module(features), batch, rerun=None)["kd"].item() > 1e-5


def _synthetic_batch(root, size: int = 128, max_masks: int = 2) -> Batch:
    cfg = DataConfig(root=str(root), synthetic=SyntheticConfig(num_images=8, image_size=size))
    write_synthetic_coco(cfg)
    dataset = read_dataset(cfg)
    samples = [
        load_sample(r.image_uri, dataset.annotations.get(r.image_id), size, 0, "none", 100, max_masks)
        for r in dataset.records
    ]

    def stacked(key: str) -> torch.Tensor:
        return torch.from_numpy(np.stack([sample[key] for sample in samples]))

    return Batch(
        images_BCHW=normalize(stacked("image")),
        valid_hw_B2=stacked("valid_hw"),
        boxes_BN4=stacked("boxes"),
        labels_BN=stacked("labels"),
        masks_BMhw=stacked("masks"),
        mask_box_BM=stacked("mask_box"),
    )


def _predicted_miou(head, module, backbone, batch) -> float:
    with torch.no_grad():
        output = module(Features(backbone(batch.images_BCHW), None, {}))
        predictions = head.predict(module, output, batch, rerun=None)
    ious = []
    for image, prediction in enumerate(predictions):
        truth_Khw = batch.masks_BMhw[image, batch.mask_box_BM[image] >= 0] > 0
        assert torch.equal(prediction.box_index_M, batch.mask_box_BM[image, batch.mask_box_BM[image] >= 0])
        pred_Khw = prediction.logits_Mhw > 0
        inter_K = (pred_Khw & truth_Khw).flatten(1).sum(1)
        union_K = (pred_Khw | truth_Khw).flatten(1).sum(1).clamp_min(1)
        ious.append(inter_K / union_K)
    return torch.cat(ious).mean().item()


def test_mask_miou_rises_on_the_synthetic_train_set(tmp_path):
    # Box-prompted mIoU (via predict, as eval measures it) over seeds 0-15 of this run: first 0.07-0.08,
    # last 0.32-0.56, a gain of at least 0.25; a head that does not learn stays near 0.07. Asserting
    # +0.15 leaves room for other BLAS builds. (lr 1e-3 learns as fast but ends less steadily.)
    torch.manual_seed(0)
    batch = _synthetic_batch(tmp_path / "data")
    backbone = YOLOv8CSPDarknet("n", (1, 2, 3, 4))
    head = SamMaskHead("masks", SamMaskHeadConfig(max_masks=2), _context(backbone.feature_info, 128))
    module = head.build_module()
    params = [p for p in [*backbone.parameters(), *module.parameters()] if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=5e-4)
    first = _predicted_miou(head, module, backbone, batch)
    for _ in range(30):
        losses = head.loss(module, module(Features(backbone(batch.images_BCHW), None, {})), batch, None)
        optimizer.zero_grad()
        losses["loss"].backward()
        optimizer.step()
    last = _predicted_miou(head, module, backbone, batch)
    assert last > first + 0.15, (first, last)


CONTRACT_CASES = {
    "own_adapter_points": dict(point_prompts=2),
    "term_teacher": dict(features=EMBED_TERM, teacher="sam"),
    "own_adapter_teacher_frozen": dict(teacher="sam", decoder="frozen"),
}


@pytest.mark.parametrize("case", list(CONTRACT_CASES))
def test_head_contract(backbone_info, case):
    torch.manual_seed(0)
    size = 64
    cfg = SamMaskHeadConfig(**CONTRACT_CASES[case])
    head = SamMaskHead("masks", cfg, _context(backbone_info, size, with_term=True, sam=TEACHER))
    assert head.kind == "masks"
    assert head.needs() == DataNeeds(max_objects=100, max_masks=cfg.max_masks)
    module = head.build_module()
    decoder_trainable = [n for n, p in module.decoder.named_parameters() if p.requires_grad]
    assert (cfg.decoder == "frozen") == (not decoder_trainable)

    full = _box_batch(size, [[[4, 6, 40, 30], [30, 20, 60, 60]], [[10, 10, 50, 50]]])
    empty = _box_batch(size, [[], []])
    for batch in (full, empty):
        batch.teacher_features = {"sam/image_embed": torch.randn(2, 256, 16, 16)}
        features = _random_features(backbone_info, size, 2)
        adapted_BChw = torch.randn(2, 256, 16, 16, requires_grad=True)
        features = Features(features.backbone, None, {EMBED_TERM: adapted_BChw})
        module.zero_grad(set_to_none=True)
        losses = head.loss(module, module(features), batch, rerun=None)
        assert torch.isfinite(losses["loss"]) and losses["loss"].dim() == 0
        assert all(not v.requires_grad for k, v in losses.items() if k != "loss")
        losses["loss"].backward()
        trainable = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        assert trainable or cfg.features is not None
        assert not [n for n, p in trainable if p.grad is None], "gradient misses parameters"
        if batch is empty:
            assert losses["loss"].item() == 0.0 and losses["num_masks"].item() == 0
            assert all(torch.count_nonzero(p.grad) == 0 for _, p in trainable)

    fresh = head.build_module()
    fresh.load_state_dict(module.state_dict(), strict=True)
    with torch.no_grad():
        predictions = head.predict(module, module(features), full, rerun=None)
    assert [len(p.scores_M) for p in predictions] == [2, 1]
    assert predictions[0].logits_Mhw.shape == (2, size // MASK_STRIDE, size // MASK_STRIDE)


def test_point_prompts_reach_the_positive_point_embedding_only(backbone_info):
    with_points = SamMaskHead("m", SamMaskHeadConfig(point_prompts=1), _context(backbone_info, 64))
    boxes_only = SamMaskHead("m", SamMaskHeadConfig(), _context(backbone_info, 64))
    name = "decoder.prompt_encoder.point_embeddings.1.weight"
    assert dict(with_points.build_module().named_parameters())[name].requires_grad
    assert not dict(boxes_only.build_module().named_parameters())[name].requires_grad


def test_batched_decode_equals_sams_mask_decoder():
    torch.manual_seed(0)
    decoder = SamPromptDecoder((4, 4), 64).eval()
    embed_2Chw = torch.randn(2, 256, 4, 4)
    boxes_K4 = torch.tensor([[2.0, 3.0, 40.0, 30.0], [10.0, 12.0, 60.0, 50.0], [0.0, 0.0, 63.0, 63.0]])
    points_KP2 = torch.rand(3, 2, 2) * 64
    image_K = torch.tensor([0, 0, 1])
    with torch.no_grad():
        logits_KHW, iou_K = decoder.decode(embed_2Chw[image_K], boxes_K4, points_KP2)
        for image in (0, 1):
            mine = image_K == image
            points = (points_KP2[mine], torch.ones(int(mine.sum()), 2))
            sparse, dense = decoder.prompt_encoder(points=points, boxes=boxes_K4[mine], masks=None)
            expected, expected_iou = decoder.mask_decoder(
                embed_2Chw[image : image + 1], decoder.prompt_encoder.get_dense_pe(), sparse, dense, False
            )
            torch.testing.assert_close(logits_KHW[mine], expected[:, 0], atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(iou_K[mine], expected_iou[:, 0], atol=1e-5, rtol=1e-4)
    assert logits_KHW.shape == (3, 16, 16)


def test_losses_match_references_and_kd_is_exact_zero():
    logits_Khw = torch.randn(3, 8, 8) * 3
    targets_Khw = (torch.rand(3, 8, 8) > 0.5).float()
    ones_Khw = torch.ones_like(logits_Khw)
    reference = torchvision.ops.sigmoid_focal_loss(logits_Khw, targets_Khw, reduction="mean")
    torch.testing.assert_close(sigmoid_focal_loss(logits_Khw, targets_Khw, ones_Khw), reference)
    assert binary_kl(logits_Khw, logits_Khw.clone(), ones_Khw, 2.0).item() == 0.0
    assert binary_kl(logits_Khw, -logits_Khw, ones_Khw, 2.0).item() > 0.1


def _sam_checkpoint(decoder: SamPromptDecoder) -> dict[str, torch.Tensor]:
    state = dict(decoder.state_dict())
    state["image_encoder.pos_embed"] = torch.zeros(1, 4, 4, 8)
    state["image_encoder.neck.0.weight"] = torch.ones(3)
    return state


def test_build_sam_prompt_decoder_loads_a_sam_checkpoint(tmp_path):
    torch.manual_seed(3)
    source = SamPromptDecoder((64, 64), 1024)
    path = tmp_path / "sam_vit_b_01ec64.pth"
    torch.save(_sam_checkpoint(source), path)
    loaded = build_sam_prompt_decoder(TeacherConfig(name="sam_vit_b", weights=str(path), input_size=256))
    assert loaded.embed_hw == (16, 16) and loaded.input_size == 256
    expected = source.state_dict()
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, expected[key]), key

    encoder_only = tmp_path / "encoder_only.pth"
    torch.save({"image_encoder.pos_embed": torch.zeros(1, 4, 4, 8)}, encoder_only)
    with pytest.raises(ValueError, match="encoder_only.pth"):
        build_sam_prompt_decoder(TeacherConfig(name="sam_vit_b", weights=str(encoder_only), input_size=256))


def test_random_decoder_is_seeded_and_leaves_the_callers_rng_alone():
    state = torch.random.get_rng_state()
    first = build_sam_prompt_decoder(TeacherConfig(name="sam_vit_l", weights="random", input_size=64))
    assert torch.equal(torch.random.get_rng_state(), state)
    again = build_sam_prompt_decoder(TeacherConfig(name="sam_vit_l", weights="random", input_size=64))
    other = build_sam_prompt_decoder(
        TeacherConfig(name="sam_vit_l", weights="random", input_size=64, random_seed=1)
    )
    key = "mask_decoder.iou_token.weight"
    assert torch.equal(first.state_dict()[key], again.state_dict()[key])
    assert not torch.equal(first.state_dict()[key], other.state_dict()[key])


def test_bad_teachers_and_feature_terms_are_named(backbone_info):
    with pytest.raises(ValueError, match="dinov2_vits14"):
        build_sam_prompt_decoder(TeacherConfig(name="dinov2_vits14", weights="random", input_size=56))
    dino = TeacherConfig(name="dinov2_vits14", weights="random", input_size=56)
    with pytest.raises(ValueError, match="dinov2_vits14"):
        SamMaskHead("m", SamMaskHeadConfig(teacher="dino"), _context(backbone_info, 64, dino=dino))
    with pytest.raises(ValueError, match="'nope'"):
        SamMaskHead("m", SamMaskHeadConfig(teacher="nope"), _context(backbone_info, 64))
    context = _context(backbone_info, 64)
    context.terms["dino_s16"] = FeatureMSE(
        "dino_s16", FeatureMSEConfig(), StudentLevels(backbone_info), "dino/patch_tokens", (384, 4, 4)
    )
    with pytest.raises(ValueError, match="'dino_s16'.*384"):
        SamMaskHead("m", SamMaskHeadConfig(features="dino_s16"), context)
    with pytest.raises(ValueError, match="'missing'"):
        SamMaskHead("m", SamMaskHeadConfig(features="missing"), context)
