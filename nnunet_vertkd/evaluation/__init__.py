"""VerSe metrics: per-vertebra Dice, HD, ASSD, identification rate and centroid distance.

``metrics`` holds the pure functions (see docs/evaluation.md), ``label_shifts`` the label shifts of labelled
predictions, ``case_discovery`` finds and pairs the files, ``case_evaluation`` scores one case, ``aggregate``
pools the results (the one place for mean ± std over vertebrae and scans), ``report`` writes and prints them and
``cli`` is the ``vertkd_evaluate`` command.
"""
from nnunet_vertkd.evaluation.metrics import (FAILURE_DICE, ID_RADIUS_MM, assd_mm, dice,  # noqa: F401
                                              evaluate_case, hausdorff_distance_mm, match_instances)
