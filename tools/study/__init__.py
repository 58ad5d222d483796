"""The study: the paper's Tables 2, 3 and 4 through the bundles, one command (``python -m tools.study run``).

* :mod:`.plan`: the run grid (sites x seeds x teachers, students w/o and w/ each teacher under each objective,
  the ablation).
* :mod:`.runner`: each run as ``python -m monai.bundle run training`` then ``run evaluating`` subprocesses,
  resumable, failures reported with their logs.
* :mod:`.tables`: Tables 2, 3, 4 and per-case metrics from the run folders, the paper's numbers beside ours.
* :mod:`.reading`: the pre-registered rules that read the tables (does distillation help, teacher gap,
  Table 3's ranking, domain shift).
* :mod:`.figures`: Dice per site without/with distillation; overlays like the paper's Fig. 3.
* :mod:`.real_case`: every trained model (and TAPS, if installed) on the one real scan, a sanity check.
* :mod:`.report`: everything under ``results/<run>/`` with its README.
"""

from .dataset import SYNTHETIC, prepare_data
from .plan import ABLATION_GRID, MODULE_TERMS, OBJECTIVES, STUDENTS, TEACHERS, Run, make_plan
from .runner import Outcome, Settings, evaluate_command, execute, parse_overrides, run_dir, train_command
from .tables import PAPER_TABLE2, PAPER_TABLE3, PAPER_TABLE4, collect, table2_rows, table3_rows, table4_rows
from .report import write_outputs

__all__ = [
    "ABLATION_GRID", "MODULE_TERMS", "OBJECTIVES", "STUDENTS", "TEACHERS", "Run", "make_plan",
    "Outcome", "Settings", "evaluate_command", "execute", "parse_overrides", "run_dir", "train_command",
    "PAPER_TABLE2", "PAPER_TABLE3", "PAPER_TABLE4", "collect", "table2_rows", "table3_rows", "table4_rows",
    "SYNTHETIC", "prepare_data", "write_outputs",
]
