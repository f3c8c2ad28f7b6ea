"""CPU training recipe: the paper's 128 mm field of view at 2 mm (64^3 patches), for 2 CPU cores and ~1-2 h.

The vertebra dataset is converted at 2 mm (``vertkd_convert_verse ... --spacing-mm 2``), so a 64^3 patch covers
the same 128 mm cube as the paper's 128^3 patch at 1 mm. Everything defined in millimetres stays the same
(border-weight sigma 6 mm, translation +-64 mm = half the patch, rotation and zoom ranges); the loop settings of
the final validation and of ``vertkd_predict`` are scaled to the preprocessed spacing
(``IterativeSettings.scaled_to_spacing``), as for every trainer. The schedule is short (see the class
attributes) with nnU-Net's poly learning-rate decay so that the short run ends converged, and the trainers seed
Python, NumPy and torch with 0 (or ``$VERTKD_SEED`` / ``$VERTKD_STUDY_SEED``) before nnU-Net builds anything.
``$VERTKD_NUM_THREADS`` limits torch's threads (nnUNetv2_train -device cpu uses every core), so that two
trainings can share 2 cores without oversubscription (``trainers/seeding.py``).

The shipped reference model (``nnunet_vertkd/pretrained``, docs/pretrained.md) was trained with these classes:

    VertKDTeacherTrainer_cpu2mm   teacher 16-32-64-128
    VertKDStudentTrainer_cpu2mm   student 8-16-32-64 distilled from VertKDTeacherTrainer_cpu2mm (soft outputs, T=4)
    VertKDSpineTrainer_cpu4mm     spine model on the 4 mm spine dataset (plain nnU-Net, 8-16-32-64)

Class attributes only below the mixins (configuration as data, docs/trainers.md).
"""
import os

import torch

from nnunet_vertkd.trainers.common import unwrap_network
from nnunet_vertkd.trainers.data.dataloader import labels_per_case
from nnunet_vertkd.trainers.data.vertebra_sampling import RegionBalancedSampler
from nnunet_vertkd.trainers.seeding import SeededTrainerMixin
from nnunet_vertkd.trainers.spine import VertKDSpineTrainer
from nnunet_vertkd.trainers.student import VertKDStudentTrainer, VertKDStudentTrainer_scratch
from nnunet_vertkd.trainers.teacher import VertKDTeacherTrainer
from nnunet_vertkd.trainers.teacher_discovery import find_teacher_checkpoint


class _SeededCPU(SeededTrainerMixin):
    """Seeded with 0 unless a seed variable is set; ``$VERTKD_NUM_THREADS`` applied (``trainers/seeding.py``)."""
    default_seed = 0


class _CPU2mmSchedule:
    """64^3 patches of the 2 mm dataset; 25 epochs x 25 patches, poly-decayed Adam 1e-3."""
    patch_size_voxels = (64, 64, 64)
    num_epochs = 25
    num_iterations_per_epoch = 25
    num_val_iterations_per_epoch = 3
    save_every = 5
    lr_schedule = "poly"
    initial_lr = 1e-3
    # noise and blur are defined in voxels: halve the blur so that it stays ~1-2 mm at 2 mm spacing
    blur_sigma = (0.25, 0.5)
    # the trainers' own iterative validation on every training case costs more than the training on 2 cores;
    # the recipe's models are evaluated with vertkd_predict + vertkd_evaluate on held-out scans instead
    run_final_validation = False


class VertKDTeacherTrainer_cpu2mm(_SeededCPU, _CPU2mmSchedule, VertKDTeacherTrainer):
    """T_S teacher (16-32-64-128) on the CPU recipe."""


class VertKDStudentTrainer_cpu2mm(_SeededCPU, _CPU2mmSchedule, VertKDStudentTrainer):
    """S_T4 student (8-16-32-64, soft outputs T = 4) distilled from ``VertKDTeacherTrainer_cpu2mm``; 40 epochs
    (a student step costs about as much as a teacher step: student forward/backward + teacher forward)."""
    teacher_trainer_name = "VertKDTeacherTrainer_cpu2mm"
    num_epochs = 40


class VertKDStudentTrainer_scratch_cpu2mm(_SeededCPU, _CPU2mmSchedule, VertKDStudentTrainer_scratch):
    """S_S student without a teacher on the CPU recipe (for comparisons), as long as the distilled student."""
    num_epochs = 40


class VertKDSpineTrainer_cpu4mm(_SeededCPU, VertKDSpineTrainer):
    """Spine model on the 4 mm spine dataset: nnU-Net's planned patch, 25 epochs x 25 iterations."""
    num_epochs = 25
    num_iterations_per_epoch = 25
    num_val_iterations_per_epoch = 3
    save_every = 5


# ------------------------------------------------------------------------------------------------------------------
# Fine-tuning on the real cases. Trained on synthetic scans plus 3 real cases, the recipe's models fit the synthetic
# scans but not real CT, not even their own real training cases (docs/pretrained.md): with region balancing over
# ~290 (case, vertebra) pairs the 12 real pairs are ~4 % of the samples. The fine-tuning variants start from the
# recipe's final weights and draw half of their samples from the real cases.
# ------------------------------------------------------------------------------------------------------------------
class RealCaseMixtureSampler:
    """With probability ``fraction`` a (case, vertebra) pair of the real cases, else one of the base sampler."""

    def __init__(self, base, real, fraction: float):
        self.base, self.real, self.fraction = base, real, float(fraction)

    def __len__(self) -> int:
        return len(self.base)

    def draw(self, rng):
        return (self.real if rng.random() < self.fraction else self.base).draw(rng)

    def region_frequencies(self):
        return self.base.region_frequencies()


class _RealFineTune:
    """Start from the final weights of ``init_from_trainer`` (same dataset, plans, configuration and fold; found
    like a teacher) and draw ``real_case_fraction`` of the training samples from the cases whose identifier starts
    with ``real_case_prefix``. The false-positive weight is 1 from the start (the base model is past the
    schedule's early phase)."""
    init_from_trainer = None
    real_case_prefix = "sub-verse"
    real_case_fraction = 0.5
    num_epochs = 10
    initial_lr = 3e-4
    fp_weight_start = 1.0
    fp_weight_end = 1.0

    def _make_loader(self, dataset, augment: bool):
        loader = super()._make_loader(dataset, augment)
        if augment and self.real_case_fraction > 0:
            real = {c: labels for c, labels in labels_per_case(dataset).items()
                    if c.startswith(self.real_case_prefix)}
            if real:
                loader.sampler = RealCaseMixtureSampler(
                    loader.sampler, RegionBalancedSampler(real, bool(self.region_balancing)), self.real_case_fraction)
                self.print_to_log_file(f"real-case mixture: {self.real_case_fraction:.2f} of the samples from "
                                       f"{sorted(real)}")
            else:
                self.print_to_log_file(f"no case starts with {self.real_case_prefix!r}: plain sampling")
        return loader

    def on_train_start(self):
        super().on_train_start()
        if self.init_from_trainer and self.current_epoch == 0:
            path = find_teacher_checkpoint(os.environ.get("nnUNet_results"), self.plans_manager.dataset_name,
                                           self.plans_manager.plans_name, self.configuration_name, self.fold,
                                           self.init_from_trainer, environ={})
            ckpt = torch.load(path, map_location=self.device, weights_only=False)
            unwrap_network(self).load_state_dict(ckpt["network_weights"])
            self.print_to_log_file(f"fine-tuning from {path} (epoch {ckpt.get('current_epoch')})")


class VertKDTeacherTrainer_cpu2mm_realFT(_RealFineTune, VertKDTeacherTrainer_cpu2mm):
    """``VertKDTeacherTrainer_cpu2mm`` fine-tuned 10 epochs x 25 patches, half of them from the real cases."""
    init_from_trainer = "VertKDTeacherTrainer_cpu2mm"


class VertKDStudentTrainer_cpu2mm_realFT(_RealFineTune, VertKDStudentTrainer_cpu2mm):
    """``VertKDStudentTrainer_cpu2mm`` fine-tuned 10 epochs x 25 patches, half of them from the real cases, distilled
    from the fine-tuned teacher ``VertKDTeacherTrainer_cpu2mm_realFT``."""
    init_from_trainer = "VertKDStudentTrainer_cpu2mm"
    teacher_trainer_name = "VertKDTeacherTrainer_cpu2mm_realFT"


class VertKDTeacherTrainer_cpu2mm_realFT2(_RealFineTune, VertKDTeacherTrainer_cpu2mm):
    """A second fine-tuning round: ``VertKDTeacherTrainer_cpu2mm_realFT`` trained 20 more epochs x 25 patches, half
    of them from the real cases, learning rate 1e-4."""
    init_from_trainer = "VertKDTeacherTrainer_cpu2mm_realFT"
    num_epochs = 20
    initial_lr = 1e-4


class VertKDStudentTrainer_cpu2mm_realFT2(_RealFineTune, VertKDStudentTrainer_cpu2mm):
    """A second fine-tuning round: ``VertKDStudentTrainer_cpu2mm_realFT`` trained 30 more epochs x 25 patches, half of
    them from the real cases, distilled from the fine-tuned teacher ``VertKDTeacherTrainer_cpu2mm_realFT``."""
    init_from_trainer = "VertKDStudentTrainer_cpu2mm_realFT"
    teacher_trainer_name = "VertKDTeacherTrainer_cpu2mm_realFT"
    num_epochs = 30


class VertKDStudentTrainer_cpu2mm_realFT3(_RealFineTune, VertKDStudentTrainer_cpu2mm):
    """A third fine-tuning round: ``VertKDStudentTrainer_cpu2mm_realFT2`` trained 40 more epochs x 25 patches, half of
    them from the real cases, distilled from the fine-tuned teacher ``VertKDTeacherTrainer_cpu2mm_realFT``."""
    init_from_trainer = "VertKDStudentTrainer_cpu2mm_realFT2"
    teacher_trainer_name = "VertKDTeacherTrainer_cpu2mm_realFT"
    num_epochs = 40


class VertKDStudentTrainer_cpu2mm_realFT_long(_RealFineTune, VertKDStudentTrainer_scratch_cpu2mm):
    """The shipped student (``VertKDStudentTrainer_cpu2mm_realFT2``) trained 160 more epochs x 25 patches without a
    teacher (hard labels only: a student step then costs half as much, and the fine-tuned teacher fits the real
    cases little better than the student), half of the samples from the real cases."""
    init_from_trainer = "VertKDStudentTrainer_cpu2mm_realFT2"
    num_epochs = 160


class VertKDStudentTrainer_cpu2mm_realFT_long_lr1e3(VertKDStudentTrainer_cpu2mm_realFT_long):
    """``VertKDStudentTrainer_cpu2mm_realFT_long`` at learning rate 1e-3 (poly-decayed) instead of 3e-4."""
    initial_lr = 1e-3


class VertKDTeacherTrainer_cpu2mm_realFT_long(_RealFineTune, VertKDTeacherTrainer_cpu2mm):
    """The shipped student's long round for the teacher: ``VertKDTeacherTrainer_cpu2mm_realFT`` trained 100 more
    epochs x 25 patches, half of the samples from the real cases, learning rate 1e-3 (poly-decayed)."""
    init_from_trainer = "VertKDTeacherTrainer_cpu2mm_realFT"
    num_epochs = 100
    initial_lr = 1e-3


class VertKDStudentTrainer_cpu2mm_realFT_long_kd(_RealFineTune, VertKDStudentTrainer_cpu2mm):
    """The shipped student (``VertKDStudentTrainer_cpu2mm_realFT_long_lr1e3``) distilled 40 more epochs x 25 patches
    from the teacher after its long round (``VertKDTeacherTrainer_cpu2mm_realFT_long``), half of the samples from
    the real cases, learning rate 3e-4."""
    init_from_trainer = "VertKDStudentTrainer_cpu2mm_realFT_long_lr1e3"
    teacher_trainer_name = "VertKDTeacherTrainer_cpu2mm_realFT_long"
    num_epochs = 40


class VertKDStudentTrainer_cpu2mm_realFT_long2(_RealFineTune, VertKDStudentTrainer_scratch_cpu2mm):
    """``VertKDStudentTrainer_cpu2mm_realFT_long_kd`` without the teacher (the control of that round): the shipped
    student trained 40 more epochs x 25 patches, hard labels only, half of the samples real, learning rate 3e-4."""
    init_from_trainer = "VertKDStudentTrainer_cpu2mm_realFT_long_lr1e3"
    num_epochs = 40
