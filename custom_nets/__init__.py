"""The paper's five 2D segmentation networks: two teachers and three students."""

from .base import FeatureSegmentationNet, scale_channels
