"""The preprocessing contract shared by training, every exported format and every runner.

Images are decoded to RGB, resized as a whole (no crop) to `image_size` x `image_size` with bilinear filtering,
kept as uint8, and normalized inside each runtime as (pixel - mean) / std. All MobileNet backbones are built
without their internal rescaling so that one normalization holds everywhere: the mean/std in TFLite metadata,
the scale/bias of the Core ML image input and the values in the ONNX metadata are the same numbers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

RESIZE_METHOD = "bilinear, whole image to size (no crop, aspect ratio not kept)"
INPUT_NAME = "image"  # every artifact's input: uint8 pixels in apps, normalized float32 NHWC in the graphs
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"})


@dataclass(frozen=True)
class Preprocessing:
    image_size: int
    mean: tuple[float, float, float] = (127.5, 127.5, 127.5)
    std: tuple[float, float, float] = (127.5, 127.5, 127.5)
    channel_order: str = "RGB"
    layout: str = "NHWC"
    resize: str = RESIZE_METHOD

    def normalize(self, images: np.ndarray) -> np.ndarray:
        """uint8 RGB batch (N, H, W, 3) -> float32 model input."""
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        return (images.astype(np.float32) - mean) / std

    @property
    def coreml_scale(self) -> float:
        """Core ML applies one scale to all channels, so std must be the same for R, G and B."""
        if len(set(self.std)) != 1:
            raise ValueError("Core ML image inputs need one std for all channels")
        return 1.0 / self.std[0]

    @property
    def coreml_bias(self) -> list[float]:
        return [-m / s for m, s in zip(self.mean, self.std)]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        d["coreml_scale"], d["coreml_bias"] = self.coreml_scale, self.coreml_bias
        d["input_range"] = [(0 - self.mean[0]) / self.std[0], (255 - self.mean[0]) / self.std[0]]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessing":
        return cls(
            image_size=int(d["image_size"]),
            mean=tuple(float(v) for v in d["mean"]),
            std=tuple(float(v) for v in d["std"]),
            channel_order=d.get("channel_order", "RGB"),
            layout=d.get("layout", "NHWC"),
            resize=d.get("resize", RESIZE_METHOD),
        )


def load_image(path: Path, image_size: int) -> np.ndarray:
    """Decode any supported file to a (size, size, 3) uint8 RGB array: the raw end of the contract."""
    return decode_image_bytes(Path(path).read_bytes(), image_size)


def decode_image_bytes(data: bytes, image_size: int) -> np.ndarray:
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        return to_rgb_array(img, image_size)


def to_rgb_array(img, image_size: int) -> np.ndarray:
    from PIL import Image, ImageOps

    img = ImageOps.exif_transpose(img) if hasattr(img, "getexif") else img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        if arr.max() > 255:  # genuine 16-bit range: map 0..65535 onto 0..255
            arr = arr / 257.0
        img = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), mode="L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    img = img.convert("RGB")
    if img.size != (image_size, image_size):
        img = img.resize((image_size, image_size), Image.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def unreadable_reason(e: Exception) -> str:
    """Why an image file could not be decoded, in a few words for a one-line warning or error."""
    from PIL import UnidentifiedImageError

    if isinstance(e, UnidentifiedImageError):  # its message names only the in-memory buffer
        return "not an image format Pillow recognises"
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__
