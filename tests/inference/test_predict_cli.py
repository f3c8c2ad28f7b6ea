"""vertkd_predict: bad inputs, -part_id/-num_parts, no overwrite, atomic outputs, the real VerSe samples, the
option spellings and exit status of the plugin's commands (nnunet_vertkd/command_line.py)."""

import numpy as np
import pytest
import SimpleITK as sitk

from helpers import stand_in_model as h
from nnunet_vertkd.inference import cli
from nnunet_vertkd.inference.outputs import list_input_cases


def run(args):
    return cli.main([*args, "-device", "cpu", "--threads", "1"])


def usage_error(capsys, args, words):
    """``args`` end with exit status 2 and one ``vertkd_predict: error: …`` line naming ``words``."""
    assert run(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("vertkd_predict: error: ") and words in err[-1], err
    return err[-1]


def outputs_of(folder, case):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(case + ".") or p.name.startswith(case + "_"))


def write(img, path):
    sitk.WriteImage(img, str(path))
    return str(path)


def image_from(arr, spacing=(1.0, 1.0, 1.0)):
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing[:img.GetDimension()])
    return img


def bad_inputs(folder):
    """{case: (path, expected words in the message)} for every kind of bad input."""
    folder.mkdir(exist_ok=True)
    ct, _ = h.phantom()
    arr = sitk.GetArrayFromImage(ct)
    cases = {}
    cases["missing"] = (str(folder / "missing.nii.gz"), "file not found")
    (folder / "garbage.nii.gz").write_bytes(b"this is not a nifti file" * 10)
    cases["garbage"] = (str(folder / "garbage.nii.gz"), "cannot read")
    cases["flat2d"] = (write(image_from(arr[10]), folder / "flat2d.nii.gz"), "2D")
    four = sitk.JoinSeries([ct, ct])
    cases["fourd"] = (write(four, folder / "fourd.nii.gz"), "4D")
    cases["oneslice"] = (write(image_from(arr[10:11]), folder / "oneslice.nii.gz"), "single slice")
    cases["constant"] = (write(image_from(np.full((20, 20, 20), -1000, np.int16)), folder / "constant.nii.gz"),
                         "constant")
    nan = arr.astype(np.float32)
    nan[5, 5, 5] = np.nan
    cases["nans"] = (write(image_from(nan), folder / "nans.nii.gz"), "NaN")
    cases["nans_mha"] = (write(image_from(nan), folder / "nans_mha.mha"), "NaN")
    cases["tiny_spacing"] = (write(image_from(arr, (0.01, 1.0, 1.0)), folder / "tiny_spacing.nii.gz"), "spacing")
    cases["huge_spacing"] = (write(image_from(arr, (1.0, 1.0, 50.0)), folder / "huge_spacing.nii.gz"), "spacing")
    unit = ((arr.astype(np.float32) + 1000) / 1700).clip(0, 1)
    cases["unit_range"] = (write(image_from(unit), folder / "unit_range.nii.gz"), "[0, 1]")
    cases["uint8"] = (write(image_from((unit * 255).astype(np.uint8)), folder / "uint8.nii.gz"), "8-bit")
    low = (arr.astype(np.float32) / 100).astype(np.float32)
    cases["low_max"] = (write(image_from(low), folder / "low_max.nii.gz"), "Hounsfield")
    nospine = arr.copy()
    nospine[nospine == 700] = 40
    nospine[20:30, 15:25, 1:4] = 700  # bone far lateral only: the heuristic finds no spine
    cases["nospine"] = (write(image_from(nospine), folder / "nospine.nii.gz"), "no spine")
    return cases


def test_every_bad_input_is_reported_and_the_batch_goes_on(standin_model, tmp_path, capsys):
    cases = bad_inputs(tmp_path / "in")
    ct, _ = h.phantom()
    good = write(ct, tmp_path / "in" / "good_0000.nii.gz")
    out = tmp_path / "out"
    rc = run(["-i", *[p for p, _ in cases.values()], good, "-o", str(out), "-m", standin_model, "-f", "all"])
    assert rc == 1
    printed = capsys.readouterr().out
    assert "1 segmented" in printed and f"{len(cases)} failed" in printed
    for case, (_, words) in cases.items():
        line = [ln for ln in printed.splitlines() if ln.strip().startswith(case + ":")]
        assert line, f"{case} not listed as failed:\n{printed}"
        assert words.lower() in line[0].lower(), line[0]
        assert outputs_of(out, case) == []  # nothing partial
    assert outputs_of(out, "good") == ["good.nii.gz", "good_ctd.json", "good_record.json"]
    assert not [p for p in out.iterdir() if ".tmp" in p.name]


def test_failure_while_writing_leaves_nothing(standin_model, tmp_path, monkeypatch):
    from nnunet_vertkd.inference import outputs
    ct, _ = h.phantom()
    write(ct, tmp_path / "a.nii.gz")
    real = sitk.WriteImage

    def failing(img, path, *a):
        if path.endswith(".nii.gz") and "spine" not in path:
            raise OSError("disk full")
        return real(img, path, *a)

    monkeypatch.setattr(outputs.sitk, "WriteImage", failing)
    rc = run(["-i", str(tmp_path / "a.nii.gz"), "-o", str(tmp_path / "out"), "-m", standin_model, "--save-spine",
              "--save-preview"])
    assert rc == 1
    assert list((tmp_path / "out").iterdir()) == []


def test_part_split_covers_every_case_once(standin_model, tmp_path, capsys):
    ct, _ = h.phantom(n_blocks=2)
    inp = tmp_path / "in"
    inp.mkdir()
    names = [f"case{i}_0000.nii.gz" for i in range(5)] + ["plain.nii.gz"]
    for n in names:
        write(ct, inp / n)
    (inp / "notes.txt").write_text("not an image")
    all_cases = [c for c, _ in list_input_cases(str(inp))[0]]
    assert all_cases == ["case0", "case1", "case2", "case3", "case4", "plain"]
    seen = []
    for part in range(4):
        out = tmp_path / f"out{part}"
        assert run(["-i", str(inp), "-o", str(out), "-m", standin_model, "-part_id", str(part), "-num_parts", "4"]) == 0
        seen += sorted(p.name[:-len(".nii.gz")] for p in out.glob("*.nii.gz"))
    assert sorted(seen) == all_cases  # every case exactly once
    usage_error(capsys, ["-i", str(inp), "-o", str(tmp_path / "x"), "-m", standin_model, "-part_id", "4", "-num_parts", "4"],
                "-part_id")


def test_no_overwrite_without_flag(standin_model, tmp_path, capsys):
    ct, _ = h.phantom(n_blocks=2)
    write(ct, tmp_path / "a_0000.nii.gz")
    out = tmp_path / "out"
    args = ["-i", str(tmp_path / "a_0000.nii.gz"), "-o", str(out), "-d", "990", "-tr", h.STANDIN_TRAINER, "-f", "all"]
    assert run(args) == 0
    target = out / "a.nii.gz"
    target.write_bytes(b"sentinel")
    assert run(args) == 0
    assert target.read_bytes() == b"sentinel" and "skipped" in capsys.readouterr().out
    assert run(args + ["--overwrite"]) == 0
    assert sitk.ReadImage(str(target)).GetSize() == ct.GetSize()


def test_model_folder_errors_are_clear(standin_model, tmp_path, capsys):
    ct, _ = h.phantom(n_blocks=2)
    inp = write(ct, tmp_path / "a.nii.gz")
    usage_error(capsys, ["-i", inp, "-o", str(tmp_path / "o"), "-d", "990", "-tr", "NoSuchTrainer"], "does not exist")
    usage_error(capsys, ["-i", inp, "-o", str(tmp_path / "o"), "-m", str(tmp_path / "nowhere")], "does not exist")
    usage_error(capsys, ["-i", inp, "-o", str(tmp_path / "o"), "-m", standin_model, "-f", "3"], "fold_3")


def test_help():
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0


def test_option_spellings_and_deprecated_aliases(capsys):
    """The plugin's convention (nnU-Net's spellings), the old spellings still accepted, -npp named deprecated."""
    parse = cli.build_parser().parse_args
    base = ["-i", "x", "-o", "y"]
    for threads in (["--threads", "3"], ["--num-threads", "3"], ["-npp", "3"]):
        assert parse(base + threads).threads == 3
    for tta in ("--disable_tta", "--disable-tta"):
        assert parse(base + [tta]).disable_tta
    for device in (["-device", "cpu"], ["--device", "cpu"]):
        assert parse(base + device).device == "cpu"
    args = parse(base + ["--overwrite", "--verbose", "--disable_progress_bar"])
    assert args.overwrite and args.verbose and args.disable_progress_bar
    assert parse(base + ["--no-progress"]).disable_progress_bar and not parse(base).disable_progress_bar
    text = " ".join(cli.build_parser().format_help().split())
    assert "-npp and --num-threads are deprecated aliases" in text
    # argparse's own usage errors stay exit 2
    with pytest.raises(SystemExit) as e:
        cli.main(base + ["--threads", "many"])
    assert e.value.code == 2


def test_bad_thread_count_is_a_usage_error(standin_model, tmp_path, capsys):
    ct, _ = h.phantom(n_blocks=2)
    inp = write(ct, tmp_path / "a.nii.gz")
    assert cli.main(["-i", inp, "-o", str(tmp_path / "o"), "-m", standin_model, "-device", "cpu", "--threads", "0"]) == 2
    assert "--threads must be at least 1" in capsys.readouterr().err


@pytest.mark.slow
def test_real_verse_samples_run_through(standin_model, tmp_path, verse_sample_dir):
    """The real VerSe'19 crops go through the whole pipeline (stand-in vertebra model, untrained spine model
    through nnUNetPredictor, and the heuristic); outputs on the input grid. Accuracy is not the point."""
    cts = sorted(verse_sample_dir.rglob("*_ct.nii.gz"))
    assert cts, "no CT in the sample folder"
    spine = h.make_untrained_spine_model(tmp_path / "spine_results")
    for spine_args, out in ((["--spine-m", spine], tmp_path / "out_model"), ([], tmp_path / "out_heuristic")):
        rc = run(["-i", *map(str, cts), "-o", str(out), "-m", standin_model, "--save-preview", "--save-spine",
                  *spine_args])
        assert rc == 0
        for ct_path in cts:
            case = ct_path.name[:-len(".nii.gz")]
            ref = sitk.ReadImage(str(ct_path))
            inst = sitk.ReadImage(str(out / f"{case}.nii.gz"))
            assert inst.GetSize() == ref.GetSize()
            np.testing.assert_allclose(inst.GetSpacing(), ref.GetSpacing(), atol=1e-5)
            np.testing.assert_allclose(inst.GetOrigin(), ref.GetOrigin(), atol=1e-4)
            np.testing.assert_allclose(inst.GetDirection(), ref.GetDirection(), atol=1e-6)
            import json
            record = json.loads((out / f"{case}_record.json").read_text())
            assert record["spine_source"] == ("model" if spine_args else "heuristic")
            assert set(record["seconds"]) >= {"load", "read", "preprocess", "spine", "iterative", "export"}
            assert (out / f"{case}_snp.png").exists() and (out / f"{case}_spine.nii.gz").exists()


def test_loop_settings_from_the_command_line(standin_model, tmp_path, capsys):
    import json
    ct, _ = h.phantom(n_blocks=4)
    write(ct, tmp_path / "a.nii.gz")
    out = tmp_path / "out"
    assert run(["-i", str(tmp_path / "a.nii.gz"), "-o", str(out), "-m", standin_model, "--setting", "MAX_VERTEBRAE=2",
                "--setting", "accept_unconverged=false"]) == 0
    record = json.loads((out / "a_record.json").read_text())
    assert record["n_vertebrae"] == 2 and record["stop_reason"] == "max_vertebrae"
    assert record["settings"]["MAX_VERTEBRAE"] == 2 and record["settings"]["ACCEPT_UNCONVERGED"] is False
    for bad in ("NO_SUCH=1", "MAX_VERTEBRAE=many", "ACCEPT_UNCONVERGED=maybe", "MAX_VERTEBRAE"):
        usage_error(capsys, ["-i", str(tmp_path / "a.nii.gz"), "-o", str(out), "-m", standin_model, "--setting", bad],
                    "--setting")


def test_output_never_replaces_the_input(standin_model, tmp_path):
    ct, _ = h.phantom(n_blocks=2)
    path = write(ct, tmp_path / "a.nii.gz")
    before = (tmp_path / "a.nii.gz").read_bytes()
    assert run(["-i", path, "-o", str(tmp_path), "-m", standin_model, "--overwrite"]) == 1
    assert (tmp_path / "a.nii.gz").read_bytes() == before


def test_suspicious_but_accepted_intensities_are_recorded(standin_model, tmp_path):
    import json
    ct, _ = h.phantom(n_blocks=2)
    shifted = sitk.Cast(ct, sitk.sitkInt16) + 1024  # stored without the rescale offset: no negative values
    write(shifted, tmp_path / "a.nii.gz")
    assert run(["-i", str(tmp_path / "a.nii.gz"), "-o", str(tmp_path / "out"), "-m", standin_model]) == 0
    record = json.loads((tmp_path / "out" / "a_record.json").read_text())
    assert any("1024" in w for w in record["input_warnings"])
