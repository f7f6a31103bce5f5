"""The frame grid of HuBERT / WavLM, which frame phone labels (``.phn``) follow: the CNN front end takes a
400-sample window every 320 samples (25 ms / 20 ms at 16 kHz, 50 frames per second), and frame ``t`` takes
the label of its centre sample ``320 t + 200``. ``SILENCE`` is the label of a frame without a phone.
"""

FRAME_WINDOW = 400  # samples: the CNN's receptive field (25 ms)
FRAME_HOP = 320  # samples: the CNN's stride (20 ms)
SILENCE = "sil"


def frame_count(num_samples: int) -> int:
    """Frames the upstream CNN gives for ``num_samples`` samples (0 when shorter than one window)."""
    if num_samples < FRAME_WINDOW:
        return 0
    return (num_samples - FRAME_WINDOW) // FRAME_HOP + 1


def frame_centre(frame: int) -> int:
    """The sample whose label frame ``frame`` takes: ``320 frame + 200``."""
    return frame * FRAME_HOP + FRAME_WINDOW // 2
