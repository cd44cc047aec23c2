"""``docs/config-reference.md`` is the schema's (``vfmkd_ray.config_reference``): every key the
loader accepts is on it, with its default, and a key the loader refuses is not."""

from __future__ import annotations

from vfmkd_ray import config_reference


def test_the_committed_page_is_the_schemas_and_names_every_kind_of_key():
    page = config_reference.PAGE.read_text()
    assert page == config_reference.reference(), "run python -m vfmkd_ray.config_reference"
    for row in (
        "| `data.decode_num_cpus` | float or `auto` | `'auto'` |",
        "| `teachers.<name>.under_augmentation` |",
        "### `heads.<name>` with `type: yolov8`",
        "| `heads.<name>.num_classes` | int | required |",
        "### `distill.terms.<name>.adaptive`",
        "| `seed` | int | `0` |",
    ):
        assert row in page, row
    assert "train.epochz" not in page


def test_check_mode_fails_on_a_stale_page(tmp_path, monkeypatch, capsys):
    stale = tmp_path / "config-reference.md"
    stale.write_text(config_reference.reference().replace("`'auto'`", "`0.5`"))
    monkeypatch.setattr(config_reference, "PAGE", stale)
    assert config_reference.main(["--check"]) == 1
    assert "is not the schema's" in capsys.readouterr().err
    stale.write_text(config_reference.reference())
    assert config_reference.main(["--check"]) == 0
