"""Efficiency benchmark and distillation study."""
