"""Augmented views for head training: fixed per photo, computed and cached with the photo's own features, and
handed to the head in the order its repeated labels assume."""

from __future__ import annotations

import numpy as np

from imgpipe.pipeline.core.preprocessing import Preprocessing
from imgpipe.pipeline.data.photos import Photos
from imgpipe.pipeline.training import features as features_module
from imgpipe.pipeline.training.views import augmented_view

SIZE = 32
HASHES = [f"{i:02d}" + "ab" * 31 for i in range(4)]


def _photos() -> Photos:
    images = np.random.default_rng(0).integers(0, 256, (len(HASHES), SIZE, SIZE, 3), dtype=np.uint8)
    return Photos.from_array(images, np.arange(len(HASHES)) % 2, HASHES)


def _first_pixels_as_features(monkeypatch):
    monkeypatch.setattr(features_module, "compiled", lambda extractor: lambda x: x.reshape(len(x), -1)[:, :6])


def test_a_view_is_fixed_by_the_photo_and_its_number():
    pixels = _photos().decode([0])[0]
    view = augmented_view(pixels, HASHES[0], 1)
    assert view.shape == pixels.shape and view.dtype == np.uint8
    assert np.array_equal(view, augmented_view(pixels, HASHES[0], 1)), "the same view in every build"
    assert not np.array_equal(view, augmented_view(pixels, HASHES[0], 2))
    assert not np.array_equal(view, pixels)


def test_views_come_after_the_photos_view_major_and_are_cached_with_them(monkeypatch, tmp_path):
    _first_pixels_as_features(monkeypatch)
    photos, preprocessing = _photos(), Preprocessing(SIZE)
    first = features_module.cached_features(None, photos, tmp_path, preprocessing, views=2)
    assert first.values.shape == (3 * len(HASHES), 6) and first.computed == 3 * len(HASHES)
    pixels = photos.decode(range(len(HASHES)))
    view_1 = np.stack([augmented_view(p, h, 1) for p, h in zip(pixels, HASHES)])
    np.testing.assert_allclose(first.values[4:8], preprocessing.normalize(view_1).reshape(4, -1)[:, :6])
    own = features_module.cached_features(None, photos, tmp_path, preprocessing)
    assert own.computed == 0 and np.array_equal(own.values, first.values[:4])
    again = features_module.cached_features(None, photos, tmp_path, preprocessing, views=2)
    assert again.computed == 0 and np.array_equal(again.values, first.values)


def test_views_only_of_the_photos_asked_for_and_the_rest_later(monkeypatch, tmp_path):
    _first_pixels_as_features(monkeypatch)
    photos, preprocessing = _photos(), Preprocessing(SIZE)
    train = np.array([True, False, True, False])
    some = features_module.cached_features(None, photos, tmp_path, preprocessing, views=1, views_of=train)
    assert some.computed == 4 + 2
    assert not np.isnan(some.values[4:][train]).any() and np.isnan(some.values[4:][~train]).all()
    rest = features_module.cached_features(None, photos, tmp_path, preprocessing, views=1)
    assert rest.computed == 2 and np.array_equal(rest.values[4:][train], some.values[4:][train])
