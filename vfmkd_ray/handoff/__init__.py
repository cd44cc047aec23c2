"""Hand-off of a distilled backbone to detectors: RT-DETRv2, MMDetection/MMYOLO, timm, safetensors
and ONNX, every export verified by loading it back in the target's key layout."""
