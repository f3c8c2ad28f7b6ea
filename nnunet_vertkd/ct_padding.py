"""The CT value used outside the volume, the same in training, validation and inference: normalised air.

nnU-Net's ``CTNormalization`` clips HU to the foreground's [0.5, 99.5] percentiles and z-scores with the
foreground mean and standard deviation (``plans["foreground_intensity_properties_per_channel"]``). Air (and
everything below the lower percentile) therefore becomes ``(percentile_00_5 - mean) / std``: the lowest value a
normalised CT can take. Padding with it makes the outside of a scan look like air, as it does in the scanner.
(Padding with 0 would be the foreground *mean*, i.e. bone-like, which a network sees at the first and last
vertebra of every scan.)

For other normalisation schemes there is no dataset-wide constant: ``None`` is returned and the callers pad
with the minimum of the data they crop from.
"""
from __future__ import annotations

from typing import Optional

CT_NORMALIZATION_NAME = "CTNormalization"


def normalised_air_value(plans_manager, configuration_manager, channel: int = 0) -> Optional[float]:
    """Normalised value of air for input ``channel``, from nnU-Net's PlansManager and ConfigurationManager, or
    None when that channel is not normalised with CTNormalization (callers then use the data minimum)."""
    schemes = list(configuration_manager.normalization_schemes or [])
    if channel >= len(schemes) or schemes[channel] != CT_NORMALIZATION_NAME:
        return None
    props = (plans_manager.foreground_intensity_properties_per_channel or {}).get(str(channel))
    if not props:
        return None
    std = max(float(props["std"]), 1e-8)  # CTNormalization's own guard
    return (float(props["percentile_00_5"]) - float(props["mean"])) / std
