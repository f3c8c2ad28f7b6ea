"""VerSe metrics: per-vertebra Dice, HD, ASSD, identification rate and centroid distance.

``metrics`` holds the pure functions (see docs/evaluation.md), ``aggregate`` the summaries and ``cli`` the
``vertkd_evaluate`` command.
"""
from nnunet_vertkd.evaluation.metrics import (FAILURE_DICE, ID_RADIUS_MM, assd_mm, dice,  # noqa: F401
                                              evaluate_case, hausdorff_distance_mm, match_instances)
