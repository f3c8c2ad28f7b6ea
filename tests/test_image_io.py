"""nnunet_vertkd.image_io: one rule for image endings, case ids and checked reading."""
import numpy as np
import pytest
import SimpleITK as sitk

from helpers.bad_files import patch_nifti1_header, truncate
from nnunet_vertkd.image_io import (IMAGE_ENDINGS, ImageReadError, case_id, case_name, read_image,
                                    scalar_3d_problem, split_ending)


@pytest.mark.parametrize("ending", IMAGE_ENDINGS)
def test_every_image_ending_is_split_off(ending):
    assert split_ending("a_0000" + ending) == ("a_0000", ending)
    assert case_name("folder/a_0000" + ending) == ("a", 0)
    assert case_name("a_0001" + ending) == ("a", 1)
    assert case_name("a" + ending) == ("a", None)
    assert case_id("x/sub-verse500_dir-ax_seg-vert_msk" + ending) == "sub-verse500_dir-ax"
    assert case_id("case_007_0000" + ending) == "case_007"


def test_names_without_an_image_ending():
    assert split_ending("a.png") == ("a.png", "")
    assert case_name("a.txt") == ("a.txt", None)
    assert case_id("sub-verse500_dir-ax_seg-subreg_ctd.json") == "sub-verse500_dir-ax"
    assert case_id("verse004_ctd.json") == "verse004"
    assert case_id("verse004_seg.nii.gz") == "verse004"
    assert case_id("sub-verse401_split-verse201_ct.nii.gz") == "sub-verse401_split-verse201"
    assert case_id("_ct.nii.gz") == "_ct"  # a suffix alone is kept as the name
    # the two rules differ on purpose: case_name keeps VerSe suffixes, case_id strips them
    assert case_name("sub-verse500_ct.nii.gz") == ("sub-verse500_ct", None)
    assert case_id("sub-verse500_ct.nii.gz") == "sub-verse500"


def _image(shape_kji=(6, 5, 4), dtype=np.int16):
    img = sitk.GetImageFromArray(np.arange(np.prod(shape_kji)).reshape(shape_kji).astype(dtype))
    img.SetSpacing((1.0, 1.0, 2.0))
    return img


def test_read_image_returns_the_image_and_no_warnings(tmp_path):
    path = str(tmp_path / "a.nii.gz")
    sitk.WriteImage(_image(), path)
    image, warnings = read_image(path)
    assert image.GetSize() == (4, 5, 6) and warnings == []
    assert scalar_3d_problem(image) is None


def test_read_image_refusals_name_the_file(tmp_path):
    with pytest.raises(ImageReadError, match="file not found: .*missing.nii.gz"):
        read_image(str(tmp_path / "missing.nii.gz"))
    with pytest.raises(ImageReadError, match="not a file"):
        read_image(str(tmp_path))
    good = str(tmp_path / "good.nii.gz")
    sitk.WriteImage(_image((40, 30, 30)), good)
    cut = truncate(good, tmp_path / "cut.nii.gz", 0.5)
    with pytest.raises(ImageReadError, match="cannot read .*cut.nii.gz: unreadable or truncated"):
        read_image(str(cut))
    (tmp_path / "garbage.mha").write_bytes(b"garbage" * 20)
    with pytest.raises(ImageReadError, match="cannot read .*garbage.mha"):
        read_image(str(tmp_path / "garbage.mha"))
    src = str(tmp_path / "src.nii")
    sitk.WriteImage(_image(), src)
    bad = patch_nifti1_header(src, tmp_path / "zero.nii.gz", pixdim=(1.0, 1.0, 0.0))
    with pytest.raises(ImageReadError, match="pixdim"):
        read_image(str(bad))


def test_header_without_orientation_is_a_warning_naming_the_assumed_one(tmp_path):
    src = str(tmp_path / "src.nii")
    sitk.WriteImage(_image(), src)
    bad = patch_nifti1_header(src, tmp_path / "noorient.nii.gz", codes=(0, 0))
    image, warnings = read_image(str(bad))
    assert len(warnings) == 1 and "qform" in warnings[0] and "assumed LPS" in warnings[0]


def test_scalar_3d_problem():
    assert "2D" in scalar_3d_problem(sitk.Image(4, 5, sitk.sitkInt16))
    assert "3 components" in scalar_3d_problem(sitk.Image([4, 5, 6], sitk.sitkVectorFloat32, 3))
