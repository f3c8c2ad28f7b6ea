"""Pure loss functions of the plugin (no trainer state): Lessmann's segmentation loss, the distillation terms and
the multi-teacher terms (Ben Loussaief et al.)."""
from nnunet_vertkd.trainers.losses.lessmann import (  # noqa: F401
    border_weight_map, border_weight_maps_torch, deep_supervision_loss, downsample_for_deep_supervision, fp_weight_schedule, lessmann_loss,
    lessmann_loss_from_logits, nnunet_deep_supervision_weights, target_surface)
from nnunet_vertkd.trainers.losses.distillation import (  # noqa: F401
    logit_matching_loss, soft_output_kd_loss, total_kd_loss)
from nnunet_vertkd.trainers.losses.multi_teacher import (  # noqa: F401
    adaptive_teacher_weights, attention_transfer_loss, feature_adapter, mid_loss_per_sample, multi_teacher_kl_loss,
    multi_teacher_total_loss, region_contrast, region_contrast_loss, soft_dice_loss_per_sample,
    teacher_weights_from_dice_losses, weighted_teacher_mean)
