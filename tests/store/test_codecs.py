"""Codec round trips and their size/accuracy contract."""

import numpy as np
import pytest
import torch

from vfmkd_ray.store import codecs


def _features(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # Channels of very different magnitudes, as in real encoder outputs.
    return (rng.standard_normal((16, 8, 8)) * rng.uniform(0.01, 10, size=(16, 1, 1))).astype(np.float32)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float((a * b).sum() / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize("codec", ["fp16", "bf16", "int8"])
def test_round_trip_is_close_and_keeps_the_shape(codec):
    features = _features()
    data, scale = codecs.encode(features, codec)
    decoded = codecs.decode(data, features.shape, codec, scale if codec == "int8" else None)
    assert decoded.shape == features.shape and decoded.dtype == np.float32
    assert _cosine(decoded, features) > 0.999
    tolerance = {"fp16": 1e-3, "bf16": 8e-3, "int8": 1 / 127}[codec]
    peak = np.abs(features).reshape(16, -1).max(axis=1)[:, None, None]
    assert np.all(np.abs(decoded - features) <= tolerance * peak + 1e-6)


def test_fp16_is_exactly_numpy_half():
    features = _features()
    data, _ = codecs.encode(features, "fp16")
    np.testing.assert_array_equal(
        codecs.stored_array(data, features.shape, "fp16"), features.astype(np.float16)
    )


def test_bf16_matches_torch_rounding():
    features = _features()
    data, _ = codecs.encode(features, "bf16")
    decoded = codecs.decode(data, features.shape, "bf16")
    expected = torch.from_numpy(features).to(torch.bfloat16).float().numpy()
    np.testing.assert_array_equal(decoded, expected)


def test_byte_sizes():
    features = _features()
    sizes = {codec: len(codecs.encode(features, codec)[0]) for codec in ("fp16", "bf16", "int8")}
    assert sizes["fp16"] == sizes["bf16"] == features.nbytes // 2
    assert sizes["int8"] == sizes["fp16"] // 2


def test_int8_zero_channel_and_missing_scale():
    features = np.zeros((2, 2, 2), np.float32)
    data, scale = codecs.encode(features, "int8")
    assert np.all(codecs.decode(data, features.shape, "int8", scale) == 0)
    with pytest.raises(ValueError, match="per-channel scale"):
        codecs.to_float32(torch.zeros(1, 2, 2, 2, dtype=torch.int8), "int8")


def test_unknown_codec():
    with pytest.raises(ValueError, match="unknown codec 'fp8'"):
        codecs.encode(_features(), "fp8")


def test_int8_on_teacher_output_halves_fp16_with_cosine_above_0999(tiny_config):
    from vfmkd_ray.data.synthetic import write_synthetic_coco
    from vfmkd_ray.store.codec_report import measure_codecs

    write_synthetic_coco(tiny_config.data)
    _, rows = measure_codecs(tiny_config, num_images=4)
    figures = {row.codec: row for row in rows}
    assert figures["int8"].mean_cosine >= 0.999
    assert figures["int8"].payload_bytes == figures["fp16"].payload_bytes / 2
    assert figures["int8"].scale_bytes == 256 * 4  # one float32 per SAM channel
    assert figures["fp16"].scale_bytes == figures["bf16"].scale_bytes == 0


def test_count_non_finite_on_stored_bits_matches_numpy_over_every_16_bit_pattern():
    bits = np.arange(2**16, dtype=np.uint32).astype(np.uint16)
    as_fp16, as_bf16 = bits.view(np.float16), (bits.astype(np.uint32) << 16).view(np.float32)
    assert codecs.count_non_finite(as_fp16, "fp16") == (~np.isfinite(as_fp16)).sum() == 2 * 2**10
    assert codecs.count_non_finite(bits, "bf16") == (~np.isfinite(as_bf16)).sum() == 2 * 2**7
    scale = np.array([1.0, np.nan, np.inf], np.float32)
    assert codecs.count_non_finite(np.zeros((3, 1, 1), np.int8), "int8", scale) == 2


def test_fp16_encoding_is_numpys_rounding_bit_for_bit_overflow_included():
    values = np.random.default_rng(0).standard_normal((4, 16, 16)).astype(np.float32) * 3e4
    values[0, 0, 0], values[0, 0, 1] = 65519.0, 65520.0  # below and at the rounding edge to inf
    data, _ = codecs.encode(values, "fp16")
    with np.errstate(over="ignore"):
        expected = values.astype(np.float16)
    assert np.frombuffer(data, np.uint16).tolist() == expected.view(np.uint16).reshape(-1).tolist()
    assert (
        codecs.count_non_finite(np.frombuffer(data, np.float16), "fp16") == int(np.isinf(expected).sum()) > 0
    )


def test_row_checksums_are_zlibs_crc32_so_stores_written_before_still_check():
    import zlib

    from vfmkd_ray.store.schema import row_checksum

    data, scale = np.random.default_rng(1).bytes(100_003), np.ones(7, np.float32).tobytes()
    assert row_checksum(data, scale) == zlib.crc32(scale, zlib.crc32(data))
    assert row_checksum(memoryview(data), b"") == zlib.crc32(data)
