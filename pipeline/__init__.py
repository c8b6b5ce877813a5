"""imgpipe: a verified MobileNet image classifier for iOS, Android and ONNX from a folder of photos."""

__version__ = "0.1.0"
