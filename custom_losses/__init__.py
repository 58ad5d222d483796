"""The paper's distillation objectives (eqs. 1-8) and the terms of the Table 3 baseline EMKD.

* :class:`LogitsKLLoss` - Logits Module, pixel-wise KL between class distributions (eq. 7).
* :class:`AdaptiveAffinityLoss` - Adaptive Affinity Module, neighbour KL affinities on teacher labels (eqs. 1-4).
* :class:`KernelMatrixLoss` - Kernel Matrix Module, batch Gram matrix transfer with a 1x1 adapter (eqs. 5-6).
* :class:`DistillationLoss` - the weighted distillation terms of eq. 8 (0.2 LM + 0.9 KM + 0.9 AA), declared as
  ``terms={name: weight}``; Seg is the trainer's own loss (:class:`tools.engines.DistillationTrainer`).
* :class:`ImportanceMapLoss`, :class:`RegionAffinityLoss` - EMKD's importance-map and region-affinity distillation
  (Qin et al., TMI 2021); its logits KD is :class:`LogitsKLLoss` at T = 4, teacher to student. As terms of
  :class:`DistillationLoss`: ``kd_logits``, ``emkd_importance``, ``emkd_region_affinity`` (:data:`EMKD_TERMS`).
* :class:`DistillationDiagnostics` - logs each term's gradient on the student and the flip rate of its masks.
"""

from .adaptive_affinity import AdaptiveAffinityLoss, GradientReversal
from .diagnostics import DistillationDiagnostics, flip_rate, term_gradients
from .distillation import DISTILLATION_TERMS, EMKD_TERMS, PAPER_TERMS, DistillationLoss
from .emkd import ImportanceMapLoss, RegionAffinityLoss, attention_map, region_contrast
from .kernel_matrix import KernelMatrixLoss
from .logits_kl import LogitsKLLoss

__all__ = [
    "AdaptiveAffinityLoss",
    "DistillationDiagnostics",
    "DistillationLoss",
    "GradientReversal",
    "ImportanceMapLoss",
    "KernelMatrixLoss",
    "LogitsKLLoss",
    "RegionAffinityLoss",
    "DISTILLATION_TERMS",
    "EMKD_TERMS",
    "PAPER_TERMS",
    "attention_map",
    "flip_rate",
    "region_contrast",
    "term_gradients",
]
