"""The embedded synthetic datasets."""
import hashlib
import json

import numpy as np
import pytest
from PIL import Image

from pvtv2.data import SHAPE_CLASSES, make_classification_dataset
from pvtv2.data.synth import draw_object


def digest(folder):
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*.png")):
        h.update(p.relative_to(folder).as_posix().encode() + p.read_bytes())
    return h.hexdigest()


def test_layout_and_determinism(tmp_path):
    a = make_classification_dataset(tmp_path / "a", classes=4, train_per_class=5, val_per_class=2, size=40, seed=7, progress=False)
    b = make_classification_dataset(tmp_path / "b", classes=4, train_per_class=5, val_per_class=2, size=40, seed=7, progress=False)
    c = make_classification_dataset(tmp_path / "c", classes=4, train_per_class=5, val_per_class=2, size=40, seed=8, progress=False)
    assert sorted(p.name for p in (a / "train").iterdir()) == sorted(SHAPE_CLASSES[:4])
    assert len(list((a / "train").rglob("*.png"))) == 20 and len(list((a / "val").rglob("*.png"))) == 8
    assert Image.open(next((a / "val").rglob("*.png"))).size == (40, 40)
    assert digest(a) == digest(b) != digest(c)
    assert json.loads((a / "synth.json").read_text())["classes"] == list(SHAPE_CLASSES[:4])


@pytest.mark.parametrize("kind", SHAPE_CLASSES)
def test_every_shape_draws_a_visible_object(kind):
    img, mask = draw_object(kind, 64, np.random.default_rng(0))
    assert img.size == (64, 64) and 0.02 < mask.mean() < 0.6
    arr = np.asarray(img).astype(float)
    assert np.abs(arr[mask].mean(0) - arr[~mask].mean(0)).sum() > 60  # object stands out from the background


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="between 2 and 8"):
        make_classification_dataset(tmp_path, classes=1)
    with pytest.raises(ValueError, match="at least 32"):
        make_classification_dataset(tmp_path, size=16)
