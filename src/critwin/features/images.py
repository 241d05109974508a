"""Image features for diffusion samples: a classifier's label (with a confidence threshold below which the
image counts as unreadable), and brightness / dominant-colour labels for quick checks.

Every feature here reads images, not model-space samples: give it the sampler's `decode` (e.g.
`DiffusersSampler.decode`, samples → images (N, H, W, C) in [0, 1]); without one a sample is taken to be an
image already. `preprocess` maps those images to the classifier's input (default: unchanged).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from critwin.errors import CritwinError, first_line

Decode = Callable[[Sequence[Any]], np.ndarray]


def load_classifier(path: str | Path) -> Any:
    """A saved image classifier: a scikit-learn estimator (.skops via skops, .joblib via joblib) or a torch
    module (.pt / .pth: TorchScript, else a whole pickled module)."""
    p = Path(path)
    if not p.is_file():
        raise CritwinError(f"classifier {path}: no such file; give a .skops, .joblib or .pt file")
    suffix = p.suffix.lower()
    try:
        if suffix == ".skops":
            import skops.io as sio

            return sio.load(p, trusted=sio.get_untrusted_types(file=p))
        if suffix == ".joblib":
            import joblib

            return joblib.load(p)
        if suffix in (".pt", ".pth"):
            import torch

            try:
                return torch.jit.load(str(p), map_location="cpu")
            except RuntimeError:
                return torch.load(p, map_location="cpu", weights_only=False)
    except Exception as err:
        raise CritwinError(f"classifier {path}: could not load it: {first_line(err)}") from None
    raise CritwinError(f"classifier {path}: unknown file type {suffix!r}; use .skops, .joblib or .pt")


def _label(v: Any) -> str | int:
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, bool) or not isinstance(v, int | str):
        return str(v)
    return v


class ImageClassifier:
    """The label a classifier gives a sample's image, or None when its top probability is below `threshold`
    (or the image is not finite): such an image is unreadable, never an outcome.

    classifier: a scikit-learn estimator with `predict_proba` (its input: each image flattened) or a torch
    module mapping a float batch (N, C, H, W) to logits (N, K) (softmax gives the probabilities; `labels`
    names the K classes, default 0..K−1; images (N, H, W, C) are transposed for it unless `preprocess` is
    given, which then produces the module's input itself). `decode` maps samples to images, `preprocess`
    images to the classifier's input.
    """

    def __init__(
        self,
        classifier: Any,
        *,
        decode: Decode | None = None,
        preprocess: Callable[[np.ndarray], np.ndarray] | None = None,
        threshold: float = 0.0,
        labels: Sequence[Any] | None = None,
    ):
        if not (isinstance(threshold, int | float) and 0 <= threshold < 1):
            raise CritwinError(f"threshold={threshold!r}: a probability in [0, 1)")
        self.sklearn = hasattr(classifier, "predict_proba")
        if not self.sklearn and not callable(classifier):
            raise CritwinError(f"classifier: a {type(classifier).__name__} is neither a scikit-learn "
                               "estimator with predict_proba nor a torch module")
        self.classifier = classifier
        self.decode = decode
        self.preprocess = preprocess
        self.threshold = float(threshold)
        classes = getattr(classifier, "classes_", None) if labels is None else labels
        self.labels = None if classes is None else [_label(c) for c in classes]

    def probabilities(self, samples: Sequence[Any]) -> np.ndarray:
        """(N, K) class probabilities of the samples' images."""
        images = np.asarray(self.decode(samples) if self.decode else np.stack(samples), dtype=np.float32)
        x = self.preprocess(images) if self.preprocess else images
        if self.sklearn:
            flat = np.asarray(x, dtype=float).reshape(len(x), -1)
            want = getattr(self.classifier, "n_features_in_", flat.shape[1])
            if flat.shape[1] != want:
                raise CritwinError(f"images of shape {tuple(np.shape(x)[1:])} give {flat.shape[1]} features; "
                                   f"the classifier expects {want}: decode or preprocess to its input size")
            p = np.asarray(self.classifier.predict_proba(np.nan_to_num(flat)), dtype=float)
        else:
            import torch

            t = torch.as_tensor(np.asarray(x, dtype=np.float32))
            if t.ndim == 4 and self.preprocess is None:
                t = t.permute(0, 3, 1, 2)  # images are (N, H, W, C); torch modules take (N, C, H, W)
            try:
                with torch.inference_mode():
                    logits = self.classifier(torch.nan_to_num(t.contiguous()))
            except Exception as err:
                raise CritwinError(f"the classifier failed on images of shape {tuple(t.shape[1:])}: "
                                   f"{first_line(err)}") from None
            if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or len(logits) != len(t):
                shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
                raise CritwinError(f"the classifier's output {shape} is not a label: it must give logits of "
                                   "shape (N, classes)")
            p = torch.softmax(logits.double(), dim=1).numpy()
        if p.ndim != 2 or len(p) != len(images):
            raise CritwinError(f"the classifier's output of shape {p.shape} is not a label per image")
        if self.labels is not None and len(self.labels) != p.shape[1]:
            raise CritwinError(f"the classifier gives {p.shape[1]} classes but {len(self.labels)} labels")
        bad = ~np.isfinite(images.reshape(len(images), -1)).all(axis=1)
        p[bad] = np.nan
        return p

    def batch(self, samples: list[Any]) -> list[Any]:
        """Labels of many samples at once (None: unreadable)."""
        if not samples:
            return []
        p = self.probabilities(samples)
        out: list[Any] = []
        for row in p:
            if not np.all(np.isfinite(row)) or row.max() < self.threshold:
                out.append(None)
                continue
            k = int(row.argmax())
            out.append(self.labels[k] if self.labels is not None else k)
        return out

    def __call__(self, sample: Any) -> Any:
        return self.batch([sample])[0]


class Brightness:
    """"bright" when the image's mean intensity (in [0, 1]) is at least `threshold`, else "dark"."""

    def __init__(self, threshold: float = 0.5, *, decode: Decode | None = None):
        self.threshold = float(threshold)
        self.decode = decode

    def batch(self, samples: list[Any]) -> list[str | None]:
        images = np.asarray(self.decode(samples) if self.decode else np.stack(samples), dtype=float)
        m = images.reshape(len(images), -1).mean(axis=1)
        return [None if not np.isfinite(v) else ("bright" if v >= self.threshold else "dark") for v in m]

    def __call__(self, sample: Any) -> str | None:
        return self.batch([sample])[0]


class DominantColour:
    """The colour channel ("red", "green", "blue") with the largest mean in an RGB image (H, W, 3)."""

    NAMES = ("red", "green", "blue")

    def __init__(self, *, decode: Decode | None = None):
        self.decode = decode

    def batch(self, samples: list[Any]) -> list[str | None]:
        images = np.asarray(self.decode(samples) if self.decode else np.stack(samples), dtype=float)
        if images.ndim != 4 or images.shape[-1] != 3:
            raise CritwinError(f"DominantColour needs RGB images (N, H, W, 3), got {images.shape[1:]}")
        m = images.mean(axis=(1, 2))
        return [None if not np.all(np.isfinite(v)) else self.NAMES[int(v.argmax())] for v in m]

    def __call__(self, sample: Any) -> str | None:
        return self.batch([sample])[0]
