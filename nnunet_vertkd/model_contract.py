"""The model contract: the names under which the plugin stores its own metadata in nnU-Net's files.

nnU-Net's files keep their standard layout; the plugin adds one entry to each of three of them, so a model
trained by the plugin is an ordinary nnU-Net model folder that ``vertkd_predict`` can also use correctly.

``CHECKPOINT_KEY`` (``"vertkd"``) in a checkpoint (``fold_F/checkpoint_final.pth``, ``checkpoint_best.pth``)
    A dict beside nnU-Net's keys (``network_weights``, ``init_args``, ``trainer_name`` ...).
    Written by the trainers (``trainers.common.save_checkpoint_with_vertkd``; the entry is built by the trainer's
    ``vertkd_checkpoint_entry`` / ``save_checkpoint``): ``role`` (``"vertebra"`` for teacher and student,
    ``"spine"``, ``"label"``), ``patch_size`` (voxels), ``features``, ``network_topology``, ``spacing_mm``,
    ``superior_axis``, ``superior_at_low_index`` and ``left_right_axis`` (axes of the preprocessed arrays),
    ``num_input_channels`` / ``num_output_channels``, ``distillation`` (loss settings), ``teacher`` (the
    teacher's checkpoint, epoch ...), for label models ``dropout``, ``field_of_view_mm``, ``classes_verse``,
    ``label_prior``.
    Read by ``inference.model_loading`` (patch size and axes; without them they are derived from the dataset's
    orientation), ``labelling.labeller`` (role ``"label"``, network settings), ``trainers.teacher_discovery`` and
    the student trainer (the teacher's patch size), ``pretrained`` (kept in the slimmed shipped checkpoints and
    copied into ``model_card.json``).

``DATASET_JSON_KEY`` (``"vertkd"``) in ``dataset.json``
    Written by ``vertkd_convert_verse``: ``kind`` (``"vertebrae"`` or ``"spine"``), ``orientation`` (letters of
    the stored images, ``orientation.CANONICAL_ORIENTATION``), ``spacing_mm``, for the vertebra dataset
    ``nnunet_to_verse`` (nnU-Net label -> VerSe label, keys as strings) and ``spine_dataset_id``, for the spine
    dataset ``vertebra_dataset_id``.
    Read by the trainers (``orientation.orientation_from_dataset_json``: where superior and left-right lie in the
    preprocessed arrays), ``inference.model_loading`` (the orientation, ``dataset.json`` copied into the model
    folder by nnU-Net) and ``vertkd_evaluate`` (``nnunet_to_verse`` for nnU-Net label folders).

``PLANS_KEY`` (``"vertkd_teacher"``) at the top level of a plans file (``-p`` of ``nnUNetv2_train``)
    The teacher of a distillation run: a checkpoint file, a fold folder or a model folder. Written by the user
    (an edited copy of the plans), read by ``trainers.teacher_discovery`` when ``$VERTKD_TEACHER`` is not set
    (docs/trainers.md).
"""

#: entry of a checkpoint holding the plugin's metadata of the model
CHECKPOINT_KEY = "vertkd"
#: entry of dataset.json holding the plugin's metadata of the dataset
DATASET_JSON_KEY = "vertkd"
#: top-level key of a plans file naming the teacher of a distillation run
PLANS_KEY = "vertkd_teacher"
