"""The embedded synthetic datasets."""
import hashlib
import json
import os
from pathlib import Path

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


def test_bad_sizes_and_counts_are_refused(tmp_path):
    from pvtv2.data import make_detection_dataset, make_segmentation_dataset
    from pvtv2.errors import ConfigError

    with pytest.raises(ConfigError, match="size must be at least 32 pixels .* got 0"):
        make_classification_dataset(tmp_path / "a", size=0)                 # not the default 48
    with pytest.raises(ConfigError, match="train_per_class must be at least 1, got 0"):
        make_classification_dataset(tmp_path / "a", train_per_class=0)
    with pytest.raises(ConfigError, match="val_images must be at least 1, got 0"):
        make_segmentation_dataset(tmp_path / "a", val_images=0)
    with pytest.raises(ConfigError, match="size must be at least 64 pixels .* got 0"):
        make_detection_dataset(tmp_path / "a", size=0)
    with pytest.raises(ConfigError, match="seed must be >= 0"):
        make_classification_dataset(tmp_path / "a", seed=-1)
    assert not (tmp_path / "a").exists()
    small = make_classification_dataset(tmp_path / "b", classes=2, train_per_class=1, val_per_class=1, progress=False)
    assert Image.open(next((small / "train").rglob("*.png"))).size == (48, 48)   # size=None: the default


def test_existing_folders_are_never_mixed_or_cleared_by_mistake(tmp_path):
    from pvtv2.errors import DataError

    kw = dict(train_per_class=2, val_per_class=1, size=32, progress=False)
    out = make_classification_dataset(tmp_path / "d", classes=4, **kw)
    with pytest.raises(DataError, match="already holds a synthetic dataset: .* --overwrite"):
        make_classification_dataset(out, classes=2, **kw)
    assert len(list((out / "train").iterdir())) == 4                            # untouched
    make_classification_dataset(out, classes=2, overwrite=True, **kw)
    assert sorted(p.name for p in (out / "train").iterdir()) == ["circle", "square"]   # no old class left over
    assert json.loads((out / "synth.json").read_text())["classes"] == ["circle", "square"]
    assert sorted(p.name for p in out.iterdir()) == ["synth.json", "train", "val"]

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    for overwrite in (False, True):
        with pytest.raises(DataError, match="not empty and was not written by pvtv2 data synth"):
            make_classification_dataset(mine, overwrite=overwrite, **kw)
    assert [p.name for p in mine.iterdir()] == ["thesis.tex"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="is a file"):
        make_classification_dataset(tmp_path / "file", **kw)
    with pytest.raises(DataError, match="cannot write the dataset to .*file/sub: Not a directory"):
        make_classification_dataset(tmp_path / "file" / "sub", **kw)            # no traceback, even as root

    # A run interrupted half-way (its marker is still there) is cleared and rewritten.
    (out / "synth.json").unlink()
    (out / ".synth-incomplete").touch()
    (out / "train" / "stray").mkdir()
    make_classification_dataset(out, classes=3, **kw)
    assert sorted(p.name for p in (out / "train").iterdir()) == ["circle", "square", "triangle"]
    assert not (out / ".synth-incomplete").exists()


def test_written_files_follow_the_umask(tmp_path):
    from pvtv2.fileio import atomic_write

    old = os.umask(0o002)
    try:
        atomic_write(tmp_path / "a.txt", lambda tmp: Path(tmp).write_text("x"))
        out = make_classification_dataset(tmp_path / "d", classes=2, train_per_class=1, val_per_class=1, size=32,
                                          progress=False)
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o664                  # mkstemp alone gives 0600
    assert {p.stat().st_mode & 0o777 for p in out.rglob("*") if p.is_file()} == {0o664}
