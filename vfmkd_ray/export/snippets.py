"""Config snippets that go next to an exported checkpoint: RT-DETRv2 YAML and MMDetection/MMYOLO
Python, with channels derived from the student's ``feature_info``."""

from __future__ import annotations

from vfmkd_ray.export.rtdetr_hgnetv2 import out_channels
from vfmkd_ray.models.students import StudentBackbone, StudentConfig
from vfmkd_ray.models.students.yolov8_cspdarknet import BN_EPS, BN_MOMENTUM, YOLOV8_SIZES

# A detector neck takes the last three levels (strides 8, 16, 32).
NECK_LEVELS = 3


def rtdetrv2_yaml(variant: str, checkpoint: str) -> str:
    channels = out_channels(variant)[1:]
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
  freeze_at: -1       # 0 freezes the stem; N freezes the stem and the first N stages
  freeze_norm: False  # True swaps every BatchNorm for FrozenBatchNorm2d

HybridEncoder:
  in_channels: {channels}
  feat_strides: [8, 16, 32]
"""


def mm_python(style: str, student: StudentBackbone, cfg: StudentConfig, checkpoint: str) -> str:
    """``style`` is ``mmdet`` or ``mmyolo``; the backbone dict loads ``checkpoint`` by prefix."""
    channels = student.feature_info.channels()[-NECK_LEVELS:]
    init = f"dict(type='Pretrained', checkpoint='{checkpoint}', prefix='backbone.')"
    header = f"# {style} config snippet for the distilled backbone in {checkpoint}.\n"
    freeze = (
        "# Freeze it with frozen_stages=N (stem + first N stages) and norm_eval=True (BatchNorm in\n"
        "# eval mode), or with\n"
        "# optim_wrapper=dict(paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=0)})).\n"
    )
    if cfg.name.startswith("timm/"):
        indices = tuple(range(len(student.feature_info)))[-NECK_LEVELS:]
        backbone = (
            "custom_imports = dict(imports=['mmpretrain.models'], allow_failed_imports=False)\n"
            "model = dict(\n"
            "    backbone=dict(\n"
            "        _delete_=True,\n"
            "        type='mmpretrain.TIMMBackbone',\n"
            f"        model_name='{cfg.name.removeprefix('timm/')}',\n"
            "        features_only=True,\n"
            "        pretrained=False,\n"
            f"        out_indices={indices},\n"
            f"        init_cfg={init}),\n"
        )
    else:
        size = YOLOV8_SIZES[cfg.size]
        prefix = "mmyolo." if style == "mmdet" else ""
        imports = (
            "custom_imports = dict(imports=['mmyolo.models'], allow_failed_imports=False)\n" if prefix else ""
        )
        backbone = (
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
            f"        init_cfg={init}),\n"
        )
    if style == "mmyolo" and not cfg.name.startswith("timm/"):
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
    return header + freeze + backbone + neck
