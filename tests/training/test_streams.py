"""Which passes of a run are shuffled, and by which key: a training pass asks the run's data
position for the epoch rank 0 last started (Ray-free: the position actor's class runs here)."""

from tests.conftest import load_config, tiny_overrides
from vfmkd_ray.data.epoch_order import order_key
from vfmkd_ray.training.data_position import _Position
from vfmkd_ray.training.streams import decode_task_cpus, pass_order


class _PositionHere:
    """``DataPosition``'s calls, on the actor's class in this process."""

    def __init__(self):
        self.actor = _Position.__ray_actor_class__()

    def epoch(self) -> int:
        return self.actor.epoch()


def test_training_passes_follow_the_epoch_rank_0_started_and_validation_is_never_shuffled(tmp_path):
    cfg = load_config(None, [*tiny_overrides(tmp_path), "seed=5"])
    position = _PositionHere()
    order = pass_order(cfg, "train", 1, position)
    assert order() == order_key(5, 0, 1), "before any epoch starts (the driver plans a pass): epoch 0"
    position.actor.resume(3, 0, [])
    assert order() == order_key(5, 3, 1)
    position.actor.resume(3, 4, [11, 12])  # epoch 3 resumed inside: the same order again
    assert order() == order_key(5, 3, 1)
    assert pass_order(cfg, "val", 0, position) is None
    assert pass_order(cfg, "train", 0, None) is None, "a Tune trial has no data position"
    off = load_config(None, [*tiny_overrides(tmp_path), "data.shuffle=false"])
    assert pass_order(off, "train", 0, position) is None


def test_a_stream_of_one_source_runs_unreserved_and_a_union_keeps_the_reservation():
    from types import SimpleNamespace

    from vfmkd_ray.training.streams import run_unreserved

    def stream():
        return SimpleNamespace(context=SimpleNamespace(op_resource_reservation_enabled=True))

    single, union = stream(), stream()
    run_unreserved(single, sources=1)
    run_unreserved(union, sources=2)  # data.repeat, or placeholder rows beside the stored ones
    assert single.context.op_resource_reservation_enabled is False
    assert union.context.op_resource_reservation_enabled is True


def test_auto_decode_tasks_take_a_whole_cpu_only_where_one_is_sure_to_be_free(tmp_path):
    """Four decode tasks per CPU ran at 0.90 of a DataLoader's images/s, one per CPU at 0.95, and
    waited 7.7 s against 2.0 for a pass's first batch (benchmarks/data_plane, 64-row parts); but a
    whole-CPU task never starts where no node keeps a CPU free."""

    def cpus(*overrides: str, cluster: float | None) -> float:
        whole = "train.cpus_per_worker=1"  # the tiny settings' 0.5 is a fragment
        return decode_task_cpus(load_config(None, [*tiny_overrides(tmp_path), whole, *overrides]), cluster)

    assert cpus("train.num_workers=1", cluster=2) == 1.0
    assert cpus("train.num_workers=2", cluster=2) == 0.25, "the workers hold every CPU"
    assert cpus("train.num_workers=[1,2]", cluster=2) == 0.25, "an elastic group may grow to all"
    assert cpus("train.num_workers=1", "train.cpus_per_worker=1.5", cluster=3) == 0.25, "fragments"
    assert cpus("train.num_workers=1", cluster=None) == 0.25, "a Tune trial shares the cluster"
    assert cpus("train.num_workers=2", "data.decode_num_cpus=1", cluster=2) == 1.0, "as given"
    assert cpus("train.num_workers=1", "data.decode_num_cpus=0.5", cluster=16) == 0.5
