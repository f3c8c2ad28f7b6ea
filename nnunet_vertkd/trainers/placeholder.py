from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class VertKDPlaceholderTrainer(nnUNetTrainer):
    """Stock nnU-Net training for one epoch of two iterations; only proves that the trainer lookup works."""

    def __init__(self, plans, configuration, fold, dataset_json, device=None):
        import torch
        super().__init__(plans, configuration, fold, dataset_json, device if device is not None else torch.device("cuda"))
        self.num_epochs = 1
        self.num_iterations_per_epoch = 2
        self.num_val_iterations_per_epoch = 1
