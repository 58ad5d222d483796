"""The paper's five 2D segmentation networks: two teachers and three students.

Every network takes ``(in_channels=1, out_channels=2, width=1.0, ...)``, returns logits at the input's
resolution for any H, W, and exposes ``forward_features(x) -> (logits, {"low": ..., "high": ...})``.
"""

from .base import FeatureSegmentationNet, scale_channels
from .checkpoint import feature_channels, load_frozen_teacher, load_weights
from .deeplabv3plus import DeepLabV3Plus
from .enet import ENet
from .erfnet import ERFNet
from .espnet import ESPNet
from .frozen import FrozenTeacher, fold_batchnorm, freeze_teacher
from .nested_unet import NestedUNet
from .onnx_runtime import OnnxRuntimeNetwork

# name -> (class, role), students first in ascending size, as in the paper's Table 1
NETWORKS = {
    "ESPNet": (ESPNet, "student"),
    "ENet": (ENet, "student"),
    "ERFNet": (ERFNet, "student"),
    "NestedUNet": (NestedUNet, "teacher"),
    "DeepLabV3Plus": (DeepLabV3Plus, "teacher"),
}
