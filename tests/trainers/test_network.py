"""VertKDUNet shapes, deep supervision, parameter counts, and the planned-topology builder."""
import pytest
import torch

from nnunet_vertkd.trainers.network import (
    SPINE_FEATURES, STUDENT_FEATURES, TEACHER_FEATURES, VertKDUNet, build_planned_network_with_memory,
    count_parameters, deep_supervision_scales)

torch.set_num_threads(1)


@pytest.mark.parametrize("features", [TEACHER_FEATURES, STUDENT_FEATURES])
def test_output_shape_two_channels(features):
    net = VertKDUNet(2, 1, features).eval()
    with torch.no_grad():
        out = net(torch.randn(2, 2, 32, 32, 32))
    assert isinstance(out, torch.Tensor)
    assert out.shape == (2, 1, 32, 32, 32)
    assert out.dtype == torch.float32


def test_odd_patch_size_keeps_shape():
    net = VertKDUNet(2, 1, STUDENT_FEATURES).eval()
    with torch.no_grad():
        assert net(torch.randn(1, 2, 20, 28, 36)).shape == (1, 1, 20, 28, 36)
        assert net(torch.randn(1, 2, 19, 21, 33)).shape == (1, 1, 19, 21, 33)


def test_deep_supervision_list_highest_resolution_first():
    net = VertKDUNet(2, 1, STUDENT_FEATURES, deep_supervision=True).eval()
    with torch.no_grad():
        outs = net(torch.randn(1, 2, 32, 32, 32))
    assert isinstance(outs, list)
    assert [tuple(o.shape) for o in outs] == [(1, 1, 32, 32, 32), (1, 1, 16, 16, 16), (1, 1, 8, 8, 8)]
    assert deep_supervision_scales(4) == [[1.0] * 3, [0.5] * 3, [0.25] * 3]


def test_nnunet_style_toggle_and_same_full_resolution_output():
    torch.manual_seed(0)
    net = VertKDUNet(2, 1, STUDENT_FEATURES, deep_supervision=True).eval()
    x = torch.randn(1, 2, 16, 16, 16)
    with torch.no_grad():
        ds = net(x)
        net.decoder.deep_supervision = False  # exactly what nnUNetTrainer.set_deep_supervision_enabled does
        single = net(x)
        net.set_deep_supervision_enabled(True)
        assert isinstance(net(x), list)
    assert torch.equal(ds[0], single)
    # checkpoints are interchangeable between the two modes
    other = VertKDUNet(2, 1, STUDENT_FEATURES, deep_supervision=False)
    other.load_state_dict(net.state_dict())


def test_parameter_counts_match_paper():
    # Paper (Serrador et al. 2024): teacher 1.48 M, student 0.37 M, spine net 0.35 M.
    # Implementation (nearest-neighbour upsampling): 1,461,523 / 366,155 / 365,939.
    teacher = count_parameters(VertKDUNet(2, 1, TEACHER_FEATURES))
    student = count_parameters(VertKDUNet(2, 1, STUDENT_FEATURES))
    spine = count_parameters(VertKDUNet(1, 1, SPINE_FEATURES))
    assert teacher == 1_461_523
    assert student == 366_155
    assert spine == 365_939
    assert abs(teacher - 1.48e6) / 1.48e6 < 0.02
    assert abs(student - 0.37e6) / 0.37e6 < 0.02
    assert abs(spine - 0.35e6) / 0.35e6 < 0.05
    assert 3.9 < teacher / student < 4.1  # "75 % fewer parameters"


def _tiny_plans():
    arch = {
        "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": {
            "n_stages": 3,
            "features_per_stage": [4, 8, 16],
            "conv_op": "torch.nn.modules.conv.Conv3d",
            "kernel_sizes": [[3, 3, 3]] * 3,
            "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
            "n_conv_per_stage": [2, 2, 2],
            "n_conv_per_stage_decoder": [2, 2],
            "conv_bias": True,
            "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
            "norm_op_kwargs": {"eps": 1e-05, "affine": True},
            "dropout_op": None,
            "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU",
            "nonlin_kwargs": {"inplace": True},
        },
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }
    return {
        "dataset_name": "Dataset999_Tiny",
        "plans_name": "nnUNetPlans",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": {
            "3d_fullres": {
                "data_identifier": "nnUNetPlans_3d_fullres",
                "preprocessor_name": "DefaultPreprocessor",
                "batch_size": 2,
                "patch_size": [16, 16, 16],
                "median_image_size_in_voxels": [32, 32, 32],
                "spacing": [1.0, 1.0, 1.0],
                "normalization_schemes": ["CTNormalization"],
                "use_mask_for_norm": [False],
                "batch_dice": False,
                "architecture": arch,
            }
        },
    }


@pytest.mark.parametrize("ds", [False, True])
def test_planned_topology_builder(ds):
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    pm = PlansManager(_tiny_plans())
    cm = pm.get_configuration("3d_fullres")
    net = build_planned_network_with_memory(pm, cm, num_input_channels=2, num_output_channels=1,
                                            enable_deep_supervision=ds).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 2, 16, 16, 16))
    if ds:
        assert [tuple(o.shape) for o in out] == [(1, 1, 16, 16, 16), (1, 1, 8, 8, 8)]
        # same attribute nnU-Net toggles
        net.decoder.deep_supervision = False
        with torch.no_grad():
            assert net(torch.randn(1, 2, 16, 16, 16)).shape == (1, 1, 16, 16, 16)
    else:
        assert out.shape == (1, 1, 16, 16, 16)
    assert net.encoder.stages[0][0].convs[0].conv.in_channels == 2
