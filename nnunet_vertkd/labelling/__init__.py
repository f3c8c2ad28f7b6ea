"""Anatomical labels (VerSe numbering) for the vertebrae the iterative loop accepts: the whole-scan decoder
(``decoder``), vertebral-body centroids (``body_centre``), the per-vertebra evidence model and its use at
inference (``evidence``, ``labeller``). See docs/labelling.md."""
