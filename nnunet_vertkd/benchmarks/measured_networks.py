"""The three networks the efficiency benchmark measures: the teacher, the student and nnU-Net's planned network."""
from __future__ import annotations

from typing import Optional

NETS = ("teacher", "student", "nnunet")
NET_TITLES = {"teacher": "VertKD teacher (16-32-64-128)", "student": "VertKD student (8-16-32-64)",
              "nnunet": "nnU-Net default (planned PlainConvUNet)"}
#: the plugin's networks: CT + memory in, one vertebra out
VERTKD_INPUT_CHANNELS = 2
VERTKD_OUTPUT_CHANNELS = 1
#: nnU-Net's network as a lab would train it on VerSe: CT in, background + 26 vertebra labels out
NNUNET_INPUT_CHANNELS = 1
NNUNET_NUM_CLASSES = 27  # labels.nnunet_dataset_labels()


def build_net(name: str, plans_file: Optional[str] = None):
    """(network, input channels) for 'teacher', 'student' or 'nnunet' (deep supervision off, as at inference);
    'nnunet' needs the plans file."""
    from nnunet_vertkd.trainers.network import STUDENT_FEATURES, TEACHER_FEATURES, VertKDUNet
    if name in ("teacher", "student"):
        features = TEACHER_FEATURES if name == "teacher" else STUDENT_FEATURES
        return (VertKDUNet(VERTKD_INPUT_CHANNELS, VERTKD_OUTPUT_CHANNELS, features, deep_supervision=False),
                VERTKD_INPUT_CHANNELS)
    if name == "nnunet":
        from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
        from nnunet_vertkd.benchmarks.nnunet_planning import load_plans
        _, cm = load_plans(plans_file)
        net = get_network_from_plans(cm.network_arch_class_name, cm.network_arch_init_kwargs,
                                     cm.network_arch_init_kwargs_req_import, NNUNET_INPUT_CHANNELS,
                                     NNUNET_NUM_CLASSES, allow_init=True, deep_supervision=False)
        return net, NNUNET_INPUT_CHANNELS
    raise ValueError(f"unknown network {name!r} (choose from {NETS})")
