"""Learned models. ``LIFTERS`` maps a lifter's name to its class; every lifter maps
(B, T, J, 2) screen-normalised 2D -> (B, T, J, 3) root-relative camera-frame metres."""

from pose3d.models.martinez import MartinezLifter
from pose3d.models.repnet import RepNetLifter
from pose3d.models.temporal import TemporalLifter

LIFTERS = {
    "martinez": MartinezLifter,
    "repnet": RepNetLifter,
    "temporal": TemporalLifter,
}
