"""``vfmkd verify --augment N`` on a store built in-process from a random SAM: every way's figures
against the live teacher on the augmented canvas, printed and written next to the store."""

import json

from tests.conftest import build_store_in_process
from vfmkd_ray.cli import main
from vfmkd_ray.store.augment_fidelity import FIDELITY_FILE, WAYS


def test_verify_augment_prints_and_writes_each_ways_fidelity(tiny_config, capsys):
    dataset = build_store_in_process(tiny_config)
    assert main(["verify", "--store", dataset, "--sample", "0", "--augment", "6"]) == 0
    out = capsys.readouterr().out
    assert "targets under augmentation, 6 samples of the s recipe:" in out
    assert all(f"image_embed      {way} " in out for way in WAYS)
    with open(f"{dataset}/{FIDELITY_FILE}") as file:
        written = json.load(file)
    assert (written["teacher"], written["canvas"], written["student_size"]) == ("sam_vit_b", 64, "s")
    [layer] = written["layers"]
    assert layer["layer"] == "image_embed" and layer["samples"] == 6 and 0 < layer["covered"] <= 1
    ways = layer["ways"]
    assert set(ways) == set(WAYS)
    assert all(-1 <= w["cosine"] <= 1 and w["relative_error"] >= 0 for w in ways.values())
    # Even a random ViT's map moves with the image: the warped target is nearer the live teacher on
    # the canvas than the sample's unmoved map (seeded: the same figures every run).
    assert ways["warp (geometry)"]["cosine"] > ways["plain"]["cosine"]
