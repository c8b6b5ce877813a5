"""The one place TensorFlow is imported, and where training is made repeatable.

tensorflow-model-optimization and coremltools only work with the legacy tf_keras, which TensorFlow only picks
when TF_USE_LEGACY_KERAS is set before its first import; importing TensorFlow lazily also keeps `imgpipe --help`
and the ONNX/TFLite runners fast.
"""

import os


def load_tensorflow():
    """Return (tensorflow, tf_keras) with the legacy-Keras switch set and TensorFlow's C++ chatter lowered."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    import tf_keras

    return tf, tf_keras


def seed_everything(seed: int) -> None:
    """Same seed, same weights, on the same machine: Python, NumPy and TensorFlow are seeded and TensorFlow's ops
    made deterministic (`enable_op_determinism`: ops pick their deterministic kernels, and a tf.data map with random
    ops, the augmentation, runs in order instead of in parallel). Without it, fine-tuning on CPU gave a different
    model each run; measured cost: about 5% of a flowers build's time, within the noise of a loaded machine."""
    tf, keras = load_tensorflow()
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
