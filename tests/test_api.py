"""The Python API's config handling and run handle, Ray-free (training through it, its metrics and
its export are tested end to end in test_multitask_end_to_end)."""

from __future__ import annotations

import pytest

import vfmkd_ray as vk
from vfmkd_ray import api, run_files
from vfmkd_ray.config import CONFIGS_DIR, ConfigError, dump_config, load_config


def test_keyword_overrides_are_the_command_lines_with_python_values():
    typed = vk.make_config(CONFIGS_DIR / "demo.yaml", **{"train.epochs": 2, "data.val_fraction": 0.25})
    texts = load_config(CONFIGS_DIR / "demo.yaml", ["train.epochs=2", "data.val_fraction=0.25"])
    assert typed == texts
    assert vk.make_config(**{"train.num_workers": [1, 2]}).train.worker_bounds() == (1, 2)
    with pytest.raises(ConfigError, match="train.epochz"):
        vk.make_config(**{"train.epochz": 2})


def test_a_config_object_takes_overrides_and_keeps_what_was_set():
    base = vk.make_config(**{"data.format": "yolo", "data.annotations": "meta.yaml"})
    moved = vk.make_config(base, **{"train.epochs": 3})
    assert moved.train.epochs == 3 and moved.data.annotations == "meta.yaml"
    defaulted = vk.make_config(vk.make_config(**{"data.format": "yolo"}), seed=1)
    assert defaulted.data.annotations == "data.yaml"
    assert vk.make_config(base) is base


def test_a_run_opens_from_its_directory_and_reads_its_files(tmp_path):
    cfg = vk.make_config(**{"train.storage_path": str(tmp_path), "name": "r"})
    run_dir = run_files.run_dir_of(cfg)
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / run_files.RESOLVED_CONFIG).write_text(dump_config(cfg))
    run = vk.Run.open(run_dir)
    assert run.config.name == "r" and run.best_model is None and run.best_backbone is None
    with pytest.raises(run_files.RunFileError, match="no metrics.csv"):
        run.metrics  # noqa: B018
    run_files.write_metrics_log(run_dir, [{"epoch": 1, "val/loss": 0.5}, {"epoch": 2, "val/loss": 0.25}])
    assert run.metrics == [{"epoch": 1.0, "val/loss": 0.5}, {"epoch": 2.0, "val/loss": 0.25}]
    assert run.metrics_frame()["val/loss"].tolist() == [0.5, 0.25]
    (tmp_path / "r" / run_files.BEST_MODEL).write_bytes(b"")
    assert run.best_model == str(tmp_path / "r" / run_files.BEST_MODEL)
    assert api._run_config(run_dir).name == "r"  # a run directory: the config it saved
    assert api._run_config("configs/demo.yaml") == "configs/demo.yaml"  # a config file: as given


def test_the_api_names_run_files_as_run_files_does():
    """The API keeps the best files' names itself (run_files imports torch; the CLI must not)."""
    assert (api.BEST_MODEL, api.BEST_BACKBONE) == (run_files.BEST_MODEL, run_files.BEST_BACKBONE_SAFETENSORS)


def test_a_moved_run_opens_where_it_is_now(tmp_path):
    cfg = vk.make_config(**{"train.storage_path": str(tmp_path / "old"), "name": "r"})
    (tmp_path / "new" / "r2").mkdir(parents=True)
    (tmp_path / "new" / "r2" / run_files.RESOLVED_CONFIG).write_text(dump_config(cfg))
    run = vk.Run.open(tmp_path / "new" / "r2")
    assert run_files.run_dir_of(run.config) == run.run_dir == str(tmp_path / "new" / "r2")


def test_export_needs_a_run_or_a_checkpoint():
    with pytest.raises(ValueError, match="needs a run or a checkpoint"):
        vk.export(format="timm", out="x.pth")
    with pytest.raises(ValueError, match="not the config configs/demo.yaml"):
        vk.export("configs/demo.yaml", format="timm", out="x.pth")


def test_no_module_of_the_package_hides_an_api_name():
    """Importing ``vfmkd_ray.<name>`` sets ``vfmkd_ray.<name>`` to that module: a module named as an
    API function would replace ``vk.<name>`` after its first import."""
    import pkgutil

    import vfmkd_ray.evaluation.run_eval
    import vfmkd_ray.handoff.command
    import vfmkd_ray.store.precompute
    import vfmkd_ray.training.trainer  # noqa: F401

    modules = {module.name for module in pkgutil.iter_modules(vk.__path__)}
    assert not modules & set(vk.__all__)
    assert all(callable(getattr(vk, name)) for name in vk.__all__)
