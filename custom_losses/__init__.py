"""The paper's distillation objectives (eqs. 1-8).

* :class:`LogitsKLLoss` - Logits Module, pixel-wise KL between class distributions (eq. 7).
* :class:`AdaptiveAffinityLoss` - Adaptive Affinity Module, neighbour KL affinities on teacher labels (eqs. 1-4).
* :class:`KernelMatrixLoss` - Kernel Matrix Module, batch Gram matrix transfer with a 1x1 adapter (eqs. 5-6).
* :class:`DistillationLoss` - Seg + 0.2 LM + 0.9 KM + 0.9 AA (eq. 8), each module switchable.
* :class:`DistillationDiagnostics` - logs each term's gradient on the student and the flip rate of its masks.
"""

from .adaptive_affinity import AdaptiveAffinityLoss, GradientReversal
from .diagnostics import DistillationDiagnostics, flip_rate, term_gradients
from .distillation import TERM_NAMES, DistillationLoss
from .kernel_matrix import KernelMatrixLoss
from .logits_kl import LogitsKLLoss
from .training import DistillationIteration, DistillationModel, loss_terms

__all__ = [
    "AdaptiveAffinityLoss",
    "DistillationDiagnostics",
    "DistillationLoss",
    "GradientReversal",
    "KernelMatrixLoss",
    "LogitsKLLoss",
    "TERM_NAMES",
    "DistillationIteration",
    "DistillationModel",
    "loss_terms",
    "flip_rate",
    "term_gradients",
]
