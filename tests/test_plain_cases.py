"""Cases already in the bundle's form are copied after one checked pass, and come out as the decoding way
would make them; anything else is decoded (workers/imaging/passthrough.py). Plain NIfTI files are read
straight from their gzip stream, as ITK would read them (workers/imaging/nifti.py)."""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Any

import imaging_fixtures as fx
import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from app.common.labels import unify_labels
from workers.imaging.cases import Case
from workers.imaging.dedup import content_hash
from workers.imaging.errors import LabelGridMismatchError, UnreadableItemError
from workers.imaging.nifti import plain_nifti
from workers.imaging.passthrough import copy_checked, stored_volume
from workers.imaging.readers import read_volume
from workers.pipeline import harmonise as harmonise_unit
from workers.pipeline import plain


def _ras_pair(folder: Path, label_dtype: str = "u1") -> tuple[Path, Path]:
    """nibabel's anatomical MR made canonical (RAS), with a two-label map, as nibabel-based sets ship."""
    volume, affine = fx.anatomical_volume()
    canonical = nib.as_closest_canonical(nib.Nifti1Image(volume, affine))
    scan = np.asarray(canonical.dataobj).astype("<i2")
    folder.mkdir(parents=True, exist_ok=True)
    image, label = folder / "case_1.nii.gz", folder / "case_1_seg.nii.gz"
    nib.save(nib.Nifti1Image(scan, canonical.affine), image)
    nib.save(nib.Nifti1Image(fx.two_label_map(scan).astype(label_dtype), canonical.affine), label)
    return image, label


def _case(image: Path, label: Path | None, table: dict[int, str] | None = None) -> Case:
    return Case(
        case_id="case_1",
        subject_id="s1",
        images=(image,),
        label=label,
        label_table=table or {1: "liver", 2: "spleen"},
    )


def _harmonise(case: Case, out: Path, table: dict[int, str] | None = None) -> dict[str, Any]:
    unification = unify_labels({"src": table or {1: "liver", 2: "spleen"}})
    return harmonise_unit.harmonise_to_file(case, "src", unification, "MR", out, case.images[0].parent)


def _decoded(case: Case, out: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    with monkeypatch.context() as patched:
        patched.setattr(plain, "copy_stored_case", lambda *args: None)
        patched.setattr(plain, "decode_plain_case", lambda *args: None)
        return _harmonise(case, out)


def test_a_ras_case_is_copied_and_matches_the_decoding_way(tmp_path: Path, monkeypatch) -> None:
    image, label = _ras_pair(tmp_path / "src")
    case = _case(image, label)
    copied = _harmonise(case, tmp_path / "copy" / "case.npz")
    decoded = _decoded(case, tmp_path / "decode" / "case.npz", monkeypatch)

    # the copy is the source file byte for byte; the decoding way wrote its own
    copy_image = tmp_path / "copy" / copied["volumes"]["image"][0]
    assert copy_image.read_bytes() == image.read_bytes()
    assert (tmp_path / "copy" / copied["volumes"]["label"][0]).read_bytes() == label.read_bytes()
    assert copied["volumes"]["image"][2] == copied["source_checksum"] == decoded["source_checksum"]
    assert copy_image.read_bytes() != (tmp_path / "decode" / decoded["volumes"]["image"][0]).read_bytes()

    # everything packaging uses is the same, the content hash included (dedup works across both ways)
    for key in ("content_hash", "annotated", "dims", "channels", "original_orientation", "source_file"):
        assert copied[key] == decoded[key], key
    for key in ("spacing", "origin", "direction"):
        assert copied[key] == pytest.approx(decoded[key], abs=1e-6), key
    for key in ("shape", "label_range"):
        assert copied["volumes"][key] == decoded["volumes"][key], key

    # and ITK reads the same voxels and grid from both
    for part in ("image", "label"):
        ours = sitk.ReadImage(str(tmp_path / "copy" / copied["volumes"][part][0]))
        theirs = sitk.ReadImage(str(tmp_path / "decode" / decoded["volumes"][part][0]))
        assert np.array_equal(sitk.GetArrayViewFromImage(ours), sitk.GetArrayViewFromImage(theirs))
        assert ours.GetDirection() == pytest.approx(theirs.GetDirection(), abs=1e-6)
        assert ours.GetOrigin() == pytest.approx(theirs.GetOrigin(), abs=1e-3)


def test_a_copied_volume_has_the_decoded_volumes_content_hash(tmp_path: Path) -> None:
    image, _ = _ras_pair(tmp_path)
    volume = stored_volume(image)
    assert volume is not None
    copied = copy_checked(volume, tmp_path / "out.nii.gz")
    assert copied is not None
    assert copied.content_hash == content_hash(sitk.ReadImage(str(image)))


@pytest.mark.parametrize("holder", ["job only", "read-only cache", "writable local folder"])
def test_a_file_nobody_else_can_change_is_linked_others_are_copied(holder: str, tmp_path: Path) -> None:
    image, _ = _ras_pair(tmp_path / "src")
    if holder != "job only":
        os.link(image, tmp_path / "other-name.nii.gz")  # the cache's or the user's own name for it
    if holder == "read-only cache":
        image.chmod(0o444)
    volume = stored_volume(image)
    assert volume is not None
    copied = copy_checked(volume, tmp_path / "out" / "image.nii.gz")
    assert copied is not None and copied.path.read_bytes() == image.read_bytes()
    assert os.path.samefile(copied.path, image) == (holder != "writable local folder")
    assert [p.name for p in copied.path.parent.iterdir()] == ["image.nii.gz"]  # no temporary left


@pytest.mark.parametrize(
    "spoil",
    [
        "lps",
        "scaled",
        "float_label",
        "wide_label",
        "renumbered",
        "qform_disagrees",
        "trailing_bytes",
    ],
)
def test_anything_not_in_the_bundles_form_is_decoded_instead(
    spoil: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image, label = _ras_pair(tmp_path / "src", label_dtype="f4" if spoil == "float_label" else "u1")
    table: dict[int, str] = {1: "liver", 2: "spleen"}
    if spoil == "lps":
        volume, affine = fx.anatomical_volume()  # stored LAS: must be reoriented
        nib.save(nib.Nifti1Image(volume, affine), image)
        nib.save(nib.Nifti1Image(fx.two_label_map(volume), affine), label)
    elif spoil == "scaled":
        loaded = nib.load(image)
        scaled = nib.Nifti1Image(np.asarray(loaded.dataobj).astype("<i2"), loaded.affine)
        scaled.header.set_slope_inter(2.0, 0.0)
        nib.save(scaled, image)
    elif spoil == "wide_label":
        loaded = nib.load(label)
        nib.save(nib.Nifti1Image(np.asarray(loaded.dataobj).astype("<u2"), loaded.affine), label)
    elif spoil == "qform_disagrees":
        loaded = nib.load(image)
        shifted = loaded.affine.copy()
        shifted[0, 3] += 5.0
        rewritten = nib.Nifti1Image(np.asarray(loaded.dataobj), loaded.affine)
        rewritten.set_qform(shifted, code=1)
        rewritten.set_sform(loaded.affine, code=2)
        nib.save(rewritten, image)
    elif spoil == "trailing_bytes":
        with image.open("ab") as handle:
            handle.write(gzip.compress(b"not part of the volume"))

    calls: list[bool] = []
    real = plain.copy_stored_case

    def spy(*args: Any) -> Any:
        result = real(*args)
        calls.append(result is not None)
        return result

    monkeypatch.setattr(plain, "copy_stored_case", spy)
    out = tmp_path / "out" / "case.npz"
    sources: dict[str, dict[int, str]] = {"src": table}
    if (
        spoil == "renumbered"
    ):  # a source sorting first takes ids 1, 2 the other way round: src's need rewriting
        sources["another"] = {1: "spleen", 2: "liver"}
    unification = unify_labels(sources)
    if spoil == "qform_disagrees":
        # ITK reads the image's qform, 5 mm off its label: refused unless the request allows resampling
        with pytest.raises(LabelGridMismatchError, match="origin"):
            harmonise_unit.harmonise_to_file(
                _case(image, label, table), "src", unification, "MR", out, image.parent
            )
        calls.clear()
    result = harmonise_unit.harmonise_to_file(
        _case(image, label, table),
        "src",
        unification,
        "MR",
        out,
        image.parent,
        resample_mismatched_labels=spoil == "qform_disagrees",
    )
    assert calls == [False]
    kinds = [alteration["kind"] for alteration in result["alterations"]]
    expected = {
        "qform_disagrees": ["resampled"],
        "float_label": ["cast"],
        "renumbered": ["relabelled"],
    }.get(spoil, [])
    assert kinds == expected
    # what the decoding way wrote, and nothing the copy attempt left behind
    names = {p.name for p in out.parent.iterdir()}
    assert names == {result["volumes"]["image"][0], result["volumes"]["label"][0]}


def test_a_truncated_file_is_not_copied_and_the_reason_comes_from_the_reader(
    tmp_path: Path,
) -> None:
    image, label = _ras_pair(tmp_path / "src")
    data = image.read_bytes()
    image.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out" / "case.npz"
    with pytest.raises(UnreadableItemError) as caught:
        _harmonise(_case(image, label), out)
    assert caught.value.code in {"truncated", "corrupt"}
    assert not out.parent.exists() or not any(out.parent.iterdir())


@pytest.mark.parametrize(
    "kind", ["las_int16", "ras_uint8", "float32", "scaled", "scaled_uncompressed", "four_d", "qform_only"]
)
def test_reading_a_nifti_straight_from_its_stream_gives_what_itk_reads(kind: str, tmp_path: Path) -> None:
    """read_volume takes plain files straight from the gzip stream and the rest through ITK: either way the
    same image as SimpleITK's own ReadImage (voxels, pixel type, geometry)."""
    volume, affine = fx.anatomical_volume()
    path = tmp_path / (f"{kind}.nii" if kind == "scaled_uncompressed" else f"{kind}.nii.gz")
    if kind == "las_int16":
        image = nib.Nifti1Image(volume, affine)
    elif kind == "ras_uint8":
        canonical = nib.as_closest_canonical(nib.Nifti1Image(volume, affine))
        image = nib.Nifti1Image(fx.two_label_map(np.asarray(canonical.dataobj)), canonical.affine)
    elif kind == "float32":
        image = nib.Nifti1Image(volume.astype(np.float32) / 7, affine)
    elif kind.startswith("scaled"):  # read as float32 by ITK: twice the stored bytes
        image = nib.Nifti1Image(volume, affine)
        image.header.set_slope_inter(0.5, -10.0)
    elif kind == "four_d":
        image = nib.Nifti1Image(np.stack([volume, volume // 2], axis=-1), affine)
    else:
        image = nib.Nifti1Image(volume, None)
        image.set_qform(affine, code=1)
        image.set_sform(None, code=0)
    nib.save(image, path)
    assert (plain_nifti(path) is not None) == (kind in ("las_int16", "ras_uint8", "float32", "qform_only"))
    ours, itk = read_volume(path), sitk.ReadImage(str(path))
    assert ours.GetPixelID() == itk.GetPixelID()
    assert np.array_equal(sitk.GetArrayViewFromImage(ours), sitk.GetArrayViewFromImage(itk))
    for get in ("GetSize", "GetSpacing", "GetOrigin", "GetDirection"):
        assert getattr(ours, get)() == getattr(itk, get)(), get


def _save(array: np.ndarray, affine: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, affine), path)
    return path


@pytest.mark.parametrize("layout", ["las", "ras_renumbered", "axes_swapped", "two_channels", "label_float"])
def test_plain_cases_decoded_with_numpy_match_the_general_way(
    layout: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    volume, affine = fx.anatomical_volume()  # stored LAS
    table: dict[int, str] = {1: "liver", 2: "spleen"}
    sources = {"src": table}
    if layout == "ras_renumbered":
        canonical = nib.as_closest_canonical(nib.Nifti1Image(volume, affine))
        volume, affine = np.asarray(canonical.dataobj).astype("<i2"), canonical.affine
        sources["another"] = {1: "spleen", 2: "liver"}  # takes ids 1, 2 the other way round
    elif layout == "axes_swapped":  # stored with x and z exchanged, as some sagittal sets are
        volume = np.ascontiguousarray(np.swapaxes(volume, 0, 2))
        affine = affine[:, [2, 1, 0, 3]]
    label = fx.two_label_map(volume)
    images = [_save(volume, affine, tmp_path / "src" / "case_1_t1.nii.gz")]
    if layout == "two_channels":
        images.append(_save((volume // 2).astype("<i2"), affine, tmp_path / "src" / "case_1_t2.nii.gz"))
    label_path = _save(
        label.astype("f4" if layout == "label_float" else "u1"), affine, tmp_path / "src" / "seg.nii.gz"
    )
    case = Case(case_id="case_1", subject_id="s1", images=tuple(images), label=label_path, label_table=table)
    unification = unify_labels(sources)
    assert (
        plain.copy_stored_case(case, "src", unification, "MR", tmp_path / "x" / "c.npz", images[0].parent)
        is None
    )

    fast = plain.decode_plain_case(
        case, "src", unification, "MR", tmp_path / "fast" / "c.npz", images[0].parent
    )
    assert fast is not None
    with monkeypatch.context() as patched:
        patched.setattr(plain, "copy_stored_case", lambda *args: None)
        patched.setattr(plain, "decode_plain_case", lambda *args: None)
        general = harmonise_unit.harmonise_to_file(
            case, "src", unification, "MR", tmp_path / "general" / "c.npz", images[0].parent
        )
    for key in (
        "content_hash",
        "annotated",
        "dims",
        "channels",
        "original_orientation",
        "source_file",
        "source_checksum",
    ):
        assert fast[key] == general[key], key
    for key in ("spacing", "origin", "direction"):
        assert fast[key] == pytest.approx(general[key], abs=1e-6), key
    for key in ("shape", "label_range"):
        assert fast["volumes"][key] == general["volumes"][key], key
    for entry in ("image", "label"):
        ours = sitk.ReadImage(str(tmp_path / "fast" / fast["volumes"][entry][0]))
        theirs = sitk.ReadImage(str(tmp_path / "general" / general["volumes"][entry][0]))
        assert ours.GetPixelID() == theirs.GetPixelID()
        assert np.array_equal(sitk.GetArrayViewFromImage(ours), sitk.GetArrayViewFromImage(theirs)), entry
        assert ours.GetDirection() == pytest.approx(theirs.GetDirection(), abs=1e-6)
        assert ours.GetOrigin() == pytest.approx(theirs.GetOrigin(), abs=1e-4)
    assert [e[0] for e in fast["volumes"]["extra"]] == [e[0] for e in general["volumes"]["extra"]]
    if layout == "ras_renumbered":  # the label map really was rewritten: liver is 2 in this bundle
        written = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "fast" / fast["volumes"]["label"][0])))
        assert set(np.unique(written[label.T == 1])) == {2}  # nibabel (x, y, z) vs ITK (z, y, x)


def test_a_plain_case_with_an_unnamed_label_value_is_skipped_with_the_reason(tmp_path: Path) -> None:
    volume, affine = fx.anatomical_volume()
    image = _save(volume, affine, tmp_path / "src" / "case_1.nii.gz")
    label = _save(fx.two_label_map(volume), affine, tmp_path / "src" / "case_1_seg.nii.gz")
    unification = unify_labels({"src": {1: "liver"}})  # the table forgot label 2
    case = Case(case_id="case_1", subject_id="s1", images=(image,), label=label, label_table={1: "liver"})
    with pytest.raises(UnreadableItemError) as caught:
        plain.decode_plain_case(case, "src", unification, "MR", tmp_path / "out" / "c.npz", image.parent)
    assert caught.value.code == "unknown_label_value" and "[2]" in caught.value.reason


@pytest.mark.parametrize("damage, code", [("bit_flip", "corrupt"), ("cut", "truncated"), ("trailing", None)])
def test_a_damaged_plain_nifti_is_refused_with_the_reason(
    damage: str, code: str | None, tmp_path: Path
) -> None:
    image, _ = _ras_pair(tmp_path)
    data = bytearray(image.read_bytes())
    if damage == "bit_flip":  # still inflates, but the CRC32 no longer matches
        data[len(data) // 2] ^= 0x01
    elif damage == "cut":
        data = data[: len(data) * 2 // 3]
    else:  # bytes after the gzip member are not part of the volume: read, but never copied as is
        data += gzip.compress(b"not part of the volume")
    image.write_bytes(bytes(data))
    assert plain_nifti(image) is not None
    if code is None:
        assert read_volume(image).GetSize() == nib.load(image).shape
        return
    with pytest.raises(UnreadableItemError) as caught:
        read_volume(image)
    assert caught.value.code == code


def test_a_label_whose_header_differs_slightly_is_decoded_onto_the_images_grid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image, label = _ras_pair(tmp_path / "src")
    loaded = nib.load(label)
    shifted = loaded.affine.copy()
    shifted[0, 3] += 0.0005  # header rounding: within grids_match's tolerance, not equal
    nib.save(nib.Nifti1Image(np.asarray(loaded.dataobj), shifted), label)
    result = _harmonise(_case(image, label), tmp_path / "out" / "case.npz")
    written = sitk.ReadImage(str(tmp_path / "out" / result["volumes"]["label"][0]))
    assert (
        written.GetOrigin()
        == sitk.ReadImage(str(tmp_path / "out" / result["volumes"]["image"][0])).GetOrigin()
    )
    assert (tmp_path / "out" / result["volumes"]["image"][0]).read_bytes() != image.read_bytes()
