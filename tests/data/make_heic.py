"""Writes the HEIC fixtures beside this file (photo.heic, rotated.heic, display-p3.heic): scikit-image's
coffee photo at 150x100 px, as an iPhone would save it. Needs an HEVC *encoder*, which the project
does not ship (pi-heif decodes only): run it with pillow-heif in a throwaway environment:

    python -m venv /tmp/heif && /tmp/heif/bin/pip install pillow-heif numpy
    .venv/bin/python -c "import numpy, cv2; from skimage import data; \
        numpy.save('/tmp/coffee.npy', cv2.resize(data.coffee(), (150, 100), interpolation=cv2.INTER_AREA))"
    /tmp/heif/bin/python tests/data/make_heic.py /tmp/coffee.npy
"""

import sys
from pathlib import Path

import numpy as np
import pillow_heif
from PIL import Image

pillow_heif.register_heif_opener()
here = Path(__file__).parent
photo = Image.fromarray(np.load(sys.argv[1]))
photo.save(here / "photo.heic", quality=90)
exif = Image.Exif()
exif[0x0112] = 6  # "rotate 90 CW to view": pillow-heif writes it as the HEIF irot transform
photo.save(here / "rotated.heic", quality=90, exif=exif.tobytes())
# The colour description iPhones write: Display P3 primaries (12), sRGB transfer (13), BT.601 matrix.
photo.save(here / "display-p3.heic", quality=90, color_primaries=12, transfer_characteristics=13,
           matrix_coefficients=6, full_range_flag=1)
print(pillow_heif.__version__, sorted(p.name for p in here.glob("*.heic")))
