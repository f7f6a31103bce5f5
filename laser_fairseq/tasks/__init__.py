from .laser_task import LaserTask, LaserTaskConfig  # noqa: F401
