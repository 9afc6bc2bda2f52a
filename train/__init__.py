"""happysad on the workstation: train the classifier (TensorFlow, Keras 3).

TensorFlow is imported only once a run has passed its cheap checks, so
``--help`` and bad-input errors answer at once.
"""

#: Architecture names accepted by ``happysad-train --arch``.
ARCHS = ("compact", "wide", "seed")
DEFAULT_ARCH = "compact"
#: ``--strategy`` choices: one device, ``tf.distribute.MirroredStrategy``, or
#: ``MultiWorkerMirroredStrategy`` across the processes of ``TF_CONFIG``.
STRATEGIES = ("default", "mirrored", "multi-worker")
