"""Object storage through a real S3 endpoint (moto server on 127.0.0.1), without Ray."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.yolo_layout import write_yolo_copy
from vfmkd_ray import storage
from vfmkd_ray.config import dump_config, load_config, validate_config
from vfmkd_ray.data.coco import read_dataset, read_image_records
from vfmkd_ray.data.config import DataConfig, SyntheticConfig
from vfmkd_ray.data.samples import load_letterboxed
from vfmkd_ray.data.synthetic import write_synthetic_coco
from vfmkd_ray.object_storage import S3Config, forwarded_env, secrets_left_behind
from vfmkd_ray.store.parts import PartWriter, list_parts, stored_image_ids
from vfmkd_ray.store.schema import feature_column


def test_atomic_write_list_and_read_on_s3(s3_bucket):
    uri = storage.join(s3_bucket, "dir", "a.bin")
    storage.write_bytes_atomic(uri, b"payload")
    assert storage.exists(uri)
    assert storage.read_bytes(uri) == b"payload"
    assert storage.list_files(storage.join(s3_bucket, "dir"), "*.bin") == [uri]
    with pytest.raises(FileNotFoundError, match="not found: s3://"):
        storage.read_bytes(storage.join(s3_bucket, "dir", "missing.bin"))


def test_synthetic_coco_and_images_on_s3(s3_bucket, tiny_config):
    data = tiny_config.data.model_copy(update={"root": f"{s3_bucket}/coco"})
    assert write_synthetic_coco(data) == 16
    records = read_image_records(data)
    assert records[0].image_uri.startswith(f"{s3_bucket}/coco/images/")
    canvas, (height, width) = load_letterboxed(records[0].image_uri, 64, 0, "none")
    assert canvas.shape == (3, 64, 64) and max(height, width) == 64


def test_a_yolo_dataset_on_s3_reads_as_its_local_copy(s3_bucket, tmp_path):
    local = DataConfig(root=str(tmp_path / "coco"), synthetic=SyntheticConfig(num_images=4, image_size=64))
    write_synthetic_coco(local)
    yolo = write_yolo_copy(Path(local.root), tmp_path / "yolo")
    for path in sorted(p for p in yolo.rglob("*") if p.is_file()):
        storage.write_bytes_atomic(f"{s3_bucket}/yolo/{path.relative_to(yolo)}", path.read_bytes())
    here = read_dataset(DataConfig(root=str(yolo), format="yolo"))
    there = read_dataset(DataConfig(root=f"{s3_bucket}/yolo", format="yolo"))
    assert there.records[0].image_uri == f"{s3_bucket}/yolo/images/000001.png"
    assert [(r.image_id, r.width, r.height) for r in there.records] == [
        (r.image_id, r.width, r.height) for r in here.records
    ]
    assert there.annotations == here.annotations  # annotation ids name labels/<stem>.txt:<line>


def test_store_parts_on_s3(s3_bucket):
    dataset = f"{s3_bucket}/store/sam_vit_b/64"
    batch = {
        "image_id": np.array(["a", "b"]),
        "image_uri": np.array(["s3://x/a.png", "s3://x/b.png"]),
        "aug_seed": np.arange(2),
        "valid_h": np.full(2, 64),
        "valid_w": np.full(2, 64),
        feature_column("image_embed"): np.zeros((2, 4, 2, 2), np.float32),
    }
    PartWriter(dataset, ["image_embed"], "int8")(batch)
    assert [p.rsplit("/", 1)[0] for p in list_parts(dataset)] == [dataset]
    assert sorted(stored_image_ids(dataset)) == ["a", "b"]


def test_credentials_from_config_reach_the_environment_but_not_the_saved_config(monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    cfg = load_config(
        None,
        [
            "s3.endpoint_url=http://127.0.0.1:9",
            "s3.access_key_id=AKIDSECRET1",
            "s3.secret_access_key=TOPSECRET2",
        ],
    )
    cfg.s3.apply()
    assert os.environ["AWS_ACCESS_KEY_ID"] == "AKIDSECRET1"  # this process (and a local Ray) has them
    env = forwarded_env()  # what may travel to a cluster in a runtime env: never the keys
    assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:9"
    assert "AWS_ACCESS_KEY_ID" not in env and "AWS_SECRET_ACCESS_KEY" not in env
    assert secrets_left_behind() == ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]
    saved = dump_config(cfg) + json.dumps(cfg.model_dump(mode="json")) + repr(cfg) + str(cfg.s3)
    assert "AKIDSECRET1" not in saved and "TOPSECRET2" not in saved
    assert isinstance(cfg.s3, S3Config)
    # A saved config read back (vfmkd eval on resolved_config.yaml) leaves the real keys alone.
    read_back = validate_config(yaml.safe_load(dump_config(cfg)))
    assert read_back.s3.access_key_id is None and read_back.s3.secret_access_key is None
    read_back.s3.apply()
    assert os.environ["AWS_SECRET_ACCESS_KEY"] == "TOPSECRET2"


def test_unreachable_endpoint_is_a_storage_error_naming_the_uri(monkeypatch):
    import fsspec

    from vfmkd_ray.data.samples import load_letterboxed

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens on port 9
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    fsspec.filesystem("s3").clear_instance_cache()
    try:
        with pytest.raises(storage.StorageError, match=r"cannot access s3://nowhere/a\.png"):
            load_letterboxed("s3://nowhere/a.png", 64, 0, "none")
    finally:
        fsspec.filesystem("s3").clear_instance_cache()
