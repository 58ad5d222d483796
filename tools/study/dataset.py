"""The study's data: a folder of the six-site collection, or the simulator's sites synthesized once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Tuple

__all__ = ["SYNTHETIC", "prepare_data"]

SYNTHETIC: Dict[str, int] = {"cases_per_site": 6, "size": 96, "seed": 0}
"""``tools.data.synth.synthesize`` arguments of ``--data synthetic`` (the simulator's default collection)."""

MARKER = "synthesis.json"


def prepare_data(data: str, out_dir: Path) -> Tuple[Path, str]:
    """``(dataset folder, description)`` for ``--data``.

    ``"synthetic"``: :func:`tools.data.synth.synthesize` with :data:`SYNTHETIC` into ``<out_dir>/data``, once;
    later calls reuse it when ``<out_dir>/data/synthesis.json`` records the same arguments. Anything else is a
    folder of the collection (real or simulated), which must exist.
    """
    if str(data).lower() != "synthetic":
        folder = Path(data).expanduser().resolve()
        if not folder.is_dir():
            raise FileNotFoundError(f"--data {data!r}: no such folder (give the six-site collection's root or 'synthetic').")
        return folder, f"`{folder}`"
    folder = (Path(out_dir) / "data").resolve()
    marker = folder / MARKER
    if not (marker.is_file() and json.loads(marker.read_text()) == SYNTHETIC):
        from tools.data.synth import synthesize

        print(f"synthesizing the six simulated sites into {folder} ({SYNTHETIC}) ...", flush=True)
        synthesize(folder, **SYNTHETIC)
        marker.write_text(json.dumps(SYNTHETIC) + "\n")
    args = ", ".join(f"{k}={v}" for k, v in SYNTHETIC.items())
    return folder, f"the simulator's six sites, `tools.data.synth.synthesize(out_dir, {args})` in `{folder.name}/`"
