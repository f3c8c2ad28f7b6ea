"""Pure loss functions of the plugin (no trainer state): Lessmann's segmentation loss and the distillation terms."""
from nnunet_vertkd.trainers.losses.lessmann import (  # noqa: F401
    border_weight_map, border_weight_maps_torch, deep_supervision_loss, downsample_for_deep_supervision, fp_weight_schedule, lessmann_loss,
    lessmann_loss_from_logits, nnunet_deep_supervision_weights, target_surface)
from nnunet_vertkd.trainers.losses.distillation import (  # noqa: F401
    logit_matching_loss, soft_output_kd_loss, total_kd_loss)
