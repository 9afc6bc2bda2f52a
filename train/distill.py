"""Knowledge distillation: a student trained against a mix of the true labels
and the outputs of one teacher or the mean of several (Hinton, Vinyals and
Dean, "Distilling the Knowledge in a Neural Network", 2015, at temperature 1).

The teachers run on the same augmented image as the student, in inference
mode and without gradient ("consistent" teaching: Beyer et al., "Knowledge
distillation: A good teacher is patient and consistent", CVPR 2022).
"""

from __future__ import annotations

import keras
from keras import layers


def _classes(model) -> int:
    """Classes a model answers for: 2 for one sigmoid unit, else its outputs."""
    units = int(model.output_shape[-1])
    return 2 if units == 1 else units


def teacher_classes(student, teachers: list) -> int:
    """The classes the teachers answer for: the student's first ones.

    A teacher may answer for fewer classes than the student: a two-class
    (happy/sad) teacher can teach a student trained with auxiliary classes,
    whose first two classes are the same; on images of the other classes the
    target stays the true label.

    Returns:
        the teachers' class count (2 or more).

    Raises:
        ValueError: no teacher, the teachers disagree on their classes, or
            they answer for more classes than the student.
    """
    if not teachers:
        raise ValueError("no teacher given")
    counts = {_classes(t) for t in teachers}
    if len(counts) > 1:
        raise ValueError(f"the teachers answer for different numbers of classes ({sorted(counts)})")
    n = counts.pop()
    n_student = _classes(student)
    if n > n_student:
        units = 1 if n == 2 else n
        raise ValueError(f"the teacher has {units} outputs, the student {int(student.output_shape[-1])}")
    return n


def distillation_trainer(
    augment: keras.Model, student: keras.Model, teachers: list, alpha: float = 0.5, flip: bool = False
) -> tuple[keras.Model, object, list]:
    """A model, loss and metric that train ``student`` on a mix of the true
    labels and the teachers' mean output.

    The target of an image of one of the teachers' classes is ``alpha`` x
    its true label (one-hot) + (1 - alpha) x the teachers' mean class
    probabilities (with ``flip``, each teacher's output is the mean over the
    image and its mirror, as ``--tta flip`` runs it); an image of another
    class keeps its true label. The loss is the cross-entropy of the
    student's output against the target.

    Args:
        augment: the training augmentation (:func:`train.models.augmentation`).
        student: the model to train: one sigmoid unit, or a softmax over N classes.
        teachers: trained models answering for the student's classes or for
            its first ones (:func:`teacher_classes`).
        alpha: weight of the true labels, 0..1.
        flip: average each teacher over the image and its horizontal mirror.

    Returns:
        (model to ``fit``, its loss, its metrics); the model outputs the
        student's output and the teachers' target columns side by side
        (one column for a sigmoid student, one per student class otherwise).

    Raises:
        ValueError: as :func:`teacher_classes`.
    """
    import tensorflow as tf

    n_teacher = teacher_classes(student, teachers)
    units = int(student.output_shape[-1])
    for t in teachers:
        t.trainable = False

    def distribution(t, x):
        p = t(x, training=False)
        return tf.concat([1.0 - p, p], axis=-1) if int(t.output_shape[-1]) == 1 else p

    class Teachers(layers.Layer):
        def call(self, x):
            views = [x, tf.reverse(x, axis=[2])] if flip else [x]
            p = tf.add_n([distribution(t, v) for t in teachers for v in views]) / (len(teachers) * len(views))
            if units == 1:
                return tf.stop_gradient(p[:, 1:])
            return tf.stop_gradient(tf.pad(p, [[0, 0], [0, units - n_teacher]]))

    inp = keras.Input(student.input_shape[1:])
    x = augment(inp)
    both = layers.Concatenate()([student(x), Teachers()(x)])
    model = keras.Model(inp, both, name="distillation")
    return model, distillation_loss(units, alpha, n_teacher), [_student_accuracy(units)]


def distillation_loss(units: int, alpha: float, n_teacher: int = 2):
    """The cross-entropy of the student's output (the first ``units``
    columns of ``y_pred``) against alpha x the true label + (1 - alpha) x
    the teachers' output (the last ``units``), for labels below
    ``n_teacher``; the true label alone for the others."""
    import tensorflow as tf

    def loss(y_true, y_pred):
        s, t = y_pred[:, :units], y_pred[:, units:]
        y = tf.reshape(tf.cast(y_true, tf.float32), [-1])
        hard = y[:, None] if units == 1 else tf.one_hot(tf.cast(y, tf.int32), units)
        taught = tf.cast(y < n_teacher, tf.float32)[:, None] * (1.0 - alpha)
        target = (1.0 - taught) * hard + taught * t
        s = tf.clip_by_value(s, 1e-7, 1.0 - 1e-7)
        if units == 1:
            return -tf.reduce_mean(target * tf.math.log(s) + (1 - target) * tf.math.log(1 - s), axis=-1)
        return -tf.reduce_sum(target * tf.math.log(s), axis=-1)

    return loss


def _student_accuracy(units: int):
    """The student's accuracy on the true labels (a Keras metric function)."""
    import tensorflow as tf

    def accuracy(y_true, y_pred):
        s = y_pred[:, :units]
        y = tf.reshape(tf.cast(y_true, tf.float32), [-1])
        pred = tf.cast(s[:, 0] >= 0.5, tf.float32) if units == 1 else tf.cast(tf.argmax(s, axis=-1), tf.float32)
        return tf.cast(tf.equal(pred, y), tf.float32)

    return accuracy
