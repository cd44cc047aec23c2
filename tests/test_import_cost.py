"""What a process imports to read a config, or to host a Train worker: every Ray process pays it
once, and a run starts a dozen (controller, workers, split coordinators, the relay's mailbox, the
data position, read and decode tasks). On this 2-core machine torch costs 2.5 s, timm and
torchvision 3 s more (torchvision.ops imports torch._dynamo), so a config that imported them made
each of those processes 6-9 s slower. Heavy libraries are imported where a model that needs them
is built."""

import subprocess
import sys

HEAVY = ("torch", "timm", "torchvision", "segment_anything", "sam2", "matplotlib", "mlflow")


def _imported_by(modules: list[str]) -> list[str]:
    code = (
        f"import sys; import {', '.join(modules)}; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return [m for m in done.stdout.strip().split(",") if m]


def test_a_config_and_the_drivers_actors_import_no_model_library():
    light = [
        "vfmkd_ray.config",
        "vfmkd_ray.cli",
        "vfmkd_ray.training.relay",
        "vfmkd_ray.training.data_position",
        "vfmkd_ray.data.pipeline",
        "vfmkd_ray.store.ray_source",
    ]
    assert _imported_by(light) == []


def test_a_train_worker_imports_torch_but_no_model_zoo_it_does_not_build():
    assert _imported_by(["vfmkd_ray.training.worker"]) == ["torch"]
