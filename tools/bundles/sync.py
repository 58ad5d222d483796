"""One source for the five bundles' configs: templates rendered into each bundle folder.

Each bundle folder stands alone (MONAI Label copies it, the Model Zoo ships it), so every bundle keeps its own
``configs/``; what they share is written from ``tools/bundles/templates/configs/`` with the values of
``tools/bundles/templates/bundles.yaml``:

* ``{{ key }}`` is replaced by the bundle's value of ``key`` (its entry, over the file's ``defaults``);
* a line ending in ``#@teacher`` or ``#@student`` is kept (without the marker) only in bundles of that role;
* ``roles`` in ``bundles.yaml`` lists which templates a role gets (``distill.yaml`` only for students).

``python -m tools.bundles sync`` writes the rendered files; ``sync --check`` writes nothing and lists every file
that differs from its template (exit status 1), which is what the tests run. Edit a template, not a bundle.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional

import yaml

from . import BUNDLES_DIR

__all__ = ["TEMPLATES_DIR", "Rendered", "render_text", "render_bundles", "sync_bundles"]

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
SPEC_FILE = TEMPLATES_DIR / "bundles.yaml"
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_ROLE_MARKER = re.compile(r"\s*#@(teacher|student)$")


def render_text(template: str, values: Mapping[str, object], role: str, source: str = "template") -> str:
    """``template`` with its role lines filtered and its placeholders filled (see the module docstring).

    Raises:
        KeyError: a placeholder has no value (the message names ``source`` and the key).
    """
    lines = []
    for line in template.split("\n"):
        marker = _ROLE_MARKER.search(line)
        if marker is not None:
            if marker.group(1) != role:
                continue
            line = line[: marker.start()]
        lines.append(line)

    def fill(match: re.Match) -> str:
        key = match.group(1)
        if key not in values:
            raise KeyError(f"{source}: no value for {{{{ {key} }}}} (add it to {SPEC_FILE.name})")
        return str(values[key])

    return _PLACEHOLDER.sub(fill, "\n".join(lines))


@dataclass
class Rendered:
    """One rendered file: where it goes and what it must hold."""

    bundle: str
    path: Path
    text: str

    def current(self) -> Optional[str]:
        return self.path.read_text() if self.path.is_file() else None


def _spec(spec_file: Path) -> dict:
    spec = yaml.safe_load(spec_file.read_text())
    for key in ("defaults", "roles", "bundles"):
        if key not in spec:
            raise ValueError(f"{spec_file}: missing top-level key {key!r}")
    return spec


def render_bundles(bundles_dir: Path = BUNDLES_DIR, templates_dir: Path = TEMPLATES_DIR) -> List[Rendered]:
    """Every templated file of every bundle of ``templates_dir/bundles.yaml``, rendered, in a stable order."""
    spec = _spec(templates_dir / "bundles.yaml")
    rendered = []
    for name, entry in spec["bundles"].items():
        values: Dict[str, object] = {**spec["defaults"], **entry, "bundle_name": name}
        role = str(values.get("role"))
        if role not in spec["roles"]:
            raise ValueError(f"{templates_dir / 'bundles.yaml'}: bundle {name!r} has role {role!r}; "
                             f"expected one of {sorted(spec['roles'])}")
        for relative in spec["roles"][role]:
            template = templates_dir / relative
            if not template.is_file():
                raise FileNotFoundError(f"{template}: template listed for role {role!r} does not exist")
            text = render_text(template.read_text(), values, role, source=str(template))
            rendered.append(Rendered(name, Path(bundles_dir) / name / relative, text))
    return rendered


def sync_bundles(check: bool = False, bundles_dir: Path = BUNDLES_DIR, templates_dir: Path = TEMPLATES_DIR,
                 diff_lines: int = 20) -> List[str]:
    """Write (or with ``check``, only compare) every rendered file; returns one line per file that differed
    (with the first ``diff_lines`` lines of its unified diff when checking)."""
    report = []
    for item in render_bundles(bundles_dir, templates_dir):
        current = item.current()
        if current == item.text:
            continue
        if check:
            report.append(f"{item.path}: differs from its template" if current is not None else f"{item.path}: missing")
            if current is not None:
                diff = difflib.unified_diff(item.text.splitlines(), current.splitlines(), "template", "bundle", lineterm="")
                report += ["    " + line for line in list(diff)[:diff_lines]]
        else:
            item.path.parent.mkdir(parents=True, exist_ok=True)
            item.path.write_text(item.text)
            report.append(f"{item.path}: written")
    return report
