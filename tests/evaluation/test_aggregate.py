"""evaluation.aggregate: the one place where metrics are pooled (vertkd_evaluate, the distillation study)."""
import csv
import io

import pytest

from nnunet_vertkd.evaluation.aggregate import (PER_VERTEBRA_COLUMNS, mean_std, per_vertebra_rows, pool_vertebrae,
                                                rows_from_csv)

# three reference vertebrae: one matched well, one missing, one matched badly (a failure)
ROWS = [
    {"case": "a", "label": 20, "matched_pred_label": 1, "dice": 0.9, "hd_mm": 3.0, "assd_ref_to_pred_mm": 1.0,
     "assd_pred_to_ref_mm": 2.0, "failed": False},
    {"case": "a", "label": 21, "matched_pred_label": None, "dice": 0.0, "hd_mm": None, "assd_ref_to_pred_mm": None,
     "assd_pred_to_ref_mm": None, "failed": True},
    {"case": "b", "label": 22, "matched_pred_label": 2, "dice": 0.3, "hd_mm": 9.0, "assd_ref_to_pred_mm": 3.0,
     "assd_pred_to_ref_mm": 4.0, "failed": True},
]


def test_mean_std_is_the_population_std_of_the_finite_values():
    assert mean_std([1.0, 3.0, None, float("nan"), float("inf")]) == {"mean": 2.0, "std": 1.0, "n": 2}
    assert mean_std([0.5, 1.0], 100.0) == {"mean": 75.0, "std": 25.0, "n": 2}
    assert mean_std([]) == {"mean": None, "std": None, "n": 0}


def test_pool_vertebrae_by_hand():
    p = pool_vertebrae(ROWS)
    assert p["n_vertebrae"] == 3 and p["n_missing"] == 1
    # Dice over all three (missing = 0): (90 + 0 + 30) / 3 = 40; deviations 50, -40, -10 -> var 4200 / 3 = 1400
    assert p["dice_pct"]["mean"] == pytest.approx(40.0) and p["dice_pct"]["std"] == pytest.approx(1400 ** 0.5)
    assert p["dice_pct"]["n"] == 3
    # HD and ASSD over the two matched ones
    assert p["hd_mm"] == {"mean": 6.0, "std": 3.0, "n": 2}
    assert p["assd_ref_to_pred_mm"] == {"mean": 2.0, "std": 1.0, "n": 2}
    assert p["assd_pred_to_ref_mm"] == {"mean": 3.0, "std": 1.0, "n": 2}
    assert p["failure_rate_pct"] == pytest.approx(200.0 / 3)
    assert pool_vertebrae([])["failure_rate_pct"] is None


def test_missing_dice_counts_as_zero():
    rows = [dict(ROWS[0]), dict(ROWS[1], dice=None)]
    assert pool_vertebrae(rows)["dice_pct"]["mean"] == pytest.approx(45.0)


def test_rows_read_back_from_the_csv_pool_the_same():
    written = per_vertebra_rows({"a": {"per_vertebra": [{k: v for k, v in r.items() if k != "case"}
                                                        for r in ROWS[:2]]},
                                 "b": {"per_vertebra": [{k: v for k, v in ROWS[2].items() if k != "case"}]}})
    f = io.StringIO()
    w = csv.DictWriter(f, fieldnames=PER_VERTEBRA_COLUMNS)
    w.writeheader()
    for row in written:
        w.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in PER_VERTEBRA_COLUMNS})
    back = rows_from_csv(csv.DictReader(io.StringIO(f.getvalue())))
    assert back[1]["matched_pred_label"] is None and back[1]["hd_mm"] is None and back[1]["failed"] is True
    assert back[0]["label"] == 20 and back[0]["dice"] == 0.9 and back[0]["identified"] is None
    assert pool_vertebrae(back) == pool_vertebrae(ROWS)


def test_rows_from_csv_drops_non_finite_values():
    (row,) = rows_from_csv([{"dice": "nan", "hd_mm": "inf", "failed": "1", "matched_pred_label": "3"}])
    assert row["dice"] is None and row["hd_mm"] is None and row["failed"] is True and row["matched_pred_label"] == 3
