"""The contract of every registered head (``heads.base``), through the one model and the one step:
finite loss, gradients into every trainable parameter (also on a batch without ground truth),
predictions of the right shape, and a strict state-dict round trip."""

import pytest
import torch

from tests.batches import dataset_batch
from vfmkd_ray.batch import MASK_STRIDE
from vfmkd_ray.config import load_config
from vfmkd_ray.heads.base import Detections, MaskPredictions
from vfmkd_ray.heads.registry import HEADS
from vfmkd_ray.models.build import build_model
from vfmkd_ray.training.step import model_step

SIZE = 64
HEAD_CONFIGS = {
    "yolov8": ["neck={type: yolov8_pafpn}", "heads.h={type: yolov8, num_classes: 3}"],
    "yolc": ["neck={type: stride4, channels: 16}", "heads.h={type: yolc, num_classes: 3, patch_size: 32}"],
    "sam_mask": ["heads.h={type: sam_mask, max_masks: 3}"],
}


def _config(tmp_path, head_type: str):
    return load_config(
        None,
        [
            f"data.root={tmp_path}/data",
            "data.synthetic.num_images=4",
            f"data.synthetic.image_size={SIZE}",
            f"data.input_size={SIZE}",
            "teachers={}",
            "distill.terms={}",
            *HEAD_CONFIGS[head_type],
        ],
    )


def test_every_registered_head_has_a_contract_config():
    assert set(HEADS.names()) == set(HEAD_CONFIGS)


@pytest.mark.parametrize("head_type", sorted(HEAD_CONFIGS))
def test_head_contract(tmp_path, head_type):
    cfg = _config(tmp_path, head_type)
    parts = build_model(cfg)
    head, module = parts.heads["h"], parts.model.heads["h"]
    needs = head.needs()
    batch = dataset_batch(cfg, needs.max_objects, needs.max_masks)
    trainable = [p for p in module.parameters() if p.requires_grad]
    assert trainable, "a head with nothing to train"
    for ground_truth in (True, False):
        if not ground_truth:  # no objects, no masks: the loss still reaches every parameter
            batch.labels_BN = torch.full_like(batch.labels_BN, -1)
            if batch.mask_box_BM is not None:
                batch.mask_box_BM = torch.full_like(batch.mask_box_BM, -1)
        parts.model.zero_grad(set_to_none=True)
        out = model_step(parts.model, batch, parts)
        assert torch.isfinite(out["loss"]) and torch.isfinite(out["loss/h"])
        out["loss"].backward()
        missing = [n for n, p in module.named_parameters() if p.requires_grad and p.grad is None]
        assert not missing, f"no gradient for {missing[:5]} (ground truth: {ground_truth})"

    _same_loss_in_channels_last_memory(cfg, batch)

    parts.model.eval()
    batch = dataset_batch(cfg, needs.max_objects, needs.max_masks)
    with torch.no_grad():
        output = parts.model(batch.images_BCHW).heads["h"]
        for mode in head.eval_modes():
            predictions = head.predict(module, output, batch, lambda x: parts.model.head_output("h", x), mode)
            assert len(predictions) == len(batch)
            for found in predictions:
                if head.kind == "boxes":
                    assert isinstance(found, Detections) and found.boxes.shape[1:] == (4,)
                    assert len(found.scores) == len(found.labels) == len(found.boxes)
                else:
                    assert isinstance(found, MaskPredictions)
                    assert found.logits_Mhw.shape[1:] == (SIZE // MASK_STRIDE, SIZE // MASK_STRIDE)
                    assert len(found.scores_M) == len(found.box_index_M) == len(found.logits_Mhw)

    fresh = build_model(cfg.model_copy(update={"seed": 7})).model
    fresh.heads["h"].load_state_dict(module.state_dict(), strict=True)
    for key, value in module.state_dict().items():
        torch.testing.assert_close(fresh.heads["h"].state_dict()[key], value)


def _same_loss_in_channels_last_memory(cfg, batch) -> None:
    """``train.channels_last``: the head's loss and gradients do not depend on the memory layout
    (no ``view`` of a feature map that only a contiguous layout allows)."""
    results = []
    for channels_last in (False, True):
        parts = build_model(cfg)
        if channels_last:
            parts.model.to(memory_format=torch.channels_last)
        out = model_step(parts.model, batch, parts)
        out["loss"].backward()
        grads = {n: p.grad for n, p in parts.model.named_parameters() if p.grad is not None}
        results.append((out["loss"].detach(), grads))
    (plain_loss, plain_grads), (loss, grads) = results
    torch.testing.assert_close(loss, plain_loss, rtol=1e-4, atol=1e-5)
    assert grads.keys() == plain_grads.keys()
    for name, grad in grads.items():
        # Another convolution algorithm sums in another order: equal up to float32 rounding,
        # measured against the tensor's largest gradient (2e-4 at most here).
        scale = plain_grads[name].abs().max().clamp_min(1e-12)
        assert float((grad - plain_grads[name]).abs().max() / scale) < 1e-3, name
