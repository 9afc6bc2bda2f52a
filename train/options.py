"""The settings of one training run (:func:`train.trainer.train`)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(kw_only=True)
class TrainOptions:
    """Settings of one training run (all written to ``config.json``).

    Attributes:
        data_dir: folder with one sub-folder of photos per class, or a list
            of such folders (a class is its sub-folders in all of them).
        out: the run folder to write.
        arch: "compact" (default) or "seed".
        epochs: most epochs; EarlyStopping may end sooner.
        seed: seeds the split, the weights, the shuffling and the augmentation.
        img_size: model input height = width, pixels.
        color: "gray" or "rgb".
        ratios: train, validation, test fractions.
        batch_size: images per step (global, across replicas).
        lr: peak learning rate of the warm-up + cosine schedule.
        patience: epochs without a better validation loss before stopping.
        tune_threshold: choose the decision threshold on the validation split
            (maximum balanced accuracy) instead of 0.5.
        strategy: "default" (one device), "mirrored"
            (``tf.distribute.MirroredStrategy`` over the local GPUs) or
            "multi-worker" (``MultiWorkerMirroredStrategy`` across the
            processes ``TF_CONFIG`` lists: :mod:`train.multiworker`).
        cache: "disk" caches decoded images in the run folder (memory stays
            flat however large the folder), "memory" keeps them in RAM.
        deterministic: make two runs with the same seed on the same machine
            give bit-identical weights (``tf.config.experimental.
            enable_op_determinism``); see :func:`train.pipeline.weights_sha256`.
        augment: ``"basic"`` or ``"camera"`` (:data:`train.models.AUGMENTS`).
        overwrite: replace a run already in ``out`` (else that is a usage error).
        classes: the classes to train on, in output order; None: every
            class folder, sorted.
        aux_dirs: labelled folders of auxiliary classes, trained on beside
            the model's own (one softmax over all) and dropped from the
            shipped model (:func:`train.models.restrict_head`); their images
            only ever join the train part, and any that is a copy or
            near-copy of an image of ``data_dir`` is left out. They are
            split in the same ratios, and only their train part is trained
            on.
        teachers: trained ``.keras`` models to distil from, their outputs
            averaged (:func:`train.distill.distillation_trainer`): each
            answers for this run's classes (with auxiliary classes, a
            ``--aux`` run's ``model_full.keras``) or for its own classes
            only (a two-class ``model.keras`` teaching a ``--aux`` run);
            empty: no distillation.
        distill_alpha: weight of the true labels against the teachers', 0..1.
        teacher_flip: average each teacher over the image and its mirror.
        votes: a crowd-votes table (:func:`edge.votes.read_votes`): train on
            each face's vote shares over ``classes`` (default happy, sad,
            neutral) plus one "other" output that is trained, not shipped
            (:func:`train.split.prepare_vote_data`); None: folder labels.
        votes_root: the folder the table's paths are relative to (default:
            the folder above the table's).
        time_budget: minutes of training (validation included): the run
            plans as many epochs as fit, at most ``epochs``, and anneals its
            learning rate over them (:mod:`train.budget`); None: ``epochs``.
        flip_average: ship the model averaged with its mirror image in one
            graph (:func:`train.models.with_mirror`: twice the MACs).
        precision: "float32", "bfloat16" (Keras' ``mixed_bfloat16``: float32
            variables, bfloat16 arithmetic; saved and exported as float32)
            or "auto" (:func:`train.budget.resolve_precision`).
    """

    data_dir: str | list
    out: str
    arch: str = "compact"
    epochs: int = 30
    seed: int = 0
    img_size: int = 48
    color: str = "gray"
    ratios: tuple = (0.7, 0.2, 0.1)
    batch_size: int = 64
    lr: float = 2e-3
    patience: int = 8
    tune_threshold: bool = False
    strategy: str = "default"
    cache: str = "disk"
    deterministic: bool = False
    augment: str = "camera"
    overwrite: bool = False
    classes: tuple | None = None
    aux_dirs: tuple = ()
    teachers: tuple = ()
    distill_alpha: float = 0.5
    teacher_flip: bool = False
    votes: str | None = None
    votes_root: str | None = None
    time_budget: float | None = None
    flip_average: bool = False
    precision: str = "auto"
    verbose: int = field(default=1, compare=False)
