"""Image features: classifier labels (scikit-learn and torch, saved and reloaded), the confidence threshold
that makes an image unreadable, brightness and colour, and their one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from critwin.errors import CritwinError
from critwin.features.images import Brightness, DominantColour, ImageClassifier, load_classifier


def _images(rng, n):
    """n 4×4 grey images: half dark (class 'dark'), half bright, far apart."""
    y = np.arange(n) % 2
    x = np.clip(0.15 + 0.7 * y[:, None, None, None] + 0.05 * rng.standard_normal((n, 4, 4, 1)), 0, 1)
    return x.astype(np.float32), np.where(y == 1, "bright", "dark")


def test_a_saved_sklearn_classifier_labels_images_and_refuses_unsure_ones(tmp_path):
    import joblib
    import skops.io as sio

    rng = np.random.default_rng(0)
    x, y = _images(rng, 200)
    clf = LogisticRegression().fit(x.reshape(200, -1), y)
    sio.dump(clf, tmp_path / "c.skops")
    joblib.dump(clf, tmp_path / "c.joblib")
    xt, yt = _images(rng, 50)
    for path in ("c.skops", "c.joblib"):
        f = ImageClassifier(load_classifier(tmp_path / path))
        assert f.batch(list(xt)) == list(yt) and f(xt[0]) == yt[0]
    grey = np.full((4, 4, 1), 0.5, np.float32)  # half-way: the classifier's top probability is near ½
    top = ImageClassifier(clf).probabilities([grey]).max()
    assert 0.5 <= top < 0.9
    assert ImageClassifier(clf, threshold=0.9)(grey) is None and ImageClassifier(clf)(grey) is not None
    assert ImageClassifier(clf)(np.full((4, 4, 1), np.nan, np.float32)) is None
    # A decoder maps model-space samples ([−1, 1]) to images first.
    f = ImageClassifier(clf, decode=lambda s: (np.stack(s) + 1) / 2)
    assert f.batch([2 * im - 1 for im in xt]) == list(yt)


def test_a_torch_classifier_takes_nhwc_images_and_names_its_classes(tmp_path):
    class MeanIsBright(torch.nn.Module):
        def forward(self, x):  # (N, C, H, W) -> logits of (dark, bright)
            m = x.mean(dim=(1, 2, 3))
            return torch.stack([20 * (0.5 - m), 20 * (m - 0.5)], dim=1)

    scripted = torch.jit.script(MeanIsBright())
    scripted.save(str(tmp_path / "m.pt"))
    x, y = _images(np.random.default_rng(1), 20)
    f = ImageClassifier(load_classifier(tmp_path / "m.pt"), labels=["dark", "bright"])
    assert f.batch(list(x)) == list(y)
    assert ImageClassifier(MeanIsBright())(x[1]) == 1  # no labels: the class index


def test_brightness_and_dominant_colour():
    dark, bright = np.full((3, 3, 3), 0.2), np.full((3, 3, 3), 0.8)
    assert Brightness().batch([dark, bright]) == ["dark", "bright"]
    green = np.zeros((3, 3, 3))
    green[..., 1] = 1
    assert DominantColour()(green) == "green"
    with pytest.raises(CritwinError, match="needs RGB images"):
        DominantColour()(np.zeros((3, 3, 1)))


def test_bad_classifiers_and_images_are_one_line_errors(tmp_path):
    rng = np.random.default_rng(0)
    x, y = _images(rng, 40)
    clf = LogisticRegression().fit(x.reshape(40, -1), y)
    with pytest.raises(CritwinError, match=r"give 64 features; the classifier expects 16"):
        ImageClassifier(clf)(np.zeros((8, 8, 1), np.float32))

    class NotALabel(torch.nn.Module):
        def forward(self, x):
            return x  # an image, not logits

    with pytest.raises(CritwinError, match=r"output \(1, 1, 4, 4\) is not a label"):
        ImageClassifier(NotALabel())(x[0])
    with pytest.raises(CritwinError, match="neither a scikit-learn estimator"):
        ImageClassifier(42)
    with pytest.raises(CritwinError, match="no such file"):
        load_classifier(tmp_path / "absent.skops")
    (tmp_path / "c.txt").write_text("x")
    with pytest.raises(CritwinError, match="unknown file type '.txt'"):
        load_classifier(tmp_path / "c.txt")
    with pytest.raises(CritwinError, match=r"threshold=1\.5"):
        ImageClassifier(clf, threshold=1.5)
