"""Store files come from shared storage: a part or index whose column is an Arrow extension type is
refused before any value is read, because reading Ray's pickled-object extension type unpickles
(runs) what the file holds (Ray-free)."""

import hashlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray.data  # noqa: F401  (registers Ray's extension types, as in every Ray worker)
from ray.data._internal.object_extensions.arrow import ArrowPythonObjectArray

from tests.conftest import build_store_in_process
from vfmkd_ray.store.index import read_index
from vfmkd_ray.store.manifest import read_manifest, write_manifest
from vfmkd_ray.store.parts import list_parts, read_row_groups
from vfmkd_ray.store.reader import FeatureStoreError
from vfmkd_ray.store.verify import verify_store


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _pickled_column(values: list, marker: Path) -> pa.ExtensionArray:
    return ArrowPythonObjectArray.from_objects([_Payload(marker) for _ in values])


def test_a_part_with_a_pickled_object_column_is_refused_unread(tiny_config, tmp_path):
    dataset = build_store_in_process(tiny_config)
    part = list_parts(dataset)[0]
    table = pq.read_table(part)
    marker = tmp_path / "payload-ran"
    column = table.column_names.index("image_uri")
    pq.write_table(
        table.set_column(column, "image_uri", _pickled_column(table.column("image_uri").to_pylist(), marker)),
        part,
        row_group_size=1,
    )
    # Unguarded, this read would unpickle the payload (as the old reader did).
    assert pq.read_table(part).column("image_uri").type.extension_name == "ray.data.arrow_pickled_object"
    assert not marker.exists()

    with pytest.raises(FeatureStoreError, match=rf"{part} has column 'image_uri' of an Arrow extension type"):
        read_row_groups(part, [0])
    report = verify_store(dataset, sample=0, check_all=True)
    assert any(
        p.startswith(f"part {part} cannot be read: ") and "extension type" in p for p in report.problems
    )
    assert not report.passed and not marker.exists()


def test_an_index_with_a_pickled_object_column_is_refused_unread(tiny_config, tmp_path):
    dataset = build_store_in_process(tiny_config)
    manifest = read_manifest(dataset)
    index_uri = Path(dataset) / "_index.parquet"
    index = pq.read_table(index_uri)
    marker = tmp_path / "payload-ran"
    column = index.column_names.index("image_id")
    forged = index.set_column(
        column, "image_id", _pickled_column(index.column("image_id").to_pylist(), marker)
    )
    sink = pa.BufferOutputStream()
    pq.write_table(forged, sink)
    data = sink.getvalue().to_pybytes()
    index_uri.write_bytes(data)
    # Whoever can write the store can write its manifest too: the sha256 it names is no guarantee.
    write_manifest(dataset, manifest.model_copy(update={"index_sha256": hashlib.sha256(data).hexdigest()}))

    with pytest.raises(FeatureStoreError, match="has column 'image_id' of an Arrow extension type"):
        read_index(dataset, hashlib.sha256(data).hexdigest())
    assert not marker.exists()
