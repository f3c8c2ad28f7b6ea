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
    install_requires=[
        "nnunetv2>=2.8.1",
        "torch",
        "SimpleITK",
        "batchgeneratorsv2",
        "numpy",
        "acvl-utils",
        "scipy",                      # distance maps, centroids
        "edt",                        # fast Euclidean distance transform (border-weight maps on the training path)
        "connected-components-3d",    # largest fragment / components
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
