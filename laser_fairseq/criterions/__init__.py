from .laser_criterion import LaserCriterion, LaserCriterionConfig  # noqa: F401
