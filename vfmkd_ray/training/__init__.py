"""Training: the Ray-free ``kd_step``, the Ray Train worker loop and the driver."""
