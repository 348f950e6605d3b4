"""Digit identity in predicted Moving MNIST frames (the paper's long-term consistency measure).

A small convolutional MNIST classifier, trained by the project on the shipped training digits
(``cwworld/data/assets/mnist_digits.npz``), reads each digit back out of a frame.

**Protocol** (ours; the paper reports identity accuracy without fixing one): for every
predicted frame ``t`` and every digit ``i`` of the video, the 28x28 window at that digit's
true position at ``t`` (known from the generator) is cut out of the predicted frame and
classified; the identity accuracy at ``t`` is the fraction of (video, sample, digit) triples
whose class is the digit's true label. A model that keeps both digits' identities and
positions scores what ground-truth frames score (digits that overlap cost a little there
too); one that loses them falls towards chance (10%).

The classifier is trained with the digit shifted by up to 2 pixels and, 70% of the time,
another digit drawn over it with ``max`` at a random offset (as Moving MNIST draws two
digits), so overlapping digits are still read as the centred one. Its weights ship as
``cwworld/data/assets/digit_classifier.pt`` (made by ``python -m cwworld.digits``, a fixed
seed; loaded with ``weights_only=True``).
"""

from __future__ import annotations

import os
import sys
from importlib import resources
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .data.moving_mnist import DIGIT_SIZE, load_digits, load_labels

__all__ = ["DigitClassifier", "digit_identity", "load_classifier", "train_classifier"]

WEIGHTS = "digit_classifier.pt"


class DigitClassifier(nn.Module):
    """``[N, 28, 28]`` float in [0, 1] (or uint8) -> class logits ``[N, 10]``."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc1 = nn.Linear(64 * 7 * 7, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, digits: torch.Tensor) -> torch.Tensor:
        x = digits.float() / 255.0 if digits.dtype == torch.uint8 else digits.float()
        x = F.max_pool2d(F.relu(self.conv1(x[:, None])), 2)  # (N, 32, 14, 14)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)  # (N, 64, 7, 7)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


def _augment(digits: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Shift each digit by up to 2 px; 70% of them get another digit drawn over them with max."""
    N = len(digits)
    canvas = np.zeros((N, 3 * DIGIT_SIZE, 3 * DIGIT_SIZE), np.uint8)  # the digit centred, room for another
    c = DIGIT_SIZE
    shift = rng.integers(-2, 3, size=(N, 2))
    for n in range(N):
        y, x = c + shift[n]
        canvas[n, y:y + c, x:x + c] = digits[n]
    other = rng.permutation(N)
    offset = rng.integers(-DIGIT_SIZE + 1, DIGIT_SIZE, size=(N, 2))
    for n in np.nonzero(rng.random(N) < 0.7)[0]:
        y, x = c + offset[n]
        np.maximum(canvas[n, y:y + c, x:x + c], digits[other[n]], out=canvas[n, y:y + c, x:x + c])
    return canvas[:, c:2 * c, c:2 * c]


def train_classifier(epochs: int = 40, seed: int = 0, log=print) -> tuple[DigitClassifier, float]:
    """Train on the shipped training digits; returns the classifier and its accuracy on the
    500 held-out test digits."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    images, labels = load_digits(None, "train"), torch.from_numpy(load_labels(None, "train").astype(np.int64))
    test, test_labels = load_digits(None, "test"), torch.from_numpy(load_labels(None, "test").astype(np.int64))
    model = DigitClassifier()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for epoch in range(epochs):
        order = rng.permutation(len(images))
        batch = torch.from_numpy(_augment(images[order], rng))
        for start in range(0, len(order), 100):
            loss = F.cross_entropy(model(batch[start:start + 100]), labels[order[start:start + 100]])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if log and (epoch + 1) % 10 == 0:
            log(f"epoch {epoch + 1}: held-out accuracy {accuracy(model, test, test_labels):.3f}")
    return model.eval(), accuracy(model, test, test_labels)


@torch.no_grad()
def accuracy(model: DigitClassifier, images, labels) -> float:
    """Fraction of ``images`` ``[N, 28, 28]`` classified as ``labels`` ``[N]``."""
    model.eval()
    predicted = model(torch.as_tensor(np.asarray(images))).argmax(-1)
    return float((predicted == torch.as_tensor(np.asarray(labels))).float().mean())


def load_classifier(path: Optional[Union[str, os.PathLike]] = None) -> DigitClassifier:
    """The shipped classifier (or one saved at ``path``), in eval mode."""
    model = DigitClassifier()
    if path is None:
        with resources.as_file(resources.files("cwworld.data") / "assets" / WEIGHTS) as shipped:
            state = torch.load(shipped, map_location="cpu", weights_only=True)
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval()


@torch.no_grad()
def digit_identity(classifier: DigitClassifier, frames: torch.Tensor, labels, corners) -> torch.Tensor:
    """Identity accuracy of every frame.

    Args:
        frames: ``[B, S, T, H, W, 1]`` (float in [0, 1] or uint8) predictions, ``S`` samples each.
        labels: ``[B, n]`` the true digit classes.
        corners: ``[B, T, n, 2]`` each digit's (y, x) top-left corner at each frame.
    Returns: ``[B, S, T]``: the fraction of the ``n`` digits classified as their labels.
    """
    labels, corners = torch.as_tensor(np.asarray(labels)), torch.as_tensor(np.asarray(corners))
    B, S, T = frames.shape[:3]
    n = labels.shape[1]
    image = frames[..., 0].float()
    if frames.dtype == torch.uint8:
        image = image / 255.0
    r = torch.arange(DIGIT_SIZE)
    rows = corners[..., 0, None] + r  # (B, T, n, 28)
    cols = corners[..., 1, None] + r
    b = torch.arange(B)[:, None, None, None, None]
    t = torch.arange(T)[None, :, None, None, None]
    out = torch.empty(B, S, T)
    for s in range(S):  # crops (B, T, n, 28, 28)
        crops = image[:, s].cpu()[b, t, rows[..., :, None], cols[..., None, :]]
        predicted = classifier(crops.reshape(-1, DIGIT_SIZE, DIGIT_SIZE)).argmax(-1).view(B, T, n)
        out[:, s] = (predicted == labels[:, None, :]).float().mean(-1)
    return out


def main(argv=None) -> int:
    """Train the classifier and write it next to the shipped digits (or to ``argv[0]``)."""
    argv = sys.argv[1:] if argv is None else argv
    model, acc = train_classifier()
    target = Path(argv[0]) if argv else Path(__file__).parent / "data" / "assets" / WEIGHTS
    tmp = target.with_name(f".{target.name}.tmp")
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, target)
    print(f"{target}: held-out accuracy {acc:.3f} on 500 test digits")
    return 0


if __name__ == "__main__":
    sys.exit(main())
