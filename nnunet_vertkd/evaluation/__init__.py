"""VerSe metrics: per-vertebra Dice, HD, ASSD, identification rate and centroid distance."""
