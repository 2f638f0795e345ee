"""The duration model (`model`) and the one event player that plays schedules under it (`replay`).

The planner schedules with `replay.list_schedule` and checks its queues with `replay.replay`;
`migbench simulate`, the baselines and the benchmark replay plans with the same player, and the
launcher's queue follows the same sharing rule, so what a plan promises is what a replay shows.
"""

from migbench.duration.model import (
    Demand,
    DurationModel,
    Slot,
    fits_alongside,
    instance_capacity,
    rate,
    solo_time,
)

__all__ = ["Demand", "DurationModel", "Slot", "fits_alongside", "instance_capacity", "rate", "solo_time"]
