"""VerSe folders (real or synthetic) -> nnU-Net raw datasets."""
