from vfmkd_ray.data.images import BadImageError
from vfmkd_ray.ray_errors import find_cause, raised_in_worker, was_interrupted
from vfmkd_ray.store.reader import FeatureStoreError


class Wrapper(Exception):
    def __init__(self, message, worker_failures=None):
        super().__init__(message)
        self.worker_failures = worker_failures or {}


def test_finds_a_chained_original():
    original = BadImageError("image not found: s3://b/1.png")
    try:
        try:
            raise original
        except BadImageError as inner:
            raise RuntimeError("task failed") from inner
    except RuntimeError as outer:
        assert find_cause(outer, (BadImageError,)) is original


def test_rebuilds_an_error_known_only_from_remote_traceback_text():
    remote = RuntimeError(
        "Traceback (most recent call last):\n  File x\n"
        "vfmkd_ray.store.reader.FeatureStoreError: feature row for image 3 has shape (1,)\n"
    )
    err = Wrapper("Training failed due to worker errors", {0: remote})
    found = find_cause(err, (BadImageError, FeatureStoreError))
    assert isinstance(found, FeatureStoreError)
    assert str(found) == "feature row for image 3 has shape (1,)"


def test_unrelated_errors_are_not_claimed():
    assert find_cause(RuntimeError("out of memory"), (BadImageError,)) is None


def test_ray_datas_retry_advice_is_cut_from_the_message():
    """Ray Data appends it to the error a task raised (``_annotate_exception_with_retry_context``)."""
    original = BadImageError(
        "cannot decode image /d/3.png: not an image\nFailed to apply UDF transform after 1/1 attempts "
        "(total backoff 0.0s).\nTo change retry attempts, configure `ray.data.DataContext`."
    )
    try:
        raise RuntimeError("dataset failed") from original
    except RuntimeError as outer:
        assert str(find_cause(outer, (BadImageError,))) == "cannot decode image /d/3.png: not an image"


def test_the_error_a_worker_raised_is_named_under_rays_wrappers():
    remote = RuntimeError(
        "ray.exceptions.RayTaskError(InjectedFailure): ray::_RayTrainWorker.run()\n"
        "Traceback (most recent call last):\n  File x\n"
        "vfmkd_ray.training.fault_injection.InjectedFailure: injected failure at epoch 0\n"
    )
    err = Wrapper("Training failed due to worker errors:\nWorkerGroupError: see above", {0: remote})
    assert raised_in_worker(err) == "InjectedFailure: injected failure at epoch 0"
    assert raised_in_worker(RuntimeError("no traceback here")) is None


def test_a_ctrl_c_under_rays_wrappers_is_recognised():
    remote = RuntimeError("Traceback (most recent call last):\n  File x\nKeyboardInterrupt\n")
    assert was_interrupted(Wrapper("Training failed due to worker errors", {0: remote}))
    try:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as inner:
            raise RuntimeError("fit failed") from inner
    except RuntimeError as outer:
        assert was_interrupted(outer)
    assert not was_interrupted(RuntimeError("out of memory"))
