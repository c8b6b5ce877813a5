"""The bottom layer: errors, files, the preprocessing contract, console output, TensorFlow's import."""
