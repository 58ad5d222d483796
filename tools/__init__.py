"""Command-line tools and the bundles' runtime library.

``tools`` has two roles; the bundles depend on the second one at run time, not only the CLIs.

Command-line tools (``python -m tools.<name>``, fire CLIs; bad input ends with one line per problem,
:mod:`tools.cli`): ``tools.data`` (index, verify, split, synth, montage), ``tools.bench`` (Table 1, inference
and distillation cost), ``tools.study`` (the paper's tables through the bundles), ``tools.bundles`` (sync,
package), ``tools.monailabel_app``.

Runtime library the bundle configs import (``$import tools.bundles`` etc.), next to ``custom_nets`` and
``custom_losses``, and vendored into a packaged bundle's ``scripts/`` (:mod:`tools.bundles.package`):
:mod:`tools.bundles` (bundle paths, datalists, teacher loading), :mod:`tools.engines` (the distillation trainer
and the loss logging of every training run), :mod:`tools.data.transforms` (training transforms),
:mod:`tools.data.evaluation` (evaluation and inference pre/post-processing, 3D metrics) and
:mod:`tools.data.quality`. These are imported by every training, evaluation and inference run.
"""
