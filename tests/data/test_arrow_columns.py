"""``data.arrow_columns``: a block's binary values reach the decoder as views of the Arrow buffer,
equal to the bytes Ray Data's numpy batches would copy, nulls and chunks and slices included."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from vfmkd_ray.data.arrow_columns import numpy_columns


def _values(column: np.ndarray) -> list:
    return [None if value is None else bytes(value) for value in column]


def test_binary_columns_are_views_equal_to_the_copied_bytes_with_nulls_chunks_and_slices():
    table = pa.table(
        {
            "feat": pa.array([b"abc", None, b"", b"xyz"]),
            "large": pa.array([b"q", b"rr", None, b""], pa.large_binary()),
            "name": ["a", "b", "c", "d"],
            "n": [1, 2, 3, 4],
        }
    )
    chunked = pa.concat_tables([table, table.slice(1, 2)])
    columns = numpy_columns(chunked)
    for name in chunked.column_names:
        copied = chunked.column(name).to_numpy(zero_copy_only=False)
        if name in ("feat", "large"):
            assert _values(columns[name]) == _values(copied)
            assert all(value is None or isinstance(value, memoryview) for value in columns[name])
        else:
            assert columns[name].tolist() == copied.tolist()
    assert len(columns["feat"]) == chunked.num_rows == 6


def test_a_view_reads_the_stored_features_in_place_and_keeps_the_buffer_alive():
    features = np.arange(12, dtype=np.float16)
    columns = numpy_columns(pa.table({"feat": pa.array([features.tobytes()])}))
    view = columns["feat"][0]
    np.testing.assert_array_equal(np.frombuffer(view, np.float16), features)
    del columns
    assert np.frombuffer(view, np.float16)[-1] == 11  # the Arrow buffer outlives its table


def test_the_decoder_makes_the_same_samples_from_an_arrow_block_as_from_numpy_columns(tmp_path):
    from benchmarks import data_plane
    from vfmkd_ray.data.pipeline import SampleSpec, TrainSampleDecoder
    from vfmkd_ray.store.manifest import StoreDataset

    images = data_plane.write_images(str(tmp_path / "images"), 4)
    workload = data_plane.Workload("tiny", "image_embed", (4, 8, 8), 128, "fp16")
    manifest = data_plane.write_store(str(tmp_path / "store"), workload, images)
    decoder = TrainSampleDecoder(
        StoreDataset(data_plane.ALIAS, str(tmp_path / "store"), manifest),
        SampleSpec(128, "none", data_plane.MAX_OBJECTS),
    )
    (table,) = data_plane.product_batches(str(tmp_path / "store"), images)
    copied = {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}
    (from_arrow,), (from_numpy,) = list(decoder(table)), list(decoder(copied))
    assert from_arrow.keys() == from_numpy.keys()
    for column, values in from_arrow.items():
        np.testing.assert_array_equal(values, from_numpy[column], err_msg=column)


def test_an_arrow_block_with_a_flipped_byte_or_a_non_finite_row_is_refused_naming_the_image(tmp_path):
    import pyarrow.compute as pc
    import pytest

    from benchmarks import data_plane
    from vfmkd_ray.data.pipeline import SampleSpec, TrainSampleDecoder
    from vfmkd_ray.store.manifest import StoreDataset
    from vfmkd_ray.store.reader import FeatureStoreError
    from vfmkd_ray.store.schema import crc_column, feature_column, row_checksum

    images = data_plane.write_images(str(tmp_path / "images"), 2)
    workload = data_plane.Workload("tiny", "image_embed", (4, 8, 8), 128, "fp16")
    manifest = data_plane.write_store(str(tmp_path / "store"), workload, images)
    decoder = TrainSampleDecoder(
        StoreDataset(data_plane.ALIAS, str(tmp_path / "store"), manifest), SampleSpec(128, "none")
    )
    (table,) = data_plane.product_batches(str(tmp_path / "store"), images)
    column = feature_column("image_embed")
    values = [bytearray(v) for v in table.column(column).to_pylist()]

    def with_row0(data: bytes, checksum: int | None = None) -> pa.Table:
        rows = [bytes(data), *map(bytes, values[1:])]
        out = table.set_column(table.schema.get_field_index(column), column, pa.array(rows, pa.binary()))
        if checksum is not None:
            crcs = pc.if_else(pa.array([True, False]), checksum, out.column(crc_column("image_embed")))
            out = out.set_column(
                out.schema.get_field_index(crc_column("image_embed")), crc_column("image_embed"), crcs
            )
        return out

    flipped = bytearray(values[0])
    flipped[5] ^= 0x10
    with pytest.raises(FeatureStoreError, match="image img00000 layer image_embed .* fails its checksum"):
        list(decoder(with_row0(flipped)))
    infinite = np.full(4 * 8 * 8, np.inf, np.float16).tobytes()
    with pytest.raises(FeatureStoreError, match="img00000 .* holds 256 non-finite values"):
        list(decoder(with_row0(infinite, row_checksum(infinite, b""))))
