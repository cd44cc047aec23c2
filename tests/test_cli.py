"""The command line reports bad input as one clear line and a non-zero exit, not a traceback."""

from vfmkd_ray.cli import main
from vfmkd_ray.config import CONFIGS_DIR


def test_unknown_config_key_exits_2_with_the_key_named(capsys):
    assert main(["train", str(CONFIGS_DIR / "demo.yaml"), "train.epochz=3"]) == 2
    err = capsys.readouterr().err
    assert "vfmkd train: error" in err and "train.epochz" in err and "Traceback" not in err


def test_unknown_teacher_and_student_are_named_before_any_work(tmp_path, capsys):
    demo = str(CONFIGS_DIR / "demo.yaml")
    paths = [f"data.root={tmp_path}", f"store.root={tmp_path / 'store'}"]
    assert main(["synth", demo, *paths, "data.synthetic.num_images=2", "student.name=resnet"]) == 0
    capsys.readouterr()  # synth does not build the student
    assert main(["precompute", demo, *paths, "teachers.sam.name=sam_vit_q"]) == 2
    assert "unknown teacher 'sam_vit_q'" in capsys.readouterr().err
    assert main(["train", demo, *paths, "student.name=resnet"]) == 2
    assert "unknown student 'resnet'" in capsys.readouterr().err
    assert not (tmp_path / "store").exists()


def test_synth_writes_the_dataset(tmp_path, capsys):
    overrides = [f"data.root={tmp_path}", "data.synthetic.num_images=3", "data.synthetic.image_size=32"]
    assert main(["synth", str(CONFIGS_DIR / "demo.yaml"), *overrides]) == 0
    assert "3 images" in capsys.readouterr().out
    assert (tmp_path / "annotations.json").is_file()
