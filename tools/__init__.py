"""Command-line tools and the bundles' runtime library.

Command-line tools (``python -m tools.<name>``, fire CLIs; bad input ends with one line per problem,
:mod:`tools.cli`): ``tools.data`` (index, verify, split, synth, montage), ``tools.bench`` (Table 1, inference
and distillation cost), ``tools.study`` (the paper's tables through the bundles), ``tools.monailabel_app``.

Runtime library the bundle configs import (``$import tools.bundles`` etc.), next to ``custom_nets`` and
``custom_losses``: :mod:`tools.bundles` (bundle paths, datalists, teacher loading), :mod:`tools.data.transforms`
(training transforms) and :mod:`tools.data.evaluation` (evaluation and inference pre/post-processing, 3D
metrics). These are imported by every training, evaluation and inference run, not only by the CLIs.
"""
