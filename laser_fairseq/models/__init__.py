from .laser_model import LaserModel, LaserModelConfig  # noqa: F401
