"""The one place TensorFlow is imported.

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
