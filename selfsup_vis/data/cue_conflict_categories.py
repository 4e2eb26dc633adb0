"""The 16 cue-conflict categories, their ImageNet-1k indices and stimulus-name parsing (facts of
the cue-conflict dataset; the shape-bias decision that uses the indices lives in shape_bias.metric).

The index lists are model-vs-human's published mapping (``helper/human_categories.py``,
207 indices in all). They are data, embedded here so that no file has to be shipped or
downloaded; a test checks them against ``imagenet_to_16.json``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath

IMAGENET_INDICES: dict[str, tuple[int, ...]] = {
    "airplane": (404,),
    "bear": (294, 295, 296, 297),
    "bicycle": (444, 671),
    "bird": (
        8, 10, 11, 12, 13, 14, 15, 16, 18, 19, 20, 22, 23, 24, 80, 81, 82, 83, 87, 88, 89, 90,
        91, 92, 93, 94, 95, 96, 98, 99, 100, 127, 128, 129, 130, 131, 132, 133, 135, 136, 137,
        138, 139, 140, 141, 142, 143, 144, 145,
    ),
    "boat": (472, 554, 625, 814, 914),
    "bottle": (440, 720, 737, 898, 899, 901, 907),
    "car": (436, 511, 817),
    "cat": (281, 282, 283, 284, 285, 286),
    "chair": (423, 559, 765, 857),
    "clock": (409, 530, 892),
    "dog": (
        *range(152, 192), *range(193, 204), *range(205, 227), *range(228, 242),
        *range(243, 251), *range(252, 258), 259, 261, 262, 263, *range(265, 269),
    ),
    "elephant": (385, 386),
    "keyboard": (508, 878),
    "knife": (499,),
    "oven": (766,),
    "truck": (555, 569, 656, 675, 717, 734, 864, 867),
}

#: The 16 categories in alphabetical order (model-vs-human's order; decisions index into it).
CATEGORIES: tuple[str, ...] = tuple(sorted(IMAGENET_INDICES))

#: Bottom-to-top row order of model-vs-human's matrix plot (humans' texture fraction, ascending).
HUMAN_ROW_ORDER: tuple[str, ...] = (
    "bicycle", "clock", "chair", "bottle", "truck", "car", "bird", "oven",
    "elephant", "cat", "keyboard", "dog", "bear", "airplane", "knife", "boat",
)  # fmt: skip

_STIMULUS = re.compile(r"^(?P<shape>[A-Za-z_]+?)(?P<snum>\d+)-(?P<texture>[A-Za-z_]+?)(?P<tnum>\d+)"
                       r"(?P<ext>\.[A-Za-z0-9]+)?$")


@dataclass(frozen=True)
class Stimulus:
    """A parsed cue-conflict stimulus name such as ``airplane1-bicycle2.png``."""

    shape: str
    shape_number: int
    texture: str
    texture_number: int
    extension: str  # "" for names without one (the synthetic set)

    @property
    def name(self) -> str:
        return f"{self.shape}{self.shape_number}-{self.texture}{self.texture_number}{self.extension}"


def stimulus_part(imagename: str) -> str:
    """The stimulus file name: folders and model-vs-human's trial prefix (up to the last ``_``)
    removed, e.g. ``0001_s5n_s01_0_bird_00_bird3-bird2.png`` -> ``bird3-bird2.png``."""
    return PurePosixPath(str(imagename).replace("\\", "/")).name.split("_")[-1]


def texture_of(imagename: str) -> str:
    """model-vs-human's texture rule: last ``-`` part of the stimulus, extension and digits
    stripped (``airplane1-bicycle2.png`` -> ``bicycle``)."""
    stem = stimulus_part(imagename).split(".")[0]
    return "".join(ch for ch in stem.split("-")[-1] if not ch.isdigit())


def parse_stimulus(imagename: str) -> Stimulus:
    """Parse ``[<folder>/]<shape><i>-<texture><j>[.ext]``; the folder, when present, must agree
    with the shape in the name (it is the shape category in model-vs-human)."""
    path = PurePosixPath(str(imagename).replace("\\", "/"))
    match = _STIMULUS.match(path.name)
    if match is None:
        raise ValueError(
            f"image name {imagename!r} is not a cue-conflict stimulus name "
            "'<shape><i>-<texture><j>[.png]' (e.g. 'airplane1-bicycle2.png')"
        )
    shape = match["shape"]
    folder = path.parent.name
    if folder and folder != shape:
        raise ValueError(
            f"image {imagename!r}: folder {folder!r} is not the shape {shape!r} in its name"
        )
    return Stimulus(shape, int(match["snum"]), match["texture"], int(match["tnum"]),
                    match["ext"] or "")
