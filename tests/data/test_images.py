"""Image decoding against hostile files: decompression bombs, EXIF orientation, 16-bit and palette
modes, file names that leave the images folder, and files that are not the annotated size. Every
file is a real one written here."""

import io
import json
import struct
import warnings
import zlib

import numpy as np
import pydantic
import pytest
from PIL import Image, ImageFile

from vfmkd_ray.data.bad_samples import BadSampleLog
from vfmkd_ray.data.coco import read_image_records, uri_inside
from vfmkd_ray.data.config import DataConfig
from vfmkd_ray.data.image_loader import ImageLoader
from vfmkd_ray.data.images import BadImageError, decode_image
from vfmkd_ray.data.samples import IMAGE_COLUMN, read_image

BOMB_SIDE = 14_000
BOMB_MESSAGE = "is 14000x14000 = 196000000 pixels, above data.max_image_pixels=100000000"


def _png(width: int, height: int, color_type: int, bit_depth: int, row: bytes) -> bytes:
    """A PNG whose every row is ``row`` (filter byte 0 added), compressed row by row: a huge
    image of one color costs a few hundred KB and never a full raster in memory."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
        )

    compressor = zlib.compressobj(6)
    line = b"\x00" + row
    idat = b"".join(compressor.compress(line) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _gray_png(width: int, height: int) -> bytes:
    return _png(width, height, 0, 8, bytes(width))


@pytest.fixture(scope="module")
def bomb(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("bomb") / "bomb.png"
    path.write_bytes(_gray_png(BOMB_SIDE, BOMB_SIDE))
    return str(path)


def _save(tmp_path, name: str, image: Image.Image, **options) -> str:
    path = tmp_path / name
    image.save(path, **options)
    return str(path)


def test_the_png_writer_makes_real_pngs():
    image = decode_image(_gray_png(30, 20), "small.png")
    assert image.shape == (20, 30, 3) and image.max() == 0


def test_a_decompression_bomb_is_refused_from_its_header(bomb, monkeypatch):
    def no_pixels(self):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_pixels)
    with pytest.raises(BadImageError, match=f"image .*bomb.png {BOMB_MESSAGE}$"):
        read_image(bomb)


def test_the_pixel_limit_is_the_callers_not_pils_global(tmp_path, monkeypatch):
    uri = str(tmp_path / "square.png")
    (tmp_path / "square.png").write_bytes(_gray_png(100, 100))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)  # would make PIL itself refuse or warn
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_image(uri, max_pixels=10_000).shape == (100, 100, 3)
    with pytest.raises(BadImageError, match="is 100x100 = 10000 pixels, above data.max_image_pixels=9999"):
        read_image(uri, max_pixels=9_999)


def test_max_image_pixels_is_validated():
    assert DataConfig().max_image_pixels == 100_000_000
    with pytest.raises(pydantic.ValidationError, match="max_image_pixels"):
        DataConfig(max_image_pixels=10)


def test_image_loader_records_a_bomb_as_skipped(bomb, tmp_path):
    good = tmp_path / "good.png"
    good.write_bytes(_gray_png(40, 30))
    batch = {
        "image_id": np.array(["good", "bomb"]),
        "image_uri": np.array([str(good), bomb]),
        "aug_seed": np.zeros(2, np.int64),
    }
    with pytest.raises(BadImageError, match=BOMB_MESSAGE):
        list(ImageLoader(64, "none", max_pixels=100_000_000)(batch))
    log = BadSampleLog(str(tmp_path / "bad"))
    [out] = list(ImageLoader(64, "none", log, max_pixels=100_000_000)(batch))
    assert list(out["image_id"]) == ["good"] and out[IMAGE_COLUMN].shape == (1, 3, 64, 64)
    [skipped] = log.read_all()
    assert skipped.image_id == "bomb" and skipped.stage == "precompute" and BOMB_MESSAGE in skipped.error


@pytest.mark.parametrize(
    ("orientation", "red_rows", "red_cols"),
    [(6, slice(0, 32), slice(32, 64)), (8, slice(64, 96), slice(0, 32))],
)
def test_exif_orientation_is_applied(tmp_path, orientation, red_rows, red_cols):
    stored = np.zeros((64, 96, 3), np.uint8)  # 96 wide, 64 high, red top-left block
    stored[:32, :32] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = orientation  # 6: display rotated 90 degrees clockwise; 8: counter-clockwise
    uri = _save(tmp_path, "rotated.jpg", Image.fromarray(stored), exif=exif, quality=95)
    image = read_image(uri, expected_wh=(64, 96))  # the displayed size, as COCO gives it
    assert image.shape == (96, 64, 3)
    red = np.zeros((96, 64), bool)
    red[red_rows, red_cols] = True
    assert image[red][:, 0].mean() > 200 and image[red][:, 1:].mean() < 40
    assert image[~red].mean() < 20
    with pytest.raises(BadImageError, match="is 64x96 but the annotations say 96x64"):
        read_image(uri, expected_wh=(96, 64))


def test_sixteen_bit_gray_png_keeps_its_brightness(tmp_path):
    mid_gray = np.full((20, 30), 32896, np.uint16)  # 128 * 257
    uri = _save(tmp_path, "gray16.png", Image.fromarray(mid_gray))
    assert Image.open(uri).mode == "I;16"
    image = read_image(uri)
    assert image.dtype == np.uint8 and image.shape == (20, 30, 3) and np.all(image == 128)
    ramp = np.tile(np.linspace(0, 65535, 256).astype(np.uint16), (4, 1))
    ramp_image = read_image(_save(tmp_path, "ramp16.png", Image.fromarray(ramp)))
    assert abs(ramp_image.mean() - 127.5) < 1 and ramp_image.min() == 0 and ramp_image.max() == 255


def test_sixteen_bit_rgb_png_keeps_the_high_byte():
    row = np.array([0x1234, 0x8000, 0xFFFF] * 5, ">u2").tobytes()
    image = decode_image(_png(5, 4, 2, 16, row), "rgb16.png")
    assert image.shape == (4, 5, 3) and image[0, 0].tolist() == [0x12, 0x80, 0xFF]


def test_thirty_two_bit_int_and_float_images_follow_the_rule(tmp_path):
    sixteen = Image.fromarray(np.full((4, 4), 32896, np.int32))  # mode "I", 16-bit range
    assert np.all(read_image(_save(tmp_path, "int.tif", sixteen)) == 128)
    wide = Image.fromarray(np.array([[-1000, 0], [1000, 3000]], np.int32))  # beyond 16 bits
    assert read_image(_save(tmp_path, "wide.tif", wide))[:, :, 0].tolist() == [[0, 64], [128, 255]]
    unit = Image.fromarray(np.array([[0.0, 0.5], [1.0, 0.25]], np.float32))  # mode "F"
    assert read_image(_save(tmp_path, "unit.tif", unit))[:, :, 0].tolist() == [[0, 128], [255, 64]]


@pytest.mark.parametrize("transparency", [None, 0])
def test_palette_png_decodes_to_its_colors(tmp_path, transparency):
    palette = Image.new("P", (4, 2))
    palette.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0, 0, 0] * 253)
    palette.putdata([0, 0, 2, 2, 1, 1, 2, 2])
    options = {} if transparency is None else {"transparency": transparency}
    uri = _save(tmp_path, "palette.png", palette, **options)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        image = read_image(uri)
    assert image[0].tolist() == [[255, 0, 0]] * 2 + [[0, 0, 255]] * 2
    assert image[1].tolist() == [[0, 255, 0]] * 2 + [[0, 0, 255]] * 2


@pytest.mark.parametrize(
    ("mode", "color", "fmt", "rgb"),
    [
        ("LA", (90, 0), "PNG", [90, 90, 90]),
        ("RGBA", (10, 20, 30, 0), "PNG", [10, 20, 30]),
        ("CMYK", (0, 0, 0, 0), "TIFF", [255, 255, 255]),
        ("CMYK", (0, 255, 255, 0), "TIFF", [255, 0, 0]),
    ],
)
def test_other_modes_become_rgb_with_alpha_dropped(mode, color, fmt, rgb):
    encoded = io.BytesIO()
    Image.new(mode, (3, 2), color).save(encoded, fmt)
    image = decode_image(encoded.getvalue(), f"x.{fmt.lower()}")
    assert image.shape == (2, 3, 3) and image[1, 2].tolist() == rgb


def _coco_config(tmp_path, images: list[dict]) -> DataConfig:
    (tmp_path / "images").mkdir(exist_ok=True)
    (tmp_path / "annotations.json").write_text(
        json.dumps({"images": images, "annotations": [], "categories": []})
    )
    return DataConfig(root=str(tmp_path))


@pytest.mark.parametrize("file_name", ["../secret.png", "/etc/secret.png", "a/../../images2/secret.png"])
def test_a_file_name_outside_the_images_folder_is_refused(tmp_path, file_name):
    cfg = _coco_config(tmp_path, [{"id": 5, "file_name": file_name, "width": 4, "height": 4}])
    with pytest.raises(ValueError, match=r"annotations.json: image 5 has file_name .*secret.png.*outside"):
        read_image_records(cfg)


def test_a_file_name_that_stays_inside_is_normalized(tmp_path):
    cfg = _coco_config(tmp_path, [{"id": 5, "file_name": "sub/../a.png", "width": 4, "height": 4}])
    [record] = read_image_records(cfg)
    assert record.image_uri == str(tmp_path / "images" / "a.png")


def _link(tmp_path, name: str, target) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(_gray_png(4, 4))
    (tmp_path / "images").mkdir(exist_ok=True)
    (tmp_path / "images" / name).symlink_to(target)


def test_a_symlink_in_the_images_folder_that_leads_outside_the_dataset_is_refused(tmp_path):
    _link(tmp_path, "a.png", tmp_path.parent / f"{tmp_path.name}-secret" / "secret.png")
    cfg = _coco_config(tmp_path, [{"id": 5, "file_name": "a.png", "width": 4, "height": 4}])
    with pytest.raises(
        ValueError,
        match=rf"annotations.json: image 5 has file_name 'a.png', which leads to .*-secret/secret.png, "
        rf"outside the dataset {tmp_path} and its images folder; links there must point inside them",
    ):
        read_image_records(cfg)
    folder = cfg.model_copy(update={"annotations": None})  # a plain image folder: the same guard
    with pytest.raises(ValueError, match=r"images: image a is 'a.png', which leads to .*secret.png, outside"):
        read_image_records(folder)


def test_a_symlink_that_stays_inside_the_dataset_is_read_under_its_own_name(tmp_path):
    _link(tmp_path, "a.png", tmp_path / "images" / "real" / "b.png")
    # A DVC or git-annex store of the dataset: links from images/ into the dataset's own cache.
    _link(tmp_path, "c.png", tmp_path / ".dvc" / "cache" / "ab" / "cdef")
    (tmp_path / "images" / "sub").symlink_to(tmp_path / "images" / "real")  # a linked folder inside
    images = [
        {"id": 5, "file_name": "a.png", "width": 4, "height": 4},
        {"id": 6, "file_name": "sub/b.png", "width": 4, "height": 4},
        {"id": 7, "file_name": "c.png", "width": 4, "height": 4},
    ]
    records = read_image_records(_coco_config(tmp_path, images))
    # The URI is the unresolved path: store fingerprints are made from it.
    assert [r.image_uri for r in records] == [
        str(tmp_path / "images" / "a.png"),
        str(tmp_path / "images/sub/b.png"),
        str(tmp_path / "images" / "c.png"),
    ]
    assert read_image(records[0].image_uri).shape == (4, 4, 3)
    folder_records = read_image_records(_coco_config(tmp_path, []).model_copy(update={"annotations": None}))
    assert [r.image_uri for r in folder_records] == [str(tmp_path / "images" / n) for n in ("a.png", "c.png")]


def test_s3_keys_are_judged_the_same_way():
    folder = "s3://bucket/coco/images"
    assert uri_inside(folder, "a/./b.png") == "s3://bucket/coco/images/a/b.png"
    assert uri_inside(folder, "../b.png") is None
    assert uri_inside(folder, "/b.png") is None
    assert uri_inside(folder, "../../coco/images/b.png") == "s3://bucket/coco/images/b.png"


def test_an_image_that_is_not_the_annotated_size_is_a_bad_sample(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(_gray_png(8, 6))
    (tmp_path / "images" / "b.png").write_bytes(_gray_png(8, 6))
    images = [
        {"id": 1, "file_name": "a.png", "width": 8, "height": 6},
        {"id": 2, "file_name": "b.png", "width": 6, "height": 8},
    ]
    records = read_image_records(_coco_config(tmp_path, images))
    with pytest.raises(BadImageError, match="image .*b.png is 8x6 but the annotations say 6x8"):
        read_image(records[1].image_uri, expected_wh=(records[1].width, records[1].height))
    batch = {
        "image_id": np.array([r.image_id for r in records]),
        "image_uri": np.array([r.image_uri for r in records]),
        "width": np.array([r.width for r in records]),
        "height": np.array([r.height for r in records]),
        "aug_seed": np.zeros(2, np.int64),
    }
    log = BadSampleLog(str(tmp_path / "bad"))
    [out] = list(ImageLoader(32, "none", log)(batch))
    assert list(out["image_id"]) == ["1"]
    [skipped] = log.read_all()
    assert skipped.image_id == "2" and "is 8x6 but the annotations say 6x8" in skipped.error


def test_an_images_folder_that_is_itself_a_link_is_read(tmp_path):
    """The common layout: ``<root>/images -> /mnt/coco/train2017``, outside the dataset root."""
    elsewhere = tmp_path.parent / f"{tmp_path.name}-mnt" / "train2017"
    elsewhere.mkdir(parents=True)
    (elsewhere / "a.png").write_bytes(_gray_png(4, 4))
    (tmp_path / "images").symlink_to(elsewhere)
    [record] = read_image_records(
        _coco_config(tmp_path, [{"id": 5, "file_name": "a.png", "width": 4, "height": 4}])
    )
    assert record.image_uri == str(tmp_path / "images" / "a.png")
