"""``python -m tools.bundles sync [--check]``: write the five bundles' configs from their templates (a fire CLI).

Examples::

    python -m tools.bundles sync           # after editing tools/bundles/templates/: rewrite every bundle's configs
    python -m tools.bundles sync --check   # list the files that differ from their templates; exit 1 if any
"""

from __future__ import annotations

import sys

import fire

from tools.cli import one_line_errors

from .sync import sync_bundles


def sync(check: bool = False) -> None:
    """Render ``tools/bundles/templates`` into ``bundles/<name>/``; with ``check``, compare only."""
    report = sync_bundles(check=check)
    for line in report:
        print(line)
    if check and report:
        print("the bundles differ from their templates: edit tools/bundles/templates/, then run "
              "python -m tools.bundles sync", file=sys.stderr)
        raise SystemExit(1)
    print("bundles match their templates" if check else f"{sum(1 for r in report if r.endswith('written'))} file(s) written")


def main() -> None:
    fire.Fire({"sync": one_line_errors(sync)}, name="tools.bundles")


if __name__ == "__main__":
    main()
