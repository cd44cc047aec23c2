"""Box encoding, crop remap, LSM crop search and fusion."""

import torch

from vfmkd_ray.heads.base import Detections
from vfmkd_ray.heads.yolc.boxes import decode, encode, remap, to_patch
from vfmkd_ray.heads.yolc.config import LSMConfig
from vfmkd_ray.heads.yolc.crops import crop_and_zoom
from vfmkd_ray.heads.yolc.inference import fuse
from vfmkd_ray.heads.yolc.lsm import find_clusters

STRIDE = 4


def test_decode_inverts_the_target_encoding():
    torch.manual_seed(0)
    xy = torch.rand(50, 2) * 120
    boxes = torch.cat([xy, xy + 2 + torch.rand(50, 2) * 20], dim=1)
    cells = (((boxes[:, :2] + boxes[:, 2:]) / 2) // STRIDE).long()
    codes = encode(boxes, cells, STRIDE)
    box_map = torch.zeros(1, 4, 40, 40)
    box_map[0, :, cells[:, 1], cells[:, 0]] = codes.T
    decoded = decode(box_map, STRIDE)[0, :, cells[:, 1], cells[:, 0]].T
    # Shared cells hold the last box written there; compare those rows only.
    last = {(int(c[0]), int(c[1])): k for k, c in enumerate(cells)}
    rows = sorted(last.values())
    torch.testing.assert_close(decoded[rows], boxes[rows], atol=1e-4, rtol=0)


def test_remap_inverts_crop_and_zoom():
    images = torch.randn(2, 3, 96, 96)
    crops = [[(10.0, 20.0, 50.0, 44.0)], [(0.0, 0.0, 96.0, 30.0), (60.5, 61.2, 90.0, 95.0)]]
    patches, metas = crop_and_zoom(images, crops, zoom=2.0, patch_size=96)
    assert patches.shape == (3, 3, 96, 96) and [m.image_index for m in metas] == [0, 1, 1]
    assert metas[0].scale_x == 2.0 and metas[1].scale_x < 2.0, "a wide crop is zoomed less to fit"
    boxes = torch.tensor([[12.0, 22.0, 30.0, 40.0], [48.0, 21.0, 50.0, 44.0]])
    for meta in metas:
        torch.testing.assert_close(remap(to_patch(boxes, meta), meta), boxes, atol=1e-5, rtol=0)
    # The patch pixels are the crop's pixels, zoomed: its top-left pixel equals the image's.
    zoomed = torch.nn.functional.interpolate(images[:1, :, 20:44, 10:50], size=(48, 80), mode="bilinear")
    torch.testing.assert_close(patches[0, :, :48, :80], zoomed[0])
    assert not patches[0, :, 48:, :].any(), "the canvas around the crop is zero"


def _blob(heatmap, cx, cy, half):
    heatmap[0, cy - half : cy + half, cx - half : cx + half] = 0.9


def test_find_clusters_finds_known_clusters_and_stays_in_the_image():
    heatmap = torch.zeros(3, 64, 64)  # a 256 px image at stride 4
    _blob(heatmap, 4, 4, 4)  # cluster A in the top-left corner
    _blob(heatmap, 45, 40, 6)  # cluster B, larger
    cfg = LSMConfig(score_threshold=0.5, cell=4, min_density=0.05, enlarge=1.5)
    crops = find_clusters(heatmap, (256, 256), STRIDE, cfg, max_patches=3, min_patch_size=8)
    assert len(crops) == 2
    largest = crops[0]
    assert largest[0] <= 39 * 4 and largest[2] >= 51 * 4, "B first, covering its blob"
    assert all(0 <= x1 < x2 <= 256 and 0 <= y1 < y2 <= 256 for x1, y1, x2, y2 in crops)
    assert crops[1][0] == 0.0 and crops[1][1] == 0.0, "A's enlarged crop is clamped to the image"
    assert len(find_clusters(heatmap, (256, 256), STRIDE, cfg, max_patches=1, min_patch_size=8)) == 1
    assert find_clusters(heatmap, (256, 256), STRIDE, cfg, max_patches=3, min_patch_size=100) == []


def test_find_clusters_returns_nothing_without_dense_foreground():
    cfg = LSMConfig(score_threshold=0.5, cell=8, min_density=0.1)
    assert find_clusters(torch.zeros(3, 64, 64), (256, 256), STRIDE, cfg, 4, 8) == []
    sparse = torch.zeros(3, 64, 64)
    sparse[1, 10, 10] = sparse[2, 50, 30] = 0.95  # two lone objects: 1/64 of a cell each
    assert find_clusters(sparse, (256, 256), STRIDE, cfg, 4, 4) == []


def test_fusion_replaces_whole_image_boxes_inside_a_crop():
    whole = Detections(
        torch.tensor([[10.0, 10.0, 20.0, 20.0], [100.0, 100.0, 110.0, 110.0], [45.0, 45.0, 70.0, 70.0]]),
        torch.tensor([0.9, 0.8, 0.7]),
        torch.tensor([0, 1, 2]),
    )
    from_crop = Detections(torch.tensor([[11.0, 11.0, 19.0, 21.0]]), torch.tensor([0.6]), torch.tensor([0]))
    fused = fuse(whole, [(0.0, 0.0, 50.0, 50.0)], from_crop, iou=0.5, limit=10)
    kept = {tuple(b) for b in fused.boxes.tolist()}
    assert (11.0, 11.0, 19.0, 21.0) in kept, "the crop's box replaces the whole-image one"
    assert (10.0, 10.0, 20.0, 20.0) not in kept
    assert (100.0, 100.0, 110.0, 110.0) in kept and (45.0, 45.0, 70.0, 70.0) in kept, (
        "outside or straddling: kept"
    )
