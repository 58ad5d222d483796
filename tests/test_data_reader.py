"""tools.data: reading volumes, site names, discovery, integrity check, index and LOSO splits.

Fixtures are tiny volumes written here with nibabel (NIfTI) and by hand (MetaImage, following the
format's specification, so the ITK reader is checked against the spec rather than against ITK's own
writer). They reproduce the quirks of the real collection: both naming schemes, ``_Segmentation``,
gaps in case numbers, label 2, and .nii/.nii.gz/.mha/.mhd.
"""

import gzip
import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tools.data import (
    SITES,
    DatasetError,
    build_index,
    canonical_site,
    load_datalist,
    load_index,
    make_all_splits,
    make_split,
    num_validation,
    read_volume,
    verify_dataset,
    write_json,
)
from tools.data.layout import discover

# voxel -> RAS affines of the fixtures, with their orientation codes worked out by hand
LPS_AFFINE = np.array([[-0.6, 0, 0, 10.0], [0, -0.6, 0, 20.0], [0, 0, 3.0, -5.0], [0, 0, 0, 1]])
RAS_AFFINE = np.array([[0.4, 0, 0, -3.0], [0, 0.4, 0, 7.0], [0, 0, 2.5, 1.0], [0, 0, 0, 1]])
# axis 0 runs towards -y (P), axis 1 towards -x (L), axis 2 towards +z (S)
PLS_AFFINE = np.array([[0, -0.5, 0, 4.0], [-0.7, 0, 0, 2.0], [0, 0, 3.6, 0.5], [0, 0, 0, 1]])
# a cyclic permutation (its ITK direction matrix is not symmetric): axes towards +z (S), -x (L), -y (P)
SLP_AFFINE = np.array([[0, -0.5, 0, 1.0], [0, 0, -0.8, -2.0], [3.0, 0, 0, 6.0], [0, 0, 0, 1]])
# LPS rotated by 20 degrees about z: still nearest to L, P, S
_c, _s = np.cos(np.deg2rad(20)), np.sin(np.deg2rad(20))
OBLIQUE_AFFINE = np.array(
    [[-0.6 * _c, 0.6 * _s, 0, 3.0], [-0.6 * _s, -0.6 * _c, 0, -4.0], [0, 0, 3.0, 2.0], [0, 0, 0, 1]]
)
AFFINES = {"LPS": LPS_AFFINE, "RAS": RAS_AFFINE, "PLS": PLS_AFFINE, "SLP": SLP_AFFINE, "oblique-LPS": OBLIQUE_AFFINE}
SHAPE = (8, 8, 4)

OLD_LAYOUT = {  # folder: (case numbers, extension, mask suffix, affine name, image dtype)
    "ISBI": ([0, 1, 2], ".nii.gz", "_segmentation", "LPS", np.float32),
    "ISBI_1.5": ([0, 1, 2], ".nii.gz", "_Segmentation", "RAS", np.float32),
    "I2CVB": ([0, 1, 2], ".nii", "_segmentation", "PLS", np.float32),
    "UCL": ([1, 26, 27], ".mha", "_segmentation", "SLP", np.float32),
    "BIDMC": ([0, 2, 3], ".mhd", "_segmentation", "oblique-LPS", np.int16),
    "HK": ([38, 39, 40], ".nii.gz", "_segmentation", "LPS", np.float32),
}
NEW_FOLDER = {"ISBI": "RUNMC", "ISBI_1.5": "BMC", "I2CVB": "HCRUDB", "UCL": "UCL", "BIDMC": "BIDMC", "HK": "HK"}
CANONICAL = {"ISBI": "RUNMC", "ISBI_1.5": "BMC", "I2CVB": "HCRUDB", "UCL": "UCL", "BIDMC": "BIDMC", "HK": "HK"}
ZONE_CASES = {("UCL", 26), ("HK", 39)}  # masks holding value 2


# ---------------------------------------------------------------- writers


def write_metaimage(path, array, affine=None):
    """A MetaImage file per the MetaIO spec: LPS geometry, TransformMatrix = direction columns, x fastest."""
    path = Path(path)
    array = np.asarray(array)
    ndim = array.ndim
    if affine is not None:
        lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
        spacing = np.linalg.norm(lps[:3, :3], axis=0)
        direction = lps[:3, :3] / spacing
        origin = lps[:3, 3]
    else:
        spacing, direction, origin = np.ones(ndim), np.eye(ndim), np.zeros(ndim)
    element = {"float32": "MET_FLOAT", "uint8": "MET_UCHAR", "int16": "MET_SHORT", "float64": "MET_DOUBLE"}
    data_file = "LOCAL" if path.suffix == ".mha" else path.with_suffix(".raw").name
    fmt = lambda values: " ".join(repr(float(v)) for v in np.ravel(values))  # noqa: E731
    header = [
        "ObjectType = Image",
        f"NDims = {ndim}",
        "BinaryData = True",
        "BinaryDataByteOrderMSB = False",
        "CompressedData = False",
        f"TransformMatrix = {fmt(direction.T)}",
        f"Offset = {fmt(origin)}",
        f"ElementSpacing = {fmt(spacing)}",
        "DimSize = " + " ".join(str(s) for s in array.shape),
        f"ElementType = {element[array.dtype.name]}",
        f"ElementDataFile = {data_file}",
    ]
    data = array.astype(array.dtype.newbyteorder("<")).tobytes(order="F")
    text = ("\n".join(header) + "\n").encode()
    if data_file == "LOCAL":
        path.write_bytes(text + data)
    else:
        path.write_bytes(text)
        path.with_suffix(".raw").write_bytes(data)


def write_volume(path, array, affine):
    path = Path(path)
    if path.name.endswith((".mha", ".mhd")):
        write_metaimage(path, array, affine)
    else:
        nib.save(nib.Nifti1Image(np.asarray(array), affine), str(path))


def make_image(seed, dtype=np.float32, shape=SHAPE):
    values = np.random.default_rng(seed).uniform(0, 1000, size=shape)
    return values.astype(dtype)


def make_mask(zone=False, shape=SHAPE):
    mask = np.zeros(shape, np.uint8)
    mask[2:6, 2:6, 1:3] = 1
    if zone:
        mask[3:5, 3:5, 1] = 2
    return mask


def write_dataset(root, naming="old", nested=None, rename=None):
    """Six sites of three cases with the collection's quirks; returns {(site, case): (image, label)}.

    naming: "old", "new" or "new-i2cvb" (newer names but I2CVB kept); nested: sub-folder of root
    holding the sites; rename: {old folder name: folder name to use instead}.
    """
    base = Path(root) / nested if nested else Path(root)
    files = {}
    for old, (numbers, ext, suffix, affine_name, dtype) in OLD_LAYOUT.items():
        affine = AFFINES[affine_name]
        folder = old if naming == "old" else NEW_FOLDER[old]
        if naming == "new-i2cvb" and old == "I2CVB":
            folder = "I2CVB"
        folder = (rename or {}).get(old, folder)
        site_dir = base / folder
        site_dir.mkdir(parents=True, exist_ok=True)
        for n in numbers:
            case = f"Case{n:02d}"
            image, label = site_dir / f"{case}{ext}", site_dir / f"{case}{suffix}{ext}"
            write_volume(image, make_image(n, dtype), affine)
            write_volume(label, make_mask(zone=(old, n) in ZONE_CASES), affine)
            files[(CANONICAL[old], case)] = (image, label)
    return files


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("old_naming")
    files = write_dataset(root)
    return root, files


def _single_line_error(call, path):
    with pytest.raises(DatasetError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message, message
    assert message.startswith(f"{path}:"), message
    return message


# ---------------------------------------------------------------- site names


def test_canonical_site_maps_both_schemes_any_case_and_numbers():
    old = ["ISBI", "ISBI_1.5", "I2CVB", "UCL", "BIDMC", "HK"]
    new = ["RUNMC", "BMC", "HCRUDB", "UCL", "BIDMC", "HK"]
    assert [canonical_site(n) for n in old] == list(SITES) == new
    assert [canonical_site(n) for n in new] == new
    assert [canonical_site(n.lower()) for n in old] == new
    assert [canonical_site(f"S{i}") for i in range(1, 7)] == new
    assert canonical_site("i2cvb") == canonical_site("HCRUDB") == "HCRUDB"
    with pytest.raises(DatasetError, match="unknown site 'ISBI_3'"):
        canonical_site("ISBI_3")


# ---------------------------------------------------------------- reading


@pytest.mark.parametrize("ext", [".nii", ".nii.gz", ".mha", ".mhd"])
@pytest.mark.parametrize("name", list(AFFINES))
def test_read_volume_same_geometry_in_every_format(tmp_path, ext, name):
    affine, orientation = AFFINES[name], name[-3:]
    array = make_image(3, shape=(5, 4, 3))
    path = tmp_path / f"Case00{ext}"
    write_volume(path, array, affine)
    volume = read_volume(path)
    assert volume.shape == (5, 4, 3)
    np.testing.assert_array_equal(volume.array, array)
    np.testing.assert_allclose(volume.affine, affine, atol=1e-6)
    np.testing.assert_allclose(volume.spacing, np.linalg.norm(affine[:3, :3], axis=0), rtol=1e-6)
    assert volume.orientation == orientation


def test_real_case_geometry_matches_nibabel(real_case_dir):
    image_path = real_case_dir / "Case00.nii.gz"
    reference = nib.load(str(image_path))
    volume = read_volume(image_path)
    assert volume.shape == (128, 128, 64)
    np.testing.assert_allclose(volume.spacing, (1.09375, 1.09375, 1.61563), atol=1e-4)
    assert volume.orientation == "".join(nib.aff2axcodes(reference.affine)) == "LPS"
    np.testing.assert_array_equal(volume.affine, reference.affine)
    np.testing.assert_array_equal(volume.array, np.asanyarray(reference.dataobj))
    mask = read_volume(real_case_dir / "Case00_segmentation.nii.gz")
    assert sorted(np.unique(mask.array).tolist()) == [0, 1]
    np.testing.assert_allclose(mask.affine, volume.affine, atol=1e-6)


def test_real_case_converted_by_itk_reads_back_identically(real_case_dir, tmp_path):
    """ITK reads the NIfTI (RAS -> LPS) and writes MetaImage; our ITK path must undo it exactly."""
    itk = pytest.importorskip("itk")
    converted = tmp_path / "Case00.mha"
    itk.imwrite(itk.imread(str(real_case_dir / "Case00.nii.gz")), str(converted))
    nifti, meta = read_volume(real_case_dir / "Case00.nii.gz"), read_volume(converted)
    np.testing.assert_array_equal(meta.array, nifti.array)
    np.testing.assert_allclose(meta.affine, nifti.affine, atol=1e-5)
    assert meta.orientation == nifti.orientation == "LPS"


def test_unreadable_files_give_one_line_errors_naming_the_file(tmp_path):
    big = make_image(0, shape=(32, 32, 16))
    # .nii.gz cut in half: the header reads fine, the data does not
    gz = tmp_path / "Case00.nii.gz"
    write_volume(gz, big, LPS_AFFINE)
    gz.write_bytes(gz.read_bytes()[: gz.stat().st_size // 2])
    assert "truncated" in _single_line_error(lambda: read_volume(gz), gz)
    # .nii.gz cut inside its header
    head = tmp_path / "Case01.nii.gz"
    head.write_bytes(gzip.compress(nib.Nifti1Image(big, LPS_AFFINE).to_bytes())[:40])
    _single_line_error(lambda: read_volume(head), head)
    # uncompressed .nii cut in half
    nii = tmp_path / "Case02.nii"
    write_volume(nii, big, LPS_AFFINE)
    nii.write_bytes(nii.read_bytes()[: nii.stat().st_size // 2])
    _single_line_error(lambda: read_volume(nii), nii)
    # .mha with its data cut in half, .mhd without its .raw, garbage named .nii.gz
    mha = tmp_path / "Case03.mha"
    write_volume(mha, big, LPS_AFFINE)
    mha.write_bytes(mha.read_bytes()[: mha.stat().st_size // 2])
    assert "cannot read MetaImage data" in _single_line_error(lambda: read_volume(mha), mha)
    mhd = tmp_path / "Case04.mhd"
    write_volume(mhd, big, LPS_AFFINE)
    mhd.with_suffix(".raw").unlink()
    _single_line_error(lambda: read_volume(mhd), mhd)
    junk = tmp_path / "Case05.nii.gz"
    junk.write_bytes(b"this is not an image" * 10)
    _single_line_error(lambda: read_volume(junk), junk)
    missing = tmp_path / "Case06.nii.gz"
    assert "no such file" in _single_line_error(lambda: read_volume(missing), missing)
    other = tmp_path / "Case07.png"
    other.write_bytes(b"x")
    assert "unknown volume format" in _single_line_error(lambda: read_volume(other), other)


@pytest.mark.parametrize("ext", [".nii.gz", ".mha"])
@pytest.mark.parametrize("shape", [(8, 8), (8, 8, 4, 2)], ids=["2D", "4D"])
def test_non_3d_volume_is_refused(tmp_path, ext, shape):
    path = tmp_path / f"Case00{ext}"
    array = np.zeros(shape, np.float32)
    if ext == ".mha":
        write_metaimage(path, array)
    else:
        nib.save(nib.Nifti1Image(array, np.eye(4)), str(path))
    message = _single_line_error(lambda: read_volume(path), path)
    assert f"expected a 3D volume, got shape {shape} ({len(shape)}D)" in message
    assert read_volume(path, ndim=None).shape == shape


# ---------------------------------------------------------------- discovery and index


def test_index_records_every_quirk(dataset):
    root, files = dataset
    index = build_index(root)
    assert index["root"] == os.path.abspath(root)
    assert index["site_dir"] == "."
    assert list(index["sites"]) == list(SITES)
    assert {s: v["folder"] for s, v in index["sites"].items()} == {CANONICAL[o]: o for o in OLD_LAYOUT}
    records = {(r["site"], r["case"]): r for r in index["cases"]}
    assert set(records) == set(files)
    # gaps in case numbers are kept, in case-number order
    assert [r["case"] for r in index["cases"] if r["site"] == "UCL"] == ["Case01", "Case26", "Case27"]
    assert [r["case"] for r in index["cases"] if r["site"] == "BIDMC"] == ["Case00", "Case02", "Case03"]
    # ISBI_1.5's capital-S masks are paired
    assert records[("BMC", "Case00")]["label"] == "ISBI_1.5/Case00_Segmentation.nii.gz"
    for old, (numbers, ext, _, affine_name, _) in OLD_LAYOUT.items():
        affine = AFFINES[affine_name]
        for n in numbers:
            record = records[(CANONICAL[old], f"Case{n:02d}")]
            image, label = files[(CANONICAL[old], f"Case{n:02d}")]
            assert (root / record["image"]) == image and (root / record["label"]) == label
            assert record["shape"] == list(SHAPE)
            np.testing.assert_allclose(record["spacing"], np.linalg.norm(affine[:3, :3], axis=0), rtol=1e-6)
            assert record["orientation"] == affine_name[-3:]
            assert record["label_values"] == ([0, 1, 2] if (old, n) in ZONE_CASES else [0, 1])
    assert verify_dataset(root) == []


@pytest.mark.parametrize("naming", ["new", "new-i2cvb"])
def test_newer_naming_nested_one_level(tmp_path, naming):
    files = write_dataset(tmp_path, naming=naming, nested="Processed_data_nii")
    index = build_index(tmp_path)
    assert index["site_dir"] == "Processed_data_nii"
    folder = "I2CVB" if naming == "new-i2cvb" else "HCRUDB"
    assert index["sites"]["HCRUDB"]["folder"] == f"Processed_data_nii/{folder}"
    assert index["sites"]["RUNMC"]["folder"] == "Processed_data_nii/RUNMC"
    assert {(r["site"], r["case"]) for r in index["cases"]} == set(files)
    assert all((tmp_path / r["image"]).is_file() for r in index["cases"])


def test_folder_names_any_case_and_ignored_files(tmp_path):
    write_dataset(tmp_path, rename={"ISBI": "isbi", "HK": "Hk"})
    (tmp_path / "README.txt").write_text("notes")
    (tmp_path / "isbi" / ".DS_Store").write_bytes(b"x")
    (tmp_path / "isbi" / "notes.txt").write_text("x")
    (tmp_path / "isbi" / "extra").mkdir()
    index = build_index(tmp_path)
    assert index["sites"]["RUNMC"]["folder"] == "isbi" and index["sites"]["HK"]["folder"] == "Hk"
    assert len(index["cases"]) == 18


def test_root_problems(tmp_path):
    missing = tmp_path / "missing"
    assert verify_dataset(missing) == [f"{missing}: dataset root does not exist"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert verify_dataset(empty) == [f"{empty}: dataset root is empty"]
    unrelated = tmp_path / "unrelated"
    (unrelated / "images").mkdir(parents=True)
    [problem] = verify_dataset(unrelated)
    assert problem.startswith(f"{unrelated}: no site folders found")
    two = tmp_path / "two"
    (two / "a" / "UCL").mkdir(parents=True)
    (two / "b" / "HK").mkdir(parents=True)
    assert verify_dataset(two) == [f"{two}: several folders hold site folders (a, b); pass one of them as the root"]
    with pytest.raises(DatasetError) as info:
        build_index(two)
    assert info.value.problems == verify_dataset(two)


def test_missing_and_duplicate_site_folders(tmp_path):
    write_dataset(tmp_path)
    shutil.copytree(tmp_path / "ISBI", tmp_path / "RUNMC")
    shutil.rmtree(tmp_path / "HK")
    problems = verify_dataset(tmp_path)
    assert problems == [
        f"{tmp_path}: several folders for site RUNMC (ISBI) (ISBI, RUNMC)",
        f"{tmp_path}: no folder for site HK",
    ]
    # a subset of sites may be asked for explicitly
    assert verify_dataset(tmp_path, sites=["UCL", "S5"]) == []
    sites = [r["site"] for r in build_index(tmp_path, sites=["BIDMC", "UCL"])["cases"]]
    assert sites == ["UCL"] * 3 + ["BIDMC"] * 3


def test_verify_lists_every_problem_naming_its_file(tmp_path):
    files = write_dataset(tmp_path)

    def rewrite(key, which, array, affine=None):
        path = files[key][which]
        default_affine = AFFINES[OLD_LAYOUT[next(o for o in OLD_LAYOUT if CANONICAL[o] == key[0])][3]]
        write_volume(path, array, default_affine if affine is None else affine)
        return path

    shifted = LPS_AFFINE.copy()
    shifted[0, 3] += 0.5
    nearly = LPS_AFFINE.copy()
    nearly[0, 3] += 1e-5  # within tolerance: no problem
    nan_image, inf_image = make_image(0), make_image(1)
    nan_image[0, 0, 0] = np.nan
    inf_image[1, 1, 1] = np.inf
    inf_image[1, 2, 1] = -np.inf
    bad_values, half = make_mask(), make_mask().astype(np.float32)
    bad_values[0, 0, 0] = 3
    half[0, 0, 0] = 0.5
    expected = [
        (
            rewrite(("RUNMC", "Case00"), 1, make_mask(shape=(8, 8, 5))),
            "mask shape (8, 8, 5) differs from image shape (8, 8, 4)",
        ),
        (rewrite(("RUNMC", "Case01"), 1, make_mask(), shifted), "affine differs from the image affine by up to 0.5 mm"),
        (rewrite(("BMC", "Case00"), 1, bad_values), "mask values must be in {0, 1, 2}, found {3}"),
        (rewrite(("BMC", "Case01"), 0, nan_image), "image has 1 NaN or inf voxels"),
        (rewrite(("BMC", "Case02"), 0, inf_image), "image has 2 NaN or inf voxels"),
        (rewrite(("HCRUDB", "Case00"), 1, np.zeros(SHAPE, np.uint8)), "mask is empty"),
        (rewrite(("BIDMC", "Case02"), 1, half), "mask values must be in {0, 1, 2}, found {0.5}"),
        (rewrite(("UCL", "Case01"), 0, np.zeros((8, 8), np.float32)), "expected a 3D volume, got shape (8, 8) (2D)"),
    ]
    rewrite(("RUNMC", "Case02"), 1, make_mask(), nearly)
    files[("HCRUDB", "Case01")][1].unlink()
    expected.append((files[("HCRUDB", "Case01")][0], "image has no mask"))
    orphan = tmp_path / "I2CVB" / "Case05_segmentation.nii"
    write_volume(orphan, make_mask(), LPS_AFFINE)
    expected.append((orphan, "mask has no image"))
    for image, label in [files[k] for k in files if k[0] == "HK"]:
        image.unlink()
        label.unlink()
    expected.append((tmp_path / "HK", "site HK has no cases"))
    duplicate = tmp_path / "BIDMC" / "Case00.nii.gz"
    write_volume(duplicate, make_image(0), LPS_AFFINE)
    expected.append((duplicate, "second image file for Case00"))
    stray = tmp_path / "BIDMC" / "notes.nii.gz"
    write_volume(stray, make_image(0), LPS_AFFINE)
    expected.append((stray, "unexpected volume file name"))

    problems = verify_dataset(tmp_path)
    assert len(problems) == len(expected), "\n".join(problems)
    for path, what in expected:
        matches = [p for p in problems if p.startswith(f"{path}:") and what in p]
        assert len(matches) == 1, (path, what, problems)
    with pytest.raises(DatasetError) as info:
        build_index(tmp_path)
    assert info.value.problems == problems


# ---------------------------------------------------------------- splits

REAL_SIZES = {"RUNMC": 30, "BMC": 30, "HCRUDB": 19, "UCL": 13, "BIDMC": 12, "HK": 12}


def fake_index(sizes=REAL_SIZES):
    cases = [
        {
            "site": s,
            "case": f"Case{i:02d}",
            "image": f"{s}/Case{i:02d}.nii.gz",
            "label": f"{s}/Case{i:02d}_segmentation.nii.gz",
        }
        for s, n in sizes.items()
        for i in range(n)
    ]
    return {"format": "prostate-rkd-index/1", "root": "/data", "cases": cases}


def test_num_validation():
    assert [num_validation(n, 0.2) for n in (0, 1, 2, 3, 12, 13, 19, 30)] == [0, 0, 1, 1, 2, 3, 4, 6]
    assert num_validation(2, 0.9) == 1 and num_validation(10, 0.25) == 3  # clamp to n-1; 2.5 rounds up


def test_split_partitions_cases_and_holds_out_the_target():
    index = fake_index()
    split = make_split(index, "ISBI_1.5", val_fraction=0.2, seed=0)
    assert split["target_site"] == "BMC"
    assert split["source_sites"] == ["RUNMC", "HCRUDB", "UCL", "BIDMC", "HK"]
    assert (split["seed"], split["val_fraction"], split["root"]) == (0, 0.2, "/data")
    key = lambda e: (e["site"], e["case"])  # noqa: E731
    train, val, test = ({key(e) for e in split[k]} for k in ("training", "validation", "test"))
    assert len(train) + len(val) + len(test) == sum(REAL_SIZES.values())
    assert train | val | test == {(c["site"], c["case"]) for c in index["cases"]}
    assert {s for s, _ in test} == {"BMC"} and len(test) == 30
    assert "BMC" not in {s for s, _ in train | val}
    per_site_val = {s: sum(1 for v in val if v[0] == s) for s in split["source_sites"]}
    assert per_site_val == {"RUNMC": 6, "HCRUDB": 4, "UCL": 3, "BIDMC": 2, "HK": 2}
    entry = split["test"][0]
    assert entry == {
        "image": "BMC/Case00.nii.gz",
        "label": "BMC/Case00_segmentation.nii.gz",
        "site": "BMC",
        "case": "Case00",
    }


def test_split_is_seeded_and_independent_of_the_target():
    index = fake_index()
    a, b = make_split(index, "BMC", 0.2, 7), make_split(index, "S2", 0.2, 7)
    assert a == b  # same seed, target named differently
    val_sets = {tuple((e["site"], e["case"]) for e in make_split(index, "BMC", 0.2, s)["validation"]) for s in range(4)}
    assert len(val_sets) == 4
    # a source site's validation cases do not depend on which other site is held out
    def runmc_validation(target):
        return [e["case"] for e in make_split(index, target, 0.2, 3)["validation"] if e["site"] == "RUNMC"]

    assert runmc_validation("BMC") == runmc_validation("HK") == runmc_validation("UCL")


def test_no_site_held_out_trains_on_every_site_with_the_loso_validation_cases():
    index = fake_index()
    whole = make_split(index, "none", val_fraction=0.2, seed=3)
    assert whole == make_split(index, None, 0.2, 3) == make_split(index, " None ", 0.2, 3)
    assert whole["target_site"] is None and whole["test"] == []
    assert whole["source_sites"] == ["RUNMC", "BMC", "HCRUDB", "UCL", "BIDMC", "HK"]
    assert len(whole["training"]) + len(whole["validation"]) == sum(REAL_SIZES.values())
    key = lambda e: (e["site"], e["case"])  # noqa: E731
    loso = make_split(index, "HK", 0.2, 3)  # each site keeps the validation cases it has in every LOSO datalist
    assert [key(e) for e in whole["validation"] if e["site"] != "HK"] == [key(e) for e in loso["validation"]]
    assert [key(e) for e in whole["training"] if e["site"] != "HK"] == [key(e) for e in loso["training"]]


def test_split_small_sites_and_errors():
    index = fake_index({"RUNMC": 1, "BMC": 2, "UCL": 3})
    split = make_split(index, "UCL", 0.2, 0)
    assert [e["site"] for e in split["validation"]] == ["BMC"]
    assert [e["site"] for e in split["training"]] == ["RUNMC", "BMC"]
    assert set(make_all_splits(index)) == {"RUNMC", "BMC", "UCL"}
    with pytest.raises(DatasetError, match="target site HK has no cases in the index"):
        make_split(index, "HK")
    with pytest.raises(DatasetError, match="unknown site"):
        make_split(index, "Site7")
    for fraction in (0, 1, -0.1, True, "0.2"):
        with pytest.raises(DatasetError, match="val_fraction"):
            make_split(index, "UCL", fraction)
    for seed in (-1, 1.5, True):
        with pytest.raises(DatasetError, match="seed"):
            make_split(index, "UCL", 0.2, seed)
    with pytest.raises(DatasetError, match="only the target site"):
        make_split(fake_index({"UCL": 3}), "UCL")


def test_datalist_loads_with_monai(dataset, tmp_path):
    monai_data = pytest.importorskip("monai.data")
    root, _ = dataset
    index_path = write_json(build_index(root), tmp_path / "index.json")
    index = load_index(index_path)
    datalist_path = write_json(make_split(index, "HK"), tmp_path / "datalist_HK.json")
    for key, count in (("training", 10), ("validation", 5), ("test", 3)):
        entries = monai_data.load_decathlon_datalist(str(datalist_path), data_list_key=key, base_dir=str(root))
        ours = load_datalist(datalist_path, key)
        assert len(entries) == len(ours) == count
        for theirs, mine in zip(entries, ours):
            assert theirs["image"] == mine["image"] and theirs["label"] == mine["label"]
            assert os.path.isfile(mine["image"]) and os.path.isfile(mine["label"])
        # our loader leaves "site" alone (MONAI's turns "UCL" into "<root>/UCL" when that folder exists)
        assert {e["site"] for e in ours} <= set(SITES)


def test_load_index_rejects_malformed_files(tmp_path):
    missing = tmp_path / "none.json"
    _single_line_error(lambda: load_index(missing), missing)
    broken = tmp_path / "broken.json"
    broken.write_text('{"format": ')
    assert "not valid JSON" in _single_line_error(lambda: load_index(broken), broken)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"training": []}))
    assert "not a dataset index" in _single_line_error(lambda: load_index(other), other)
    bad_site = tmp_path / "bad_site.json"
    index = fake_index({"UCL": 2})
    index["cases"][0]["site"] = "ISBI"  # the index stores canonical names only
    bad_site.write_text(json.dumps(index))
    assert "cases[0] has unknown site 'ISBI'" in _single_line_error(lambda: load_index(bad_site), bad_site)


def test_discover_pairs_without_reading(tmp_path):
    """Discovery alone (no volume is read): pairing is by case id, masks matched in any letter case."""
    site = tmp_path / "BIDMC"
    site.mkdir()
    for name in ("Case00.nii.gz", "Case00_SEGMENTATION.nii.gz", "case02.mhd", "case02.raw", "Case02_segmentation.mhd"):
        (site / name).write_bytes(b"")
    layout, problems = discover(tmp_path, sites=["BIDMC"])
    assert problems == []
    assert [(c.case, c.image.name, c.label.name) for c in layout.cases] == [
        ("Case00", "Case00.nii.gz", "Case00_SEGMENTATION.nii.gz"),
        ("Case02", "case02.mhd", "Case02_segmentation.mhd"),
    ]
