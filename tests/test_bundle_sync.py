"""``python -m tools.bundles sync``: the five bundles' configs rendered from one set of templates (issue 12)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from tools.bundles import BUNDLES_DIR
from tools.bundles.sync import TEMPLATES_DIR, render_bundles, render_text, sync_bundles


def test_render_text_fills_placeholders_and_keeps_the_roles_lines():
    template = "name: {{ bundle_name }}\nwidth: {{width}}  #@teacher\nteacher_width: {{ width }}  #@student\nend\n"
    values = {"bundle_name": "b", "width": 0.25}
    assert render_text(template, values, "teacher") == "name: b\nwidth: 0.25\nend\n"
    assert render_text(template, values, "student") == "name: b\nteacher_width: 0.25\nend\n"
    with pytest.raises(KeyError, match=r"t.yaml: no value for \{\{ width \}\}"):
        render_text("w: {{ width }}", {}, "student", source="t.yaml")


def test_every_bundle_file_comes_from_a_template():
    rendered = render_bundles()
    spec = yaml.safe_load((TEMPLATES_DIR / "bundles.yaml").read_text())
    bundles = sorted(p.name for p in BUNDLES_DIR.iterdir() if (p / "configs").is_dir())
    assert sorted(spec["bundles"]) == bundles
    for bundle in bundles:
        on_disk = sorted(p.name for p in (BUNDLES_DIR / bundle / "configs").iterdir())
        assert sorted(r.path.name for r in rendered if r.bundle == bundle) == on_disk, bundle
    assert {r.path.name for r in rendered if r.bundle.endswith("_teacher")} >= {"train.yaml", "inference.yaml"}
    assert not any(r.path.name.startswith("distill") for r in rendered if r.bundle.endswith("_teacher"))
    for bundle in (b for b in bundles if b.endswith("_student")):  # every objective is a config of every student
        names = {r.path.name for r in rendered if r.bundle == bundle}
        assert {"distill.yaml", "distill_paper_literal.yaml", "distill_emkd.yaml"} <= names, bundle


def test_check_finds_a_drifted_copy_and_sync_repairs_it(tmp_path):
    bundles = tmp_path / "bundles"
    shutil.copytree(BUNDLES_DIR, bundles, ignore=shutil.ignore_patterns("models", "logs", "eval", "runs"))
    assert sync_bundles(check=True, bundles_dir=bundles) == []
    drifted = bundles / "prostate_mri_espnet_student" / "configs" / "evaluate.yaml"
    drifted.write_text(drifted.read_text().replace("\n", "\nextra_key: 1\n", 1))
    (bundles / "prostate_mri_unetpp_teacher" / "configs" / "inference_onnx.yaml").unlink()
    report = sync_bundles(check=True, bundles_dir=bundles)
    assert [line for line in report if not line.startswith(" ")] == [
        f"{drifted}: differs from its template",
        f"{bundles / 'prostate_mri_unetpp_teacher' / 'configs' / 'inference_onnx.yaml'}: missing",
    ]
    assert "    +extra_key: 1" in report
    written = sync_bundles(bundles_dir=bundles)
    assert len(written) == 2 and sync_bundles(check=True, bundles_dir=bundles) == []
