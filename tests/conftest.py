import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get("PROSTATE_RKD_SHARED", REPO_ROOT.parent / "shared"))
REAL_CASE_DIR = SHARED_DIR / "data" / "real_case"


@pytest.fixture(scope="session")
def real_case_dir() -> Path:
    """``../shared/data/real_case``: one real endorectal-coil T2 volume and its mask (read-only)."""
    if not (REAL_CASE_DIR / "Case00.nii.gz").exists():
        pytest.skip(f"real case not found under {REAL_CASE_DIR} (set PROSTATE_RKD_SHARED)")
    return REAL_CASE_DIR
