"""Where the package sits in its repository checkout: ``REPO``, the folder that holds ``laser_fairseq/``,
``examples/``, ``manifests/`` and ``outputs/`` (the committed configs, models and corpora the tools default to).
"""

import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
