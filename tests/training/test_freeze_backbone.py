"""train.freeze_backbone: the backbone neither learns nor moves its batch-norm statistics, and the
optimiser holds only what trains."""

import torch

from vfmkd_ray.batch import Batch
from vfmkd_ray.models.teachers.build import build_teacher, teacher_shapes
from vfmkd_ray.training.step import train_step
from vfmkd_ray.training.task import build_task


def test_a_frozen_backbone_keeps_weights_and_statistics_while_the_adapters_train(tiny_config):
    cfg = tiny_config.model_copy(
        update={"train": tiny_config.train.model_copy(update={"freeze_backbone": True})}
    )
    task = build_task(cfg, teacher_shapes(dict(cfg.teachers)), 10, torch.device("cpu"))
    model = task.parts.model
    backbone_before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    adapters_before = {k: v.clone() for k, v in model.adapters.state_dict().items()}
    in_optimizer = {id(p) for group in task.optimizer.param_groups for p in group["params"]}
    assert in_optimizer == {id(p) for name, p in model.named_parameters() if not name.startswith("backbone.")}
    assert not any(p.requires_grad for p in model.backbone.parameters())
    teacher = build_teacher(cfg.teachers["sam"])
    images = torch.randn(4, 3, 64, 64)
    batch = Batch(images, torch.full((4, 2), 64))
    batch.teacher_features = {f"sam/{k}": v for k, v in teacher(images).items()}
    model.train()
    assert not model.backbone.training and model.adapters.training
    for _ in range(3):
        train_step(model, batch, task, 10.0)
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, backbone_before[key]), key  # weights and BN running stats alike
    assert any(not torch.equal(v, adapters_before[k]) for k, v in model.adapters.state_dict().items())


def test_ddp_trains_a_model_whose_backbone_is_frozen(tiny_config, tmp_path):
    """DDP (a one-process gloo group, as Ray Train's prepare_model builds it for several workers)
    leaves the frozen backbone out of its reducer: steps run and the backbone stays put."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    cfg = tiny_config.model_copy(
        update={"train": tiny_config.train.model_copy(update={"freeze_backbone": True})}
    )
    task = build_task(cfg, teacher_shapes(dict(cfg.teachers)), 10, torch.device("cpu"))
    before = {k: v.clone() for k, v in task.parts.model.backbone.state_dict().items()}
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/rendezvous", rank=0, world_size=1)
    try:
        model = DistributedDataParallel(task.parts.model)
        teacher = build_teacher(cfg.teachers["sam"])
        images = torch.randn(2, 3, 64, 64)
        batch = Batch(images, torch.full((2, 2), 64))
        batch.teacher_features = {f"sam/{k}": v for k, v in teacher(images).items()}
        model.train()
        for _ in range(2):
            train_step(model, batch, task, 10.0)
    finally:
        dist.destroy_process_group()
    for key, value in task.parts.model.backbone.state_dict().items():
        assert torch.equal(value, before[key]), key
