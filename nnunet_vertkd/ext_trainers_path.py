"""Where nnU-Net must look for this plugin's trainers (``nnUNet_extTrainer``).

    export nnUNet_extTrainer="$(vertkd_trainer_dir)"

makes the stock ``nnUNetv2_train ... -tr VertKDStudentTrainer`` and nnU-Net's predictor find our classes.
``find_trainer_class`` is the one lookup of a trainer class by name used by the plugin itself (teachers of a
distillation run, models loaded by ``vertkd_predict``).
"""
import argparse
import os

EXT_TRAINER_ENV = "nnUNet_extTrainer"
EXT_TRAINER_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ext_trainers")


def ensure_ext_trainer_env(environ=None) -> dict:
    """Add our folder to ``nnUNet_extTrainer`` in ``environ`` (default ``os.environ``) if it is missing.

    Used by the plugin's own commands and by subprocesses they start; keeps paths the user already set.
    """
    environ = os.environ if environ is None else environ
    current = [p for p in environ.get(EXT_TRAINER_ENV, "").split(os.pathsep) if p]
    if os.path.abspath(EXT_TRAINER_DIR) not in [os.path.abspath(p) for p in current]:
        environ[EXT_TRAINER_ENV] = os.pathsep.join(current + [EXT_TRAINER_DIR])
    return environ


def find_trainer_class(trainer_name: str):
    """The trainer class called ``trainer_name``: this plugin's classes first (``nnunet_vertkd.trainers``), then
    nnU-Net's own lookup (``recursive_find_trainer_class_by_name``: nnU-Net's trainers, then every folder of
    ``nnUNet_extTrainer``, to which this plugin's folder is added). Raises nnU-Net's RuntimeError when no class
    has that name."""
    import nnunet_vertkd.trainers as plugin_trainers
    cls = getattr(plugin_trainers, trainer_name, None)
    if isinstance(cls, type):
        return cls
    ensure_ext_trainer_env()
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name
    return recursive_find_trainer_class_by_name(trainer_name)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Print the folder to put in nnUNet_extTrainer so that stock nnU-Net commands find the "
                    "nnunet_vertkd trainers. Typical use (e.g. in ~/.bashrc, next to nnUNet_raw):\n"
                    '    export nnUNet_extTrainer="$(vertkd_trainer_dir)"',
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args(argv)
    print(EXT_TRAINER_DIR)


if __name__ == "__main__":
    main()
