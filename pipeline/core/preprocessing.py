"""The preprocessing contract shared by training, every exported format and every runner.

Images are decoded to RGB, resized as a whole (no crop) to `image_size` x `image_size` exactly as MediaPipe Tasks
resizes on Android (resize.py), kept as uint8, and normalized inside each runtime as (pixel - mean) / std. All
MobileNet backbones are built without their internal rescaling so that one normalization holds everywhere: the
mean/std in TFLite metadata,
the scale/bias of the Core ML image input and the values in the ONNX metadata are the same numbers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

# What MediaPipe Tasks' ImageClassifier does on CPU (see resize.py): the Android client, reproduced exactly.
RESIZE_METHOD = "mediapipe: whole image to size (no crop, aspect ratio not kept), OpenCV bilinear on 8-bit pixels"
# Larger photos are decoded at a reduced size (JPEG DCT scaling) so one 100-megapixel file cannot take gigabytes;
# phone cameras stay below it, and their pixels are then exactly what the app's client computes.
MAX_DECODED_PIXELS = 24_000_000
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
        """uint8 RGB batch (N, H, W, 3) -> float32 model input. A uint8 batch is looked up in a 256-entry table of
        the same float32 arithmetic (bit for bit the same values): 0.2 ms per 224 px photo instead of 0.6 ms,
        which was a quarter of the feature pass with LiteRT."""
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        if images.dtype != np.uint8:
            return (images.astype(np.float32) - mean) / std
        table = (np.arange(256, dtype=np.float32)[:, None] - mean) / std  # (256, 3)
        if (table == table[:, :1]).all():  # one mean and std for every channel: one lookup
            return np.take(table[:, 0], images)
        return table[images, np.arange(3)]

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
    return resize_to(rgb_from_bytes(data), image_size)


def decode_rgb(path: Path) -> np.ndarray:
    """The whole photo as (H, W, 3) uint8 RGB, before the resize: what an app hands its classifier."""
    return rgb_from_bytes(Path(path).read_bytes())


def resize_to(pixels: np.ndarray, image_size: int) -> np.ndarray:
    from .resize import resize_like_mediapipe

    return pixels if pixels.shape[:2] == (image_size, image_size) else resize_like_mediapipe(pixels, image_size)


def rgb_from_bytes(data: bytes) -> np.ndarray:
    """RGB uint8 pixels of the whole photo.

    Orientation follows the EXIF tag (apps rotate by it too); transparency is composited on black, as the
    premultiplied bitmaps Android and iOS hand their clients have black where a photo is transparent."""
    import io

    from PIL import Image, ImageOps

    with Image.open(io.BytesIO(data)) as img:
        _reduce_huge(img)
        img = ImageOps.exif_transpose(img) if hasattr(img, "getexif") else img
        if img.mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(img, dtype=np.float64)
            if arr.max() > 255:  # genuine 16-bit range: map 0..65535 onto 0..255
                arr = arr / 257.0
            img = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), mode="L")
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            rgba = img.convert("RGBA")
            img = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
        return np.asarray(img.convert("RGB"), dtype=np.uint8)


def _reduce_huge(img) -> None:
    """Ask the JPEG decoder for a 1/2, 1/4 or 1/8 scale image when the full one would be huge (other formats
    decode in full; Pillow's decompression-bomb limit still guards them)."""
    width, height = img.size
    if img.format == "JPEG" and width * height > MAX_DECODED_PIXELS:
        factor = next((f for f in (2, 4, 8) if width * height / f**2 <= MAX_DECODED_PIXELS), 8)
        img.draft("RGB", (width // factor, height // factor))


def unreadable_reason(e: Exception) -> str:
    """Why an image file could not be decoded, in a few words for a one-line warning or error."""
    from PIL import UnidentifiedImageError

    if isinstance(e, UnidentifiedImageError):  # its message names only the in-memory buffer
        return "not an image format Pillow recognises"
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__
