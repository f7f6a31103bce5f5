from .laser_task import LaserTask, LaserTaskConfig  # noqa: F401
# fairseq's import_user_module imports only the tasks/ and models/ folders of a user-dir: the criterion the
# task trains with registers from here
from ..criterions import LaserCriterion, LaserCriterionConfig  # noqa: F401
