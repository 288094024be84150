"""Photos that ship inside scikit-image's wheel, for calibrating int8 when the user gives none."""

from __future__ import annotations

import numpy as np

# Varied scenes, none of them the photos tests and benchmarks measure mask agreement on
# (astronaut, coffee, chelsea), so calibration does not flatter the figure.
CALIBRATION_PHOTOS = ("rocket", "immunohistochemistry", "retina", "hubble_deep_field", "stereo_motorcycle", "logo")


def calibration_photos() -> list[np.ndarray]:
    """The photos of `CALIBRATION_PHOTOS` as (H, W, 3) uint8 RGB arrays.

    Raises:
        ImportError: scikit-image is not installed.
    """
    try:
        from skimage import data
    except ImportError as err:
        raise ImportError(
            f"the calibration photos come with scikit-image: pip install 'mobilesam[openvino]', or give your own images ({err})"
        ) from None
    photos = []
    for name in CALIBRATION_PHOTOS:
        photo = getattr(data, name)()
        if isinstance(photo, tuple):  # a stereo pair: the left view
            photo = photo[0]
        photos.append(np.ascontiguousarray(photo[..., :3]))
    return photos
