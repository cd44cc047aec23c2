"""The training recipe around the step (issue 25): parameter groups and the optimiser, warm-up and
the decay, the EMA of the weights. Hand-computed values, Ray-free."""

import copy
import math

import pytest
import torch
from torch import nn

from tests.training.test_checkpointing import FolderReports
from vfmkd_ray import run_files
from vfmkd_ray.batch import Batch
from vfmkd_ray.config import ConfigError, load_config
from vfmkd_ray.config_checks import config_warnings
from vfmkd_ray.models.teachers.build import build_teacher, teacher_shapes
from vfmkd_ray.training.checkpointing import CheckpointManager
from vfmkd_ray.training.config import TrainConfig
from vfmkd_ray.training.ema import WeightAverage, ema_momentum
from vfmkd_ray.training.optim import build_optimizer, gradient_scale, parameter_groups, scaled_weight_decay
from vfmkd_ray.training.schedule import LrSchedule, ScheduleSpec
from vfmkd_ray.training.step import model_step, optimizer_step, train_step
from vfmkd_ray.training.task import build_task


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.norm = nn.LayerNorm(4)
        self.fc = nn.Linear(4, 2)
        self.scale = nn.Parameter(torch.ones(4))  # a layer scale: 1-d, not decayed
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)


def _ids(params):
    return [id(p) for p in params]


def test_weights_decay_and_norm_scales_and_biases_do_not():
    model = Toy()
    groups = parameter_groups(model)
    assert _ids(groups.decay) == _ids([model.conv.weight, model.fc.weight])
    assert _ids(groups.norm) == _ids([model.scale, model.bn.weight, model.norm.weight])
    assert _ids(groups.bias) == _ids([model.bn.bias, model.norm.bias, model.fc.bias])
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert sorted(_ids(groups.all())) == sorted(_ids(trainable))  # each once, frozen ones left out

    sgd = build_optimizer(groups, TrainConfig(optimizer="sgd", lr=0.01, weight_decay=5e-4), global_batch=16)
    assert [(g["name"], g["weight_decay"]) for g in sgd.param_groups] == [
        ("decay", 5e-4),
        ("norm", 0.0),
        ("bias", 0.0),
    ]
    assert sgd.param_groups[0]["nesterov"] and sgd.param_groups[0]["momentum"] == 0.937
    adamw = build_optimizer(groups, TrainConfig(), global_batch=16)
    assert isinstance(adamw, torch.optim.AdamW)
    assert [g["weight_decay"] for g in adamw.param_groups] == [0.01, 0.0, 0.0]


def test_a_yolov8_students_norms_and_biases_are_not_decayed(tiny_config):
    """The tiny config's YOLOv8-n student with its SAM adapter, as a run builds it."""
    task = build_task(tiny_config, teacher_shapes(dict(tiny_config.teachers)), 10, torch.device("cpu"))
    decayed = {id(p) for p in task.optimizer.param_groups[0]["params"]}
    for name, param in task.parts.model.named_parameters():
        if id(param) in decayed:
            assert param.ndim > 1 and not name.endswith("bias"), name
        else:
            assert param.ndim == 1, name


def test_sgd_weight_decay_scales_with_the_global_batch_as_mmyolos():
    sgd = TrainConfig(optimizer="sgd", weight_decay=5e-4)
    assert scaled_weight_decay(sgd, 16) == pytest.approx(5e-4)  # accumulates 4: 16 x 4 / 64
    assert scaled_weight_decay(sgd, 48) == pytest.approx(5e-4 * 48 / 64)  # accumulates 1
    assert scaled_weight_decay(sgd, 128) == pytest.approx(1e-3)
    assert scaled_weight_decay(TrainConfig(weight_decay=0.05), 128) == 0.05  # adamw: unscaled


def test_sgd_steps_on_the_batch_summed_gradient_as_mmyolo():
    """MMYOLO multiplies its YOLOv8 losses by num_imgs x world_size, so its lr 0.01, weight decay
    and clip norm 10 act on the batch-summed gradient. Two steps of the run's SGD on the per-image
    (mean) loss equal torch's SGD on the summed loss, with the clip binding in summed units."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.SiLU(), nn.Linear(8, 1))
    reference = copy.deepcopy(model)
    x, y = torch.randn(16, 4), 3.0 * torch.randn(16, 1)
    train = TrainConfig(optimizer="sgd", lr=0.01, weight_decay=5e-4)
    assert gradient_scale(train, 16) == 16.0 and gradient_scale(TrainConfig(), 16) == 1.0  # adamw
    groups = parameter_groups(model)
    optimizer = build_optimizer(groups, train, global_batch=16)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    decay = [reference[0].weight, reference[2].weight]
    plain = torch.optim.SGD(
        [{"params": decay, "weight_decay": 5e-4}, {"params": [reference[0].bias, reference[2].bias]}],
        lr=0.01,
        momentum=0.937,
        nesterov=True,
    )
    summed_norms = []
    for _ in range(2):
        per_image = ((model(x) - y) ** 2).mean()
        summed_norms.append(
            float(optimizer_step(per_image, optimizer, scaler, groups.all(), 10.0, gradient_scale(train, 16)))
        )
        plain.zero_grad()
        ((reference(x) - y) ** 2).sum().backward()
        torch.nn.utils.clip_grad_norm_(list(reference.parameters()), 10.0)
        plain.step()
    assert summed_norms[0] > 10.0  # the clip binds: the summed gradient's norm, as MMYOLO logs it
    for ours, theirs in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(ours, theirs)


def test_a_runs_sgd_task_scales_the_loss_by_its_global_batch(tiny_config):
    cfg = tiny_config.model_copy(
        update={"train": tiny_config.train.model_copy(update={"optimizer": "sgd", "lr": 0.01})}
    )
    task = build_task(cfg, teacher_shapes(dict(cfg.teachers)), 10, torch.device("cpu"), global_batch=24)
    assert task.gradient_scale == 24.0
    assert "on the loss summed over the global batch (x24)" in task.describe()
    adamw = build_task(tiny_config, teacher_shapes(dict(tiny_config.teachers)), 10, torch.device("cpu"))
    assert adamw.gradient_scale == 1.0 and "summed" not in adamw.describe()


def _schedule(**spec) -> LrSchedule:
    model = Toy()
    train = TrainConfig(optimizer="sgd", lr=0.01)
    return LrSchedule(build_optimizer(parameter_groups(model), train, 64), ScheduleSpec(**spec))


def _at(schedule: LrSchedule, step: int) -> tuple[list[float], float]:
    schedule.load_state_dict({"steps": step})
    return schedule.get_last_lr(), schedule.optimizer.param_groups[0]["momentum"]


def test_warm_up_follows_mmyolos_rule_for_rates_and_momentum():
    """100 steps, 10 per epoch, 2 warm-up epochs (floor 5 steps): 20 warm-up steps; linear decay to
    0.01. Weights and norms rise from 0, biases fall from 0.1, momentum rises from 0.8 to 0.937,
    each to the decay's value at that step."""
    schedule = _schedule(
        total_steps=100,
        steps_per_epoch=10,
        kind="linear",
        lr_factor=0.01,
        warmup_epochs=2,
        warmup_min_steps=5,
        warmup_bias_lr=0.1,
        warmup_momentum=0.8,
    )
    assert schedule.spec.warmup_steps == 20
    (decay, norm, bias), momentum = _at(schedule, 0)
    assert (decay, norm, bias, momentum) == (0.0, 0.0, 0.1, 0.8)
    target = 0.01 * (0.9 * 0.99 + 0.01)  # the linear decay at step 10 of 100
    (decay, norm, bias), momentum = _at(schedule, 10)
    assert decay == pytest.approx(target / 2) and norm == pytest.approx(target / 2)
    assert bias == pytest.approx(0.1 + (target - 0.1) / 2) and momentum == pytest.approx(0.8685)
    rates, momentum = _at(schedule, 20)
    assert rates == pytest.approx([0.01 * (0.8 * 0.99 + 0.01)] * 3) and momentum == pytest.approx(0.937)
    rates, _ = _at(schedule, 100)
    assert rates == pytest.approx([0.01 * 0.01] * 3)


def test_the_warm_up_floor_and_the_cosine_decay():
    floor = _schedule(total_steps=100, steps_per_epoch=10, warmup_epochs=1, warmup_min_steps=30)
    assert floor.spec.warmup_steps == 30  # max(1 epoch, 30 steps)
    assert _schedule(total_steps=100, steps_per_epoch=10).spec.warmup_steps == 0
    cosine = _schedule(total_steps=100, steps_per_epoch=10, lr_factor=0.01)
    rates, momentum = _at(cosine, 50)
    assert rates == pytest.approx([0.01 * (0.5 * (0.01 - 1) + 1)] * 3) and momentum == 0.937
    assert _at(cosine, 0)[0] == pytest.approx([0.01] * 3)


def test_the_ema_follows_mmyolos_exp_momentum_by_hand():
    model = nn.Sequential(nn.Linear(1, 1, bias=False), nn.BatchNorm1d(1))
    ema = WeightAverage(model, momentum=0.1, gamma=2.0)
    weights = [1.0, 3.0, -1.0]
    expected = None
    for update, value in enumerate(weights):
        model[0].weight.data.fill_(value)
        model[1].num_batches_tracked.fill_(update + 5)
        ema.update(model)
        weight = 0.9 * math.exp(-(1 + update) / 2.0) + 0.1
        assert ema_momentum(update, 0.1, 2.0) == pytest.approx(weight)
        expected = value if expected is None else expected + (value - expected) * weight
        assert ema.module[0].weight.item() == pytest.approx(expected)
        assert ema.module[1].num_batches_tracked.item() == update + 5  # integer buffers: copied
    assert ema.updates == 3 and not ema.module[0].weight.requires_grad
    # The ramp: it follows the model at first and settles to the final momentum.
    assert ema_momentum(0, 1e-4, 2000) > 0.999 and ema_momentum(40_000, 1e-4, 2000) == pytest.approx(
        1e-4, rel=1e-3
    )


def _ema_config(tiny_config):
    train = tiny_config.train.model_copy(update={"ema": True, "ema_gamma": 2.0, "ema_momentum": 0.5})
    return tiny_config.model_copy(update={"train": train})


def _trained_task(cfg, steps: int):
    task = build_task(cfg, teacher_shapes(dict(cfg.teachers)), 10, torch.device("cpu"))
    teacher = build_teacher(cfg.teachers["sam"])
    images = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    batch = Batch(images, torch.full((4, 2), 64))
    batch.teacher_features = {f"sam/{k}": v for k, v in teacher(images).items()}
    task.parts.model.train()
    for _ in range(steps):
        train_step(task.parts.model, batch, task, 10.0)
    return task


def test_a_training_step_backpropagates_the_loss_times_the_tasks_gradient_scale(tiny_config):
    """train_step (what the worker loop runs) steps an sgd task on the batch-summed loss: the same
    weights as a hand-made step with the task's scale, not those of a step on the per-image loss."""
    sgd = tiny_config.train.model_copy(update={"optimizer": "sgd", "lr": 0.01})
    cfg = tiny_config.model_copy(update={"train": sgd})
    teacher = build_teacher(cfg.teachers["sam"])
    images = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    batch = Batch(images, torch.full((4, 2), 64))
    batch.teacher_features = {f"sam/{k}": v for k, v in teacher(images).items()}

    def fresh_task():
        task = build_task(cfg, teacher_shapes(dict(cfg.teachers)), 10, torch.device("cpu"))
        task.parts.model.train()
        return task

    stepped = fresh_task()
    assert stepped.gradient_scale == cfg.train.batch_size * cfg.train.max_workers > 1
    train_step(stepped.parts.model, batch, stepped, 10.0)
    weights = {}
    for scale in (stepped.gradient_scale, 1.0):
        task = fresh_task()
        loss = model_step(task.parts.model, batch, task.parts)["loss"]
        optimizer_step(loss, task.optimizer, task.scaler, task.trainable, 10.0, scale)
        weights[scale] = task.parts.model.state_dict()
    ours = stepped.parts.model.state_dict()
    assert all(torch.equal(ours[k], v) for k, v in weights[stepped.gradient_scale].items())
    assert not all(torch.equal(ours[k], v) for k, v in weights[1.0].items())


def test_the_ema_is_what_the_best_files_hold_and_a_resume_restores_it(tiny_config, tmp_path):
    cfg = _ema_config(tiny_config)
    task = _trained_task(cfg, steps=3)
    raw = task.parts.model.state_dict()
    averaged = task.ema.module.state_dict()
    assert task.eval_model is task.ema.module and task.ema.updates == 3
    assert not torch.equal(raw["backbone.stem.conv.weight"], averaged["backbone.stem.conv.weight"])

    files = task.write_best(str(tmp_path / "run"), {"name": cfg.name})
    best, _ = run_files.read_model_file(files[run_files.BEST_MODEL])
    assert all(torch.equal(best[k], averaged[k]) for k in averaged)

    reports = FolderReports(tmp_path)
    CheckpointManager(0, str(tmp_path / "run"), reports).report_inside_epoch({}, task.stateful())
    resumed = build_task(cfg, teacher_shapes(dict(cfg.teachers)), 10, torch.device("cpu"))
    assert CheckpointManager(0, str(tmp_path / "run"), reports).restore(resumed.stateful())
    assert resumed.ema.updates == 3
    assert all(torch.equal(resumed.ema.module.state_dict()[k], v) for k, v in averaged.items())


def test_a_channels_last_task_trains_like_a_plain_one_and_saves_plain_files(tiny_config, tmp_path):
    """``train.channels_last``: every 4-d weight of the model and its EMA in channels-last memory,
    three steps to the same weights as a plain task (up to float32 rounding), and best files
    whose tensors are contiguous and load strictly into a plain model; a checkpoint resumes into
    either layout."""
    cfg = _ema_config(tiny_config)
    # SGD: a step linear in the gradient, so layouts stay as close as their rounding (AdamW's
    # normalised step turns a rounding-level gradient near zero into a step of lr).
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"optimizer": "sgd", "lr": 0.01})})
    train = cfg.train.model_copy(update={"channels_last": True})
    channels_last = cfg.model_copy(update={"train": train})
    plain, task = _trained_task(cfg, steps=3), _trained_task(channels_last, steps=3)
    assert task.describe().endswith(", channels-last") and "channels-last" not in plain.describe()
    # A depthwise kernel is contiguous in both layouts: it does not hide the conversion.
    with_depthwise = copy.deepcopy(task)
    with_depthwise.parts.model.backbone.stem.conv.weight.data = torch.zeros(4, 1, 3, 3)
    assert with_depthwise.describe().endswith(", channels-last")
    for module in (task.parts.model, task.ema.module):
        weights = [p for p in module.parameters() if p.dim() == 4 and min(p.shape[2:]) > 1]
        assert weights and all(
            p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous() for p in weights
        )
    for name, value in plain.ema.module.state_dict().items():
        ours = task.ema.module.state_dict()[name]
        assert float((ours - value).abs().max()) <= 1e-4 * float(value.abs().max()) + 1e-8, name

    files = task.write_best(str(tmp_path / "run"), {"name": cfg.name})
    best, _ = run_files.read_model_file(files[run_files.BEST_MODEL])
    assert all(tensor.is_contiguous() for tensor in best.values())
    fresh = build_task(cfg, teacher_shapes(dict(cfg.teachers)), 10, torch.device("cpu")).parts.model
    fresh.load_state_dict(best, strict=True)
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in task.ema.module.state_dict().items())

    reports = FolderReports(tmp_path)
    CheckpointManager(0, str(tmp_path / "run"), reports).report_inside_epoch({}, task.stateful())
    for config in (cfg, channels_last):
        resumed = build_task(config, teacher_shapes(dict(config.teachers)), 10, torch.device("cpu"))
        assert CheckpointManager(0, str(tmp_path / "run"), reports).restore(resumed.stateful())
        restored = resumed.parts.model.state_dict()
        assert all(torch.equal(restored[k], v) for k, v in task.parts.model.state_dict().items())


def test_recipe_settings_that_do_nothing_are_named(tiny_config):
    cfg = load_config(
        None, ["train.momentum=0.9", "train.warmup_bias_lr=0.05", "train.ema_gamma=100", "train.sync_bn=true"]
    )
    warnings = config_warnings(cfg)
    for line in (
        "train.momentum is used by optimizer sgd only",
        "train.warmup_bias_lr has no effect: warmup_epochs is 0 (no warm-up)",
        "train.ema_gamma has no effect: ema is off",
        "train.sync_bn takes effect on CUDA workers only",
    ):
        assert any(w.startswith(line) for w in warnings), (line, warnings)
    quiet = load_config(None, ["train.optimizer=sgd", "train.momentum=0.9", "train.warmup_epochs=3"])
    assert not [w for w in config_warnings(quiet) if w.startswith("train.")]


def test_a_checkpoint_from_before_the_groups_resumes_into_them(tiny_config):
    """Its optimiser had one group over the trainable parameters in model order: the state of each
    parameter lands on that parameter in its new group."""
    task = build_task(tiny_config, teacher_shapes(dict(tiny_config.teachers)), 10, torch.device("cpu"))
    trainable = [p for p in task.parts.model.parameters() if p.requires_grad]
    old = torch.optim.AdamW(trainable, lr=0.1, weight_decay=0.01)
    for p in trainable:
        p.grad = torch.full_like(p, 0.5)
    old.step()
    task.optimizer.load_state_dict(old.state_dict())
    assert [g["name"] for g in task.optimizer.param_groups] == ["decay", "norm", "bias"]
    assert [g["weight_decay"] for g in task.optimizer.param_groups] == [0.01, 0.0, 0.0]
    for p in trainable:
        assert torch.equal(task.optimizer.state[p]["exp_avg"], old.state[p]["exp_avg"])


def test_weight_decay_follows_the_world_size_after_a_restore(tiny_config):
    sgd = tiny_config.train.model_copy(update={"optimizer": "sgd", "weight_decay": 5e-4})
    cfg = tiny_config.model_copy(update={"train": sgd})
    shapes = teacher_shapes(dict(cfg.teachers))
    wide = build_task(cfg, shapes, 10, torch.device("cpu"), global_batch=128)
    assert wide.optimizer.param_groups[0]["weight_decay"] == pytest.approx(1e-3)
    narrow = build_task(cfg, shapes, 10, torch.device("cpu"), global_batch=64)  # an elastic resize
    narrow.optimizer.load_state_dict(wide.optimizer.state_dict())
    assert narrow.optimizer.param_groups[0]["weight_decay"] == pytest.approx(5e-4)


def test_sync_bn_is_refused_with_a_head_that_reruns_the_model_on_some_workers(tmp_path):
    from tests.heads.yolc.conftest import yolc_overrides

    with pytest.raises(
        ConfigError, match=r"train.sync_bn with heads.det \(yolc\), whose training runs the model"
    ):
        load_config(None, [*yolc_overrides(tmp_path), "train.sync_bn=true"])
    load_config(None, [*yolc_overrides(tmp_path), "train.sync_bn=true", "heads.det.crop_loss_weight=0"])
