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
