"""Row checksums and the finite-values contract: corrupt or NaN rows are errors, never training data.

Stores here are written by the real writer (``PartWriter``: ``build_table`` + zstd Parquet) with a
tiny layer and no teacher, so every test runs without Ray or a model.
"""

import logging
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from tests.conftest import read_part_rows, teacher_output_batch
from vfmkd_ray.cli import main
from vfmkd_ray.store import verify
from vfmkd_ray.store.manifest import write_manifest
from vfmkd_ray.store.parts import PartWriter, list_parts
from vfmkd_ray.store.reader import FeatureStoreError, decode_features, decode_row
from vfmkd_ray.store.schema import (
    SCHEMA_VERSION,
    build_table,
    crc_column,
    feature_column,
    scale_column,
)

LAYER, SHAPE = "embed", (8, 4, 4)
IDS = ["img-0", "img-1", "img-2", "img-3"]


def _batch(features: np.ndarray | None = None) -> dict[str, np.ndarray]:
    if features is None:
        features = np.random.default_rng(0).standard_normal((len(IDS), *SHAPE)).astype(np.float32)
    return teacher_output_batch(IDS, LAYER, features)


def _manifest(make_manifest, schema_version: int = SCHEMA_VERSION, codec: str = "fp16"):
    return make_manifest(LAYER, SHAPE, len(IDS)).model_copy(
        update={"schema_version": schema_version, "codec": codec}
    )


def _store(tmp_path, make_manifest, codec: str = "fp16") -> tuple[str, str]:
    """A one-part store of ``IDS`` as precompute writes it; returns the dataset and its part."""
    dataset = str(tmp_path / "store" / "sam_vit_b" / "64")
    PartWriter(dataset, [LAYER], codec)(_batch())
    write_manifest(dataset, _manifest(make_manifest, codec=codec))
    return dataset, list_parts(dataset)[0]


def _flip_16_bytes_of_a_value(part: str, row: int) -> None:
    """Overwrites 16 bytes in the middle of row ``row``'s stored feature bytes, in the part file.

    The hostile tester's corruption: the part still reads, one image's features change (here to
    0xFFFF halves: NaN). Random fp16 features do not compress, so the writer's zstd stores them as
    raw blocks and the value's bytes appear verbatim in the file. Parquet also keeps min/max
    statistics of each value (the page header and the footer), so the bytes are searched from the
    start of the feature column's chunk of that row's row group (one row per group), where the
    dictionary page holds the value read back.
    """
    value = pq.read_table(part).column(feature_column(LAYER))[row].as_py()
    metadata = pq.ParquetFile(part).metadata
    names = [metadata.schema.column(i).path for i in range(metadata.num_columns)]
    chunk = metadata.row_group(row).column(names.index(feature_column(LAYER)))
    start = chunk.dictionary_page_offset or chunk.data_page_offset
    raw = bytearray(Path(part).read_bytes())
    middle = len(value) // 2
    offset = raw.find(value[middle - 32 : middle + 32], start) + 32
    assert start <= offset - 32 < start + chunk.total_compressed_size, "value bytes not found raw"
    raw[offset - 8 : offset + 8] = b"\xff" * 16
    Path(part).write_bytes(bytes(raw))


def test_flipped_bytes_are_caught_by_the_reader_verify_and_the_cli(tmp_path, make_manifest, capsys):
    dataset, part = _store(tmp_path, make_manifest)
    manifest = _manifest(make_manifest)
    written = pq.read_table(part).column(feature_column(LAYER)).to_pylist()
    _flip_16_bytes_of_a_value(part, row=2)

    rows = read_part_rows(part)  # the part still reads, and one value has changed to NaN
    changed = [i for i, data in enumerate(rows[feature_column(LAYER)]) if data != written[i]]
    assert changed == [2] and np.isnan(np.frombuffer(rows[feature_column(LAYER)][2], np.float16)).any()
    with pytest.raises(FeatureStoreError) as err:
        decode_row(rows, 2, manifest, dataset)
    assert str(err.value).startswith(f"feature row for image img-2 layer {LAYER} in store {dataset} fails")
    assert "stored crc32 0x" in str(err.value) and "the part is corrupt" in str(err.value)
    assert decode_row(rows, 1, manifest, dataset)[feature_column(LAYER)].shape == SHAPE

    report = verify.verify_store(dataset, sample=0, check_all=True)
    assert not report.passed and report.rows_checked == 4 and report.sampled == 0
    assert len(report.problems) == 1 and report.problems[0].startswith(f"part {part}: ")
    assert "image img-2" in report.problems[0]

    assert main(["verify", "--store", dataset, "--all"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[1] == "rows checked: 4 of 4 (checksum, finite values, shape, dtype)"
    assert out[2].startswith(f"PROBLEM: part {part}: feature row for image img-2")
    assert out[-1] == "verify: FAILED (1 problems)"


def test_an_unreadable_part_is_a_problem_naming_it(tmp_path, make_manifest, capsys):
    """Bytes flipped in the footer: the part no longer reads at all, which verify names."""
    dataset, part = _store(tmp_path, make_manifest)
    raw = bytearray(Path(part).read_bytes())
    raw[-40:-24] = bytes(b ^ 0xFF for b in raw[-40:-24])
    Path(part).write_bytes(bytes(raw))
    assert main(["verify", "--store", dataset, "--all"]) == 1
    out = capsys.readouterr().out
    assert f"PROBLEM: part {part} cannot be read" in out and "verify: FAILED" in out


@pytest.mark.parametrize("codec", ["fp16", "bf16", "int8"])
def test_a_sound_store_verifies_with_all_and_no_teacher(tmp_path, make_manifest, codec, capsys):
    dataset, part = _store(tmp_path, make_manifest, codec)
    decoded = decode_features(read_part_rows(part), _manifest(make_manifest, codec=codec), dataset)
    assert decoded[feature_column(LAYER)].shape == (len(IDS), *SHAPE)
    assert main(["verify", "--store", dataset, "--all"]) == 0  # random(seed=0) teacher: never built
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"store {dataset}: 4 rows in 1 parts",
        "rows checked: 4 of 4 (checksum, finite values, shape, dtype)",
        "verify: OK",
    ]


@pytest.mark.parametrize(
    ("codec", "bad"), [("fp16", np.nan), ("fp16", np.inf), ("bf16", -np.inf), ("int8", np.nan)]
)
def test_the_writer_refuses_non_finite_teacher_outputs(tmp_path, codec, bad):
    batch = _batch()
    batch[feature_column(LAYER)][1, 3, 2, 1] = bad
    dataset = str(tmp_path / "store")
    with pytest.raises(FeatureStoreError, match=f"image img-1 layer {LAYER} holds 1 non-finite values"):
        PartWriter(dataset, [LAYER], codec)(batch)
    assert list_parts(dataset) == []


def test_the_writer_refuses_fp16_overflow_but_bf16_keeps_it():
    batch = _batch()
    batch[feature_column(LAYER)][3, 0, 0, 0] = 70000.0  # beyond fp16's 65504: would store inf
    with pytest.raises(FeatureStoreError) as err:
        build_table(batch, [LAYER], "fp16")
    assert "image img-3 layer embed has values up to 70000, which exceeds the fp16 codec's range" in str(
        err.value
    )
    assert build_table(batch, [LAYER], "bf16").num_rows == len(IDS)


def _schema_1_rows(features: np.ndarray | None = None, codec: str = "fp16") -> dict:
    """Rows as a schema-1 store holds them: no ``crc32`` columns."""
    table = build_table(_batch(features), [LAYER], codec)
    table = table.drop_columns([crc_column(LAYER)])
    return {name: np.array(table.column(name).to_pylist(), dtype=object) for name in table.column_names}


def test_a_schema_1_row_decodes_with_one_warning_per_store(tmp_path, make_manifest, caplog):
    rows, dataset = _schema_1_rows(), str(tmp_path / "old-store")
    manifest = _manifest(make_manifest, schema_version=1)
    with caplog.at_level(logging.WARNING, logger="vfmkd_ray.store.reader"):
        for row in range(len(IDS)):
            assert decode_row(rows, row, manifest, dataset)[feature_column(LAYER)].shape == SHAPE
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and dataset in warnings[0] and "predates row checksums" in warnings[0]


def test_a_schema_2_row_without_its_checksum_is_an_error(tmp_path, make_manifest):
    with pytest.raises(FeatureStoreError, match="image img-0 layer embed .* has no feat.embed.crc32"):
        decode_row(_schema_1_rows(), 0, _manifest(make_manifest), str(tmp_path))


@pytest.mark.parametrize("codec", ["fp16", "bf16", "int8"])
def test_non_finite_values_of_a_schema_1_row_are_rejected(tmp_path, make_manifest, codec):
    """A store written before the writer checked: NaN bytes (int8: an inf scale) in row 2."""
    rows = _schema_1_rows(codec=codec)
    if codec == "int8":
        scale = np.frombuffer(rows[scale_column(LAYER)][2], np.float32).copy()
        scale[5] = np.inf
        rows[scale_column(LAYER)][2] = scale.tobytes()
    else:
        nan = np.float16(np.nan).view(np.uint16) if codec == "fp16" else np.uint16(0x7FC0)
        stored = np.frombuffer(rows[feature_column(LAYER)][2], np.uint16).copy()
        stored[7] = nan
        rows[feature_column(LAYER)][2] = stored.tobytes()
    manifest = _manifest(make_manifest, schema_version=1, codec=codec)
    with pytest.raises(FeatureStoreError, match=f"image img-2 layer {LAYER} in store .* holds 1 non-finite"):
        decode_row(rows, 2, manifest, str(tmp_path))
    decode_row(rows, 1, manifest, str(tmp_path))


def test_a_nan_teacher_comparison_fails(tmp_path, make_manifest, monkeypatch, capsys):
    """``nan > 0.05`` is False: the thresholds must not let a NaN comparison pass."""
    report = verify.VerifyReport("s", rows=4, parts=1, sampled=2, max_abs_error=np.nan, min_cosine=np.nan)
    [problem] = verify.threshold_problems(report, 0.05, 0.999)
    assert problem.startswith("teacher comparison on 2 images is not finite (abs error max nan")
    report.mean_abs_error = report.max_abs_error = 0.01
    report.mean_cosine = report.min_cosine = 0.9999
    assert verify.threshold_problems(report, 0.05, 0.999) == []

    # The whole path, with a live teacher whose output is NaN (the stored rows are sound).
    dataset, _ = _store(tmp_path, make_manifest)
    nan_teacher = lambda images: {LAYER: torch.full((1, *SHAPE), np.nan)}  # noqa: E731
    monkeypatch.setattr(verify, "build_teacher", lambda cfg: nan_teacher)
    monkeypatch.setattr(verify, "load_letterboxed", lambda *a: (np.zeros((3, 64, 64), np.uint8), (64, 64)))
    assert main(["verify", "--store", dataset, "--sample", "2"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[1] == "rows checked: 2 of 4 (checksum, finite values, shape, dtype)"
    assert "cosine mean nan min nan" in out[2]
    assert out[3].startswith("PROBLEM: teacher comparison on 2 images is not finite")
    assert out[-1] == "verify: FAILED (1 problems)"


def test_precompute_does_not_resume_a_store_of_an_older_schema(tiny_config):
    """Resuming would add checksummed rows next to rows without, under a manifest promising them."""
    from tests.conftest import build_store_in_process
    from vfmkd_ray.store.manifest import read_manifest
    from vfmkd_ray.store.precompute import run_precompute

    dataset = build_store_in_process(tiny_config)
    write_manifest(dataset, read_manifest(dataset).model_copy(update={"schema_version": 1}))
    Path(list_parts(dataset)[0]).unlink()  # rows to do
    with pytest.raises(FeatureStoreError, match="has schema version 1; this precompute writes version 3"):
        run_precompute(tiny_config)


def test_precompute_indexes_a_complete_store_of_an_older_schema_in_place(tiny_config):
    """The migration path: a complete store made before the index gets one; its parts stay."""
    from tests.conftest import build_store_in_process
    from vfmkd_ray.store.index import INDEX_NAME, read_index
    from vfmkd_ray.store.manifest import read_manifest
    from vfmkd_ray.store.precompute import run_precompute

    dataset = build_store_in_process(tiny_config)
    old = read_manifest(dataset).model_copy(update={"schema_version": 2, "index_sha256": ""})
    write_manifest(dataset, old)
    (Path(dataset) / INDEX_NAME).unlink()
    parts = {p: Path(p).stat().st_mtime_ns for p in list_parts(dataset)}
    (summary,) = run_precompute(tiny_config)
    migrated = read_manifest(dataset)
    assert summary.num_new == 0 and migrated.schema_version == 2 and migrated.index_sha256
    assert read_index(dataset, migrated.index_sha256).num_rows == old.row_count
    assert {p: Path(p).stat().st_mtime_ns for p in list_parts(dataset)} == parts


def test_the_demo_rebuilds_its_own_store_of_an_older_schema(tiny_config):
    """``make demo`` after an upgrade: the demo's store is its own output, so it is rebuilt."""
    from tests.conftest import build_store_in_process
    from vfmkd_ray.demo import _rebuild_outdated_stores
    from vfmkd_ray.store.manifest import read_manifest

    dataset = build_store_in_process(tiny_config)
    _rebuild_outdated_stores(tiny_config)
    assert read_manifest(dataset) is not None, "a current store is kept"
    write_manifest(dataset, read_manifest(dataset).model_copy(update={"schema_version": 1}))
    _rebuild_outdated_stores(tiny_config)
    assert read_manifest(dataset) is None and not Path(dataset).exists()
