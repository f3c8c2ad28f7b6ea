"""``vertkd_demo`` end to end on a miniature (3 tiny synthetic scans, the 'studyMini' schedule of a few
iterations) -- the embedded default itself (about 15 minutes) is run by hand."""
import pytest

from nnunet_vertkd.demo import main


@pytest.mark.slow
def test_demo_miniature(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "demo"
    rc = main(["--train", "--out", str(out), "--cases", "3", "--schedule", "studyMini", "--synthetic-scale", "0.4",
               "--spacing-mm", "2"])
    text = capsys.readouterr().out
    assert rc == 0, text[-3000:]
    assert "vertkd_demo results" in text and "What this short CPU run shows" in text
    for name in ("student", "teacher"):
        pred = out / "predictions" / name
        masks = [p for p in pred.glob("*.nii.gz")]
        assert masks, f"no {name} predictions"
        for m in masks:
            case = m.name[: -len(".nii.gz")]
            assert (pred / f"{case}_ctd.json").is_file() and (pred / f"{case}_record.json").is_file()
            assert (pred / f"{case}_snp.png").is_file()
        assert list((out / "evaluation" / name).glob("*/summary.json"))
    assert not (out / "nnUNet_preprocessed").exists()  # intermediates removed without --keep

    # nothing overwritten without asking
    assert main(["--out", str(out)]) == 2


@pytest.mark.slow
def test_demo_segments_the_embedded_scan_with_the_shipped_model(tmp_path, capsys):
    """The README's first command (default mode): the embedded real scan + 1 synthetic scan, shipped model."""
    from nnunet_vertkd import pretrained
    if not pretrained.available():
        pytest.skip("shipped model files not present")
    out = tmp_path / "seg_demo"
    rc = main(["--out", str(out), "--synthetic-cases", "1", "--disable-tta", "--threads", "2"])
    text = capsys.readouterr().out
    assert rc == 0, text[-3000:]
    assert "vertkd_demo results" in text and "the shipped reference model" in text
    for name, case in (("real", "sub-verse012"), ("synthetic", None)):
        pred = out / "predictions" / name
        masks = sorted(pred.glob("*.nii.gz")) if case is None else [pred / f"{case}.nii.gz"]
        assert masks and all(m.is_file() for m in masks)
        for m in masks:
            stem = m.name[: -len(".nii.gz")]
            assert (pred / f"{stem}_ctd.json").is_file() and (pred / f"{stem}_snp.png").is_file()
        assert (out / "evaluation" / name / "summary.json").is_file()
    # sub-verse012 is found: at least one vertebra predicted
    assert "sub-verse012: 0 vertebrae" not in text
