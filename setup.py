from setuptools import find_packages, setup

setup(
    name="nnunet-vertkd",
    version="0.1.0",
    description="Iterative vertebra segmentation with teacher-student knowledge distillation, as an nnU-Net v2 plugin",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(exclude=("tests", "tests.*")),
    package_data={"nnunet_vertkd": [
        "ext_trainers/*.py",
        # the shipped reference model (student + spine, network weights only) and the embedded demo scan
        "pretrained/*/*.json", "pretrained/*/fold_all/*.pth",
        # the shipped label model (docs/labelling.md)
        "labelling/pretrained_model/*.json", "labelling/pretrained_model/fold_*/*.pth",
        "demo_data/verse/*.md", "demo_data/verse/*/*/*.nii.gz", "demo_data/verse/*/*/*.json",
    ]},
    # every third-party module the package imports is listed, also those nnU-Net already pulls in
    install_requires=[
        # 2.8.0 is the first release with the nnUNet_extTrainer lookup (nnunetv2/utilities/find_objects.py,
        # recursive_find_trainer_class_by_name, used by nnunetv2/run/run_training.py and the predictor), which is
        # how stock nnUNetv2_train -tr finds this plugin's trainers; 2.7 searches nnU-Net's own folder only.
        # 2.8.1 differs from 2.8.0 only in making the sliding-window producer thread a daemon thread
        # (inference/predict_from_raw_data.py), so an interrupted or failed prediction does not hang on it;
        # the plugin is tested with 2.8.1.
        "nnunetv2>=2.8.1",
        "torch",
        "SimpleITK",
        "batchgenerators",            # the augmenters driving the data loader
        "batchgeneratorsv2",          # spatial and intensity transforms
        "dynamic-network-architectures",  # nnU-Net's PlainConvUNet (planned networks, the benchmarks' stand-in)
        "numpy",
        "acvl-utils",
        "scipy",                      # distance maps, centroids
        "edt",                        # fast Euclidean distance transform (border-weight maps on the training path)
        "connected-components-3d",    # largest fragment / components
        "scikit-image",               # marker watershed of the stacked-vertebra cut (already needed by nnU-Net)
        "nibabel",                    # NIfTI header checks of the inputs (qform / sform)
        "threadpoolctl",              # BLAS threads of the data loader
        "tqdm",                       # progress bars
        "pillow",                     # PNG previews
        "pytest",
    ],
    extras_require={
        "co2": ["codecarbon"],
        # CPU inference backends (vertkd_predict --backend; docs/inference.md): the fastest installed is the default
        "openvino": ["openvino>=2024.0", "onnx"],
        "onnxruntime": ["onnxruntime>=1.16", "onnx"],
        "cpu": ["openvino>=2024.0", "onnxruntime>=1.16", "onnx"],
    },
    entry_points={
        "console_scripts": [
            "vertkd_make_synthetic=nnunet_vertkd.synthetic.cli:main",
            "vertkd_convert_verse=nnunet_vertkd.dataset_conversion.convert_verse:main",
            "vertkd_trainer_dir=nnunet_vertkd.ext_trainers_path:main",
            "vertkd_predict=nnunet_vertkd.inference.cli:main",
            "vertkd_evaluate=nnunet_vertkd.evaluation.cli:main",
            "vertkd_benchmark=nnunet_vertkd.benchmarks.cli:main",
            "vertkd_demo=nnunet_vertkd.demo:main",
        ],
    },
)
