from .laser_model import LaserModel, LaserModelConfig  # noqa: F401
from .hubert_ctc_fixed import HubertCtcFixed, HubertCtcFixedConfig  # noqa: F401
from .hubert_resumable import HubertResumableConfig, HubertResumableModel  # noqa: F401
