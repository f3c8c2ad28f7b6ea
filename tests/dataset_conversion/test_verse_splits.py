"""splits_final.json: fold 0 official split, folds 1-4 patient-grouped CV, degenerate inputs."""
from nnunet_vertkd.dataset_conversion.splits import make_splits
from nnunet_vertkd.dataset_conversion.verse_discovery import TRAIN, VALIDATION


def _patients(cases):
    return {c: p for c, p, _ in cases}


def _check_grouped(splits, cases):
    pat = _patients(cases)
    everything = sorted(c for c, _, _ in cases)
    for fold in splits:
        assert not {pat[c] for c in fold["train"]} & {pat[c] for c in fold["val"]}
        assert sorted(fold["train"] + fold["val"]) == everything
        assert fold["train"] == sorted(fold["train"]) and fold["val"] == sorted(fold["val"])


def test_official_fold_and_patient_grouped_cv():
    cases = [(f"sub-verse{p:03d}_split-verse{s}", f"verse{p:03d}", TRAIN) for p in range(10) for s in (1, 2)]
    cases += [(f"sub-verse{p:03d}", f"verse{p:03d}", VALIDATION) for p in range(100, 106)]
    splits, notes = make_splits(cases)
    assert len(splits) == 5 and not notes
    assert splits[0]["val"] == sorted(c for c, _, s in cases if s == VALIDATION)
    _check_grouped(splits, cases)
    # the 4 CV validation folds partition all scans, with balanced sizes
    vals = [set(f["val"]) for f in splits[1:]]
    assert set().union(*vals) == {c for c, _, _ in cases} and sum(len(v) for v in vals) == len(cases)
    assert max(len(v) for v in vals) - min(len(v) for v in vals) <= 2
    assert make_splits(list(reversed(cases)))[0] == splits  # deterministic, input order irrelevant


def test_patient_in_both_official_sets_goes_to_training():
    cases = [("sub-verse001_split-verse201", "verse001", TRAIN), ("sub-verse001_split-verse202", "verse001", VALIDATION),
             ("sub-verse002", "verse002", TRAIN), ("sub-verse003", "verse003", VALIDATION),
             ("verse004", "verse004", TRAIN), ("sub-verse005", "verse005", TRAIN)]
    splits, notes = make_splits(cases)
    assert splits[0]["val"] == ["sub-verse003"]
    assert "sub-verse001_split-verse202" in splits[0]["train"]
    assert any("verse001" in n for n in notes)
    _check_grouped(splits, cases)


def test_degenerate_inputs_still_give_five_folds():
    splits, notes = make_splits([("a", "pa", TRAIN), ("b", "pb", TRAIN)])
    assert len(splits) == 5 and splits[0] == splits[1]
    assert {tuple(f["val"]) for f in splits[1:]} == {("a",), ("b",)}
    assert any("no official validation" in n for n in notes) and any("only 2 patients" in n for n in notes)
    splits, notes = make_splits([("a", "p", TRAIN), ("b", "p", VALIDATION)])
    assert all(f == {"train": ["a", "b"], "val": ["a", "b"]} for f in splits[1:])
    assert any("only one patient" in n for n in notes)
    assert make_splits([]) == ([], ["no training or validation scans: no splits written"])
