"""The yolov8 head."""
