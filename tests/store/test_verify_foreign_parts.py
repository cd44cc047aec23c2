"""``vfmkd verify --all`` on a store holding parts of another schema (copied from another store or
teacher): a PROBLEM line naming each such part, the other parts still checked, exit code 1."""

import pyarrow as pa
import pyarrow.parquet as pq

from tests.conftest import build_store_in_process
from vfmkd_ray.cli import main
from vfmkd_ray.store.parts import list_parts


def test_parts_with_foreign_columns_are_problems_naming_them(tiny_config, capsys):
    dataset = build_store_in_process(tiny_config)
    renamed, extended, *intact = list_parts(dataset)
    table = pq.read_table(renamed)  # another teacher's layer: the manifest's columns are missing
    pq.write_table(
        table.rename_columns([c.replace("image_embed", "vision_features") for c in table.column_names]),
        renamed,
    )
    table = pq.read_table(extended)  # an extra layer besides the manifest's: still readable
    pq.write_table(table.append_column("feat.backbone_fpn_0", pa.array([b"x"] * table.num_rows)), extended)

    assert main(["verify", "--store", dataset, "--all"]) == 1
    out = capsys.readouterr().out
    problems = [line for line in out.splitlines() if line.startswith("PROBLEM: ")]
    assert problems[0] == (
        f"PROBLEM: part {renamed} lacks columns the manifest's layers ['image_embed'] need: "
        "['feat.image_embed', 'feat.image_embed.shape', 'feat.image_embed.dtype', 'feat.image_embed.crc32']; "
        "it holds layers ['vision_features'] (a part of another store?); its rows are not checked"
    )
    assert problems[1] == (
        f"PROBLEM: part {extended} holds layers ['backbone_fpn_0'] besides the manifest's ['image_embed'] "
        "(a part of another store?)"
    )
    assert "rows checked: 12 of 12" in out  # the other three parts, the extended one included
    assert "parts hold 12 rows, the manifest says 16" in out
    assert intact and all(part not in line for line in problems[2:] for part in intact)
