"""Trainer classes as configuration: paper settings per class, networks they build, loss wiring (fast, no data)."""
import numpy as np
import pytest
import torch

import nnunet_vertkd.trainers as trainers
from nnunet_vertkd.trainers.common import apply_class_settings
from nnunet_vertkd.trainers.losses.lessmann import lessmann_loss_from_logits
from nnunet_vertkd.trainers.network import (
    SPINE_FEATURES, STUDENT_FEATURES, TEACHER_FEATURES, VertKDUNet, count_parameters)
from nnunet_vertkd.trainers.vertkd_trainer import ConstantLRScheduler, VertKDSegmentationLoss

PAPER = {  # class: (features, distillation, temperature, use_data_processing)
    "VertKDTeacherTrainer": (TEACHER_FEATURES, None, None, True),                   # T_S
    "VertKDTeacherTrainer_noDataProcessing": (TEACHER_FEATURES, None, None, False),  # T_B
    "VertKDStudentTrainer": (STUDENT_FEATURES, "soft_outputs", 4.0, True),           # S_T4
    "VertKDStudentTrainer_T3": (STUDENT_FEATURES, "soft_outputs", 3.0, True),        # S_T3
    "VertKDStudentTrainer_T5": (STUDENT_FEATURES, "soft_outputs", 5.0, True),        # S_T5
    "VertKDStudentTrainer_scratch": (STUDENT_FEATURES, None, None, True),           # S_S
    "VertKDStudentTrainer_logits": (STUDENT_FEATURES, "logits", None, True),         # S_L
    "VertKDStudentTrainer_logitsDistMap": (STUDENT_FEATURES, "logits_distmap", None, True),  # S_LW
}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_settings(name):
    cls = getattr(trainers, name)
    features, distillation, temperature, processing = PAPER[name]
    assert tuple(cls.features) == tuple(features)
    assert cls.distillation == distillation
    if temperature is not None:
        assert cls.kd_temperature == temperature
    assert cls.use_data_processing is processing
    assert cls.kd_weight == 1.0 and cls.initial_lr == 1e-3 and cls.optimizer_name == "adam"
    assert tuple(cls.patch_size_voxels) == (128, 128, 128) and cls.batch_size == 1
    assert cls.memory_cleaning_probability == pytest.approx(1 / 3) and cls.region_balancing
    assert cls.enable_deep_supervision is False
    assert (cls.border_gamma, cls.border_sigma_mm, cls.fp_weight_start, cls.fp_weight_end) == (8.0, 6.0, 0.1, 1.0)
    net = cls.build_network_architecture(None, None, 1, 27, False)
    assert net.in_channels == 2 and net.out_channels == 1
    assert count_parameters(net) == count_parameters(VertKDUNet(2, 1, features))
    with torch.no_grad():
        assert net(torch.zeros(1, 2, 16, 16, 16)).shape == (1, 1, 16, 16, 16)
    # without deep supervision only the full-resolution head trains (DDP needs every trainable param used)
    trainable_heads = [h for h in net.decoder.seg_layers if any(p.requires_grad for p in h.parameters())]
    assert trainable_heads == [net.decoder.seg_layers[-1]]


def test_spine_network():
    cls = trainers.VertKDSpineTrainer
    net = cls.build_network_architecture(None, None, 1, 2, True)
    assert tuple(cls.features) == SPINE_FEATURES and net.in_channels == 1 and net.out_channels == 2
    out = net(torch.zeros(1, 1, 16, 16, 32))
    assert isinstance(out, list) and len(out) == 3 and out[0].shape == (1, 2, 16, 16, 32)


def test_every_trainer_exported_and_variants_are_pure_settings():
    names = [n for n in trainers.__all__]
    for expected in list(PAPER) + ["VertKDTeacherTrainer_nnUNetTopology", "VertKDSpineTrainer",
                                   "VertKDTeacherTrainer_debug",
                                   "VertKDStudentTrainer_debug", "VertKDSpineTrainer_debug"]:
        assert expected in names
    assert trainers.VertKDStudentTrainer_debug.teacher_trainer_name == "VertKDTeacherTrainer_debug"
    assert trainers.VertKDStudentTrainer.teacher_trainer_name == "VertKDTeacherTrainer"
    assert trainers.VertKDTeacherTrainer_nnUNetTopology.network_topology == "nnunet_planned"


def test_class_settings_override_nnunet_instance_values():
    class Base(trainers.VertKDTeacherTrainer_debug):
        pass

    obj = Base.__new__(Base)
    obj.num_epochs, obj.initial_lr, obj.enable_deep_supervision = 1000, 1e-2, True  # what nnU-Net's __init__ sets
    apply_class_settings(obj)
    assert (obj.num_epochs, obj.initial_lr, obj.enable_deep_supervision) == (2, 1e-3, False)
    assert obj.num_iterations_per_epoch == 3 and obj.save_every == 1


def test_segmentation_loss_with_and_without_deep_supervision():
    torch.manual_seed(0)
    logits = [torch.randn(2, 1, 8, 8, 8), torch.randn(2, 1, 4, 4, 4), torch.randn(2, 1, 2, 2, 2)]
    targets = [(torch.rand_like(x) > 0.5).float() for x in logits]
    weights = [torch.rand_like(x) + 1 for x in logits]
    plain = VertKDSegmentationLoss(None)
    assert torch.allclose(plain(logits[0], targets[0], weights[0], 0.3),
                          lessmann_loss_from_logits(logits[0], targets[0], weights[0], 0.3))
    ds = VertKDSegmentationLoss(np.array([4 / 6, 2 / 6, 0.0]))
    expected = (4 / 6) * lessmann_loss_from_logits(logits[0], targets[0], weights[0], 0.3) + \
        (2 / 6) * lessmann_loss_from_logits(logits[1], targets[1], weights[1], 0.3)
    assert torch.allclose(ds(logits, targets, weights, 0.3), expected)


def test_constant_lr():
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    sched = ConstantLRScheduler(opt, 1e-3)
    opt.param_groups[0]["lr"] = 5.0
    sched.step(10)
    assert opt.param_groups[0]["lr"] == 1e-3


@pytest.mark.parametrize("name,uses_gt", [("VertKDStudentTrainer", True), ("VertKDStudentTrainer_logits", False),
                                          ("VertKDStudentTrainer_logitsDistMap", False),
                                          ("VertKDStudentTrainer_scratch", True)])
def test_logit_students_train_without_ground_truth(name, uses_gt):
    """Paper Table 2: S_L and S_LW use no ground truth; the total loss of a step is the KD term alone."""
    cls = getattr(trainers, name)
    obj = cls.__new__(cls)
    torch.manual_seed(0)
    obj.network = torch.nn.Conv3d(2, 1, 1)
    obj.teacher = torch.nn.Conv3d(2, 1, 1)
    obj.device = torch.device("cpu")
    obj.loss = VertKDSegmentationLoss(None)
    obj.current_epoch, obj.num_epochs = 0, 10
    batch = {"data": torch.randn(1, 2, 6, 6, 6), "target": (torch.rand(1, 1, 6, 6, 6) > 0.5).float(),
             "weights": torch.rand(1, 1, 6, 6, 6) + 1}
    _, _, total, seg, kd = obj._losses(batch)
    if kd is None:
        assert torch.allclose(total, seg)
    elif uses_gt:
        assert torch.allclose(total, seg + kd)
    else:
        assert torch.allclose(total, kd) and seg.item() > 0
        total.backward()  # the gradient comes from the teacher match only
        assert obj.network.weight.grad is not None


def test_defaults_are_defined_once():
    """The base trainer's augmentation, loss and sampling defaults are the modules' own (one place each)."""
    from dataclasses import asdict
    from nnunet_vertkd.trainers.data.transforms import AugmentationSettings
    from nnunet_vertkd.trainers.data.vertebra_sampling import MEMORY_CLEANING_PROBABILITY
    from nnunet_vertkd.trainers.losses import lessmann
    base = trainers.VertKDTrainerBase
    assert {n: getattr(base, n) for n in asdict(AugmentationSettings())} == asdict(AugmentationSettings())
    assert (base.border_gamma, base.border_sigma_mm, base.fp_weight_start, base.fp_weight_end) == (
        lessmann.GAMMA, lessmann.SIGMA_MM, lessmann.FP_WEIGHT_START, lessmann.FP_WEIGHT_END)
    assert base.memory_cleaning_probability == MEMORY_CLEANING_PROBABILITY
    # a variant still changes a default with one class attribute
    assert trainers.VertKDTeacherTrainer_cpu2mm.blur_sigma == (0.25, 0.5)
