"""Config snippets that go next to an exported checkpoint: RT-DETRv2 YAML and MMDetection/MMYOLO
Python, with channels derived from the student's ``feature_info`` and the backbone freezing of
``Freeze``.

Freezing follows the target's recipe unless ``vfmkd export --freeze-at/--freeze-norm`` say
otherwise: RT-DETRv2's ``rtdetrv2_hgnetv2_l_6x_coco.yml`` sets ``freeze_at: 0`` (the stem) and
``freeze_norm: True``; MMYOLO's YOLOv8 configs keep ``YOLOv8CSPDarknet``'s ``frozen_stages=-1``
and ``norm_eval=False``. Both count the same way: -1 nothing, 0 the stem, N the stem and the first
N stages (RT-DETRv2 ``HGNetv2.__init__``, MMYOLO ``BaseBackbone._freeze_stages``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vfmkd_ray.handoff.rtdetr_hgnetv2 import out_channels
from vfmkd_ray.models.students import StudentConfig
from vfmkd_ray.models.students.base import StudentBackbone
from vfmkd_ray.models.students.yolov8_cspdarknet import BN_EPS, BN_MOMENTUM, YOLOV8_SIZES

# A detector neck takes the last three levels (strides 8, 16, 32).
NECK_LEVELS = 3
NUM_STAGES = 4  # of HGNetv2 and YOLOv8CSPDarknet (P5), after the stem
RTDETRV2_RECIPE = (0, True)  # freeze_at, freeze_norm of rtdetrv2_hgnetv2_{l,x,h}_6x_coco.yml
MMYOLO_DEFAULTS = (-1, False)  # frozen_stages, norm_eval of YOLOv8CSPDarknet (its configs set none)


@dataclass(frozen=True)
class Freeze:
    """What the detector freezes of the backbone; None keeps the target recipe's setting.

    ``at``: -1 nothing, 0 the stem, N the stem and the first N stages. ``norm``: RT-DETRv2's
    ``freeze_norm`` (BatchNorm -> FrozenBatchNorm2d), MMDetection/MMYOLO's ``norm_eval``.
    """

    at: int | None = None
    norm: bool | None = None

    def __post_init__(self):
        if self.at is not None and self.at not in range(-1, NUM_STAGES + 1):
            raise ValueError(
                f"--freeze-at {self.at}: use -1 (nothing), 0 (the stem) or 1..{NUM_STAGES} (the stem "
                "and that many stages)"
            )

    @property
    def given(self) -> bool:
        return self.at is not None or self.norm is not None

    def resolve(self, defaults: tuple[int, bool]) -> tuple[int, bool]:
        return (defaults[0] if self.at is None else self.at, defaults[1] if self.norm is None else self.norm)


def rtdetrv2_yaml(variant: str, checkpoint: str, freeze: Freeze | None = None) -> str:
    """``checkpoint`` as RT-DETRv2's ``-t`` reads it (an absolute path or a URI)."""
    channels = out_channels(variant)[1:]
    freeze_at, freeze_norm = (freeze or Freeze()).resolve(RTDETRV2_RECIPE)
    return f"""# RT-DETRv2 config for the distilled backbone in {checkpoint}.
# Include it after rtdetrv2_r50vd.yml (or copy into your config), then train with
#   python tools/train.py -c <this config> -t {checkpoint} --use-amp --seed=0
# -t loads the backbone weights by name and shape (RT-DETRv2's load_tuning_state).
RTDETR:
  backbone: HGNetv2

HGNetv2:
  name: '{variant}'
  return_idx: [1, 2, 3]
  pretrained: False   # the weights come from -t, not from RT-DETRv2's ImageNet download
  # Freezing as RT-DETRv2's HGNetv2 recipes unless vfmkd export --freeze-at/--freeze-norm set it.
  freeze_at: {freeze_at}  # -1: nothing; 0: the stem; N: the stem and the first N stages
  freeze_norm: {freeze_norm}  # True: every BatchNorm becomes FrozenBatchNorm2d (statistics, affine fixed)

HybridEncoder:
  in_channels: {channels}
  feat_strides: [8, 16, 32]
"""


def mm_python(
    style: str, student: StudentBackbone, cfg: StudentConfig, checkpoint: str, freeze: Freeze | None = None
) -> str:
    """``style`` is ``mmdet`` or ``mmyolo``; the backbone dict loads ``checkpoint`` (an absolute path
    or a URI) by prefix. ``freeze`` applies to YOLOv8 students (mmpretrain's ``TIMMBackbone`` has
    no ``frozen_stages``/``norm_eval``)."""
    channels = student.feature_info.channels()[-NECK_LEVELS:]
    init = f"dict(type='Pretrained', checkpoint='{checkpoint}', prefix='backbone.')"
    header = f"# {style} config snippet for the distilled backbone in {checkpoint}.\n"
    own_backbone = cfg.timm_name is None and cfg.registry_type is None  # YOLOv8CSPDarknet
    if cfg.timm_name is not None:
        assert not (freeze and freeze.given), "formats refuse freeze settings for TIMMBackbone"
        backbone = _timm_backbone(student, cfg.timm_name, init)
    elif cfg.registry_type is not None:
        assert not (freeze and freeze.given), "formats refuse freeze settings for mm/ students"
        channels = student.feature_info.channels()  # every output of its out_indices feeds the neck
        backbone = _registry_backbone(cfg.registry_type, cfg.mm, init)
    else:
        backbone = _yolov8_backbone(style, cfg, init, freeze or Freeze())
    if style == "mmyolo" and own_backbone:
        neck = (
            "    # YOLOv8PAFPN scales these by widen_factor, giving the backbone's "
            f"{channels} channels.\n"
            "    neck=dict(in_channels=[256, 512, last_stage_out_channels],\n"
            "              out_channels=[256, 512, last_stage_out_channels],\n"
            "              deepen_factor=deepen_factor, widen_factor=widen_factor),\n"
            "    bbox_head=dict(head_module=dict(in_channels=[256, 512, last_stage_out_channels],\n"
            "                                    widen_factor=widen_factor)))\n"
        )
    elif style == "mmyolo":
        neck = (
            f"    neck=dict(in_channels={channels}, out_channels={channels}, widen_factor=1.0),\n"
            f"    bbox_head=dict(head_module=dict(in_channels={channels}, widen_factor=1.0)))\n"
        )
    else:
        neck = f"    neck=dict(type='FPN', in_channels={channels}, out_channels=256, num_outs=5))\n"
    return header + backbone + neck


def _timm_backbone(student: StudentBackbone, timm_name: str, init: str) -> str:
    indices = tuple(range(len(student.feature_info)))[-NECK_LEVELS:]
    return (
        "# Freeze it with\n"
        "# optim_wrapper=dict(paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=0)})).\n"
        "custom_imports = dict(imports=['mmpretrain.models'], allow_failed_imports=False)\n"
        "model = dict(\n"
        "    backbone=dict(\n"
        "        _delete_=True,\n"
        "        type='mmpretrain.TIMMBackbone',\n"
        f"        model_name='{timm_name}',\n"
        "        features_only=True,\n"
        "        pretrained=False,\n"
        f"        out_indices={indices},\n"
        f"        init_cfg={init}),\n"
    )


def _registry_backbone(type_name: str, mm: dict[str, Any] | None, init: str) -> str:
    """The student's own registry dict (``student.mm`` and its type), loading the checkpoint."""
    scope = type_name.partition(".")[0]  # OpenMMLab's <scope>.<Type>: the package to import
    fields = "".join(f"        {key}={value!r},\n" for key, value in (mm or {}).items() if key != "type")
    return (
        "# The student's backbone dict (student.mm); freeze it there (frozen_stages, norm_eval where the\n"
        "# class has them) or with paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=0)}).\n"
        f"custom_imports = dict(imports=['{scope}.models'], allow_failed_imports=False)\n"
        "model = dict(\n"
        "    backbone=dict(\n"
        "        _delete_=True,\n"
        f"        type='{type_name}',\n"
        f"{fields}"
        f"        init_cfg={init}),\n"
    )


def _yolov8_backbone(style: str, cfg: StudentConfig, init: str, freeze: Freeze) -> str:
    size = YOLOV8_SIZES[cfg.size]
    prefix = "mmyolo." if style == "mmdet" else ""
    imports = (
        "custom_imports = dict(imports=['mmyolo.models'], allow_failed_imports=False)\n" if prefix else ""
    )
    frozen_stages, norm_eval = freeze.resolve(MMYOLO_DEFAULTS)
    return (
        f"{imports}deepen_factor = {size.deepen_factor}\n"
        f"widen_factor = {size.widen_factor}\n"
        f"last_stage_out_channels = {size.last_stage_out_channels}\n"
        "model = dict(\n"
        "    backbone=dict(\n"
        f"        type='{prefix}YOLOv8CSPDarknet',\n"
        "        arch='P5',\n"
        "        last_stage_out_channels=last_stage_out_channels,\n"
        "        deepen_factor=deepen_factor,\n"
        "        widen_factor=widen_factor,\n"
        "        out_indices=(2, 3, 4),\n"
        f"        norm_cfg=dict(type='BN', momentum={BN_MOMENTUM}, eps={BN_EPS}),\n"
        "        act_cfg=dict(type='SiLU', inplace=True),\n"
        "        # Freezing: MMYOLO's defaults unless vfmkd export --freeze-at/--freeze-norm set it.\n"
        f"        frozen_stages={frozen_stages},  # -1: nothing; 0: the stem; N: the stem and stage1..N\n"
        f"        norm_eval={norm_eval},  # True: BatchNorm in eval mode (statistics fixed, affine trains)\n"
        f"        init_cfg={init}),\n"
    )
