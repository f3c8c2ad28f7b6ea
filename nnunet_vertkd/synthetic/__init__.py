"""Synthetic CT spines in VerSe format: a stand-in for VerSe in tests and demos.

Modules: ``anatomy`` (levels, sizes, spine curve, fields of view), ``shapes`` (signed-distance primitives),
``bones`` (vertebrae, discs, ribs, sacrum, skull base), ``render`` (HU volume), ``case`` (one scan),
``verse_tree`` (the release tree), ``cli`` (``vertkd_make_synthetic``). See docs/synthetic_data.md.
"""
from .case import make_case, make_case_with_info
from .verse_tree import plan_scans, write_synthetic_verse

__all__ = ["make_case", "make_case_with_info", "plan_scans", "write_synthetic_verse"]
