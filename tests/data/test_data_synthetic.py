import hashlib
import json

import cv2
import numpy as np
import pytest

from fastwsol.cli import main as cli_main
from fastwsol.data import make_synthetic_dataset
from fastwsol.data.metadata import read_split_metadata
from fastwsol.data.synthetic import MAX_CLASSES, part_of_class


def _digest(root):
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def test_metadata_parses_and_boxes_lie_inside(synthetic):
    counts = {"train": 7, "val": 5, "test": 5}
    for split, per_class in counts.items():
        meta = read_split_metadata(synthetic.metadata_root, synthetic.dataset, split)
        assert len(meta) == 3 * per_class
        assert np.bincount(meta.labels).tolist() == [per_class] * 3
        for image_id, (width, height), boxes in zip(meta.image_ids, meta.sizes, meta.boxes):
            image = cv2.imread(str(synthetic.data_root / synthetic.dataset / image_id))
            assert image.shape[:2] == (height, width), image_id
            assert boxes.shape == (1, 4)
            x0, y0, x1, y1 = boxes[0]
            assert 0 <= x0 < x1 <= width - 1 and 0 <= y0 < y1 <= height - 1
            # the object is large: the paper's setting (the part alone would be a small box)
            assert (x1 - x0 + 1) * (y1 - y0 + 1) >= 0.08 * width * height


def test_part_is_small_and_inside_the_object_box(synthetic):
    meta = read_split_metadata(synthetic.metadata_root, synthetic.dataset, "train")
    part_lines = (meta.split_dir / "part_localization.txt").read_text().splitlines()
    assert [line.split(",")[0] for line in part_lines] == list(meta.image_ids)
    area_ratios = []
    for line, boxes in zip(part_lines, meta.boxes):
        px0, py0, px1, py1 = (int(v) for v in line.split(",")[1:])
        x0, y0, x1, y1 = boxes[0]
        assert x0 <= px0 <= px1 <= x1 and y0 <= py0 <= py1 <= y1
        area_ratios.append((px1 - px0 + 1) * (py1 - py0 + 1) / ((x1 - x0 + 1) * (y1 - y0 + 1)))
    assert max(area_ratios) < 0.25 and np.median(area_ratios) < 0.15


def test_part_pixels_carry_the_class_colour(synthetic):
    """The class-specific colour is present inside the part box and the body colours are shared."""
    meta = read_split_metadata(synthetic.metadata_root, synthetic.dataset, "val")
    part_lines = (meta.split_dir / "part_localization.txt").read_text().splitlines()
    for image_id, label, line in zip(meta.image_ids, meta.labels, part_lines):
        rgb = cv2.imread(str(synthetic.data_root / synthetic.dataset / image_id))[..., ::-1].astype(int)
        px0, py0, px1, py1 = (int(v) for v in line.split(",")[1:])
        crop = rgb[py0 : py1 + 1, px0 : px1 + 1].reshape(-1, 3)
        colour = np.array(part_of_class(int(label))[1])
        assert (np.abs(crop - colour).max(axis=1) < 40).mean() > 0.2, image_id


def test_every_class_has_a_distinct_part():
    pairs = {part_of_class(c) for c in range(MAX_CLASSES)}
    assert len(pairs) == MAX_CLASSES
    with pytest.raises(ValueError, match="classes"):
        make_synthetic_dataset("/nonexistent-never-written", classes=MAX_CLASSES + 1)


def test_deterministic_for_a_seed(tmp_path):
    a = make_synthetic_dataset(tmp_path / "a", classes=2, train_per_class=2, test_per_class=1, seed=7)
    b = make_synthetic_dataset(tmp_path / "b", classes=2, train_per_class=2, test_per_class=1, seed=7)
    c = make_synthetic_dataset(tmp_path / "c", classes=2, train_per_class=2, test_per_class=1, seed=8)
    assert _digest(a.root) == _digest(b.root)
    assert _digest(a.root) != _digest(c.root)
    # an image does not depend on how many others were generated
    d = make_synthetic_dataset(tmp_path / "d", classes=3, train_per_class=3, test_per_class=1, seed=7)
    image_id = "c01/train_0001.jpg"
    assert (a.data_root / a.dataset / image_id).read_bytes() == (d.data_root / d.dataset / image_id).read_bytes()
    assert json.loads((a.root / "synthetic.json").read_text())["seed"] == 7


def test_cli_make_synthetic(tmp_path, capsys):
    assert cli_main(["make-synthetic", str(tmp_path / "s"), "--classes", "2", "--train-per-class", "3",
                     "--test-per-class", "2", "--seed", "1"]) == 0
    meta = read_split_metadata(tmp_path / "s" / "metadata", "SYNTHETIC", "test")
    assert len(meta) == 4
    assert "SYNTHETIC" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:  # argparse: "argument --classes: '0': must be >= 1"
        cli_main(["make-synthetic", str(tmp_path / "t"), "--classes", "0"])
    assert exit_info.value.code == 2


def test_ensure_reuses_a_complete_dataset_with_the_same_parameters(tmp_path):
    from fastwsol.data import ensure_synthetic_dataset

    kw = dict(classes=2, train_per_class=2, test_per_class=1, seed=4)
    paths = ensure_synthetic_dataset(tmp_path / "s", **kw)
    marker = paths.data_root / paths.dataset / "c00" / "train_0000.jpg"
    before = marker.stat().st_mtime_ns
    assert ensure_synthetic_dataset(tmp_path / "s", **kw) == paths
    assert marker.stat().st_mtime_ns == before  # not regenerated
    ensure_synthetic_dataset(tmp_path / "s", **{**kw, "seed": 5}, overwrite=True)
    assert marker.stat().st_mtime_ns != before  # other parameters: regenerated when asked
    assert json.loads((tmp_path / "s" / "synthetic.json").read_text())["seed"] == 5


def test_a_set_drawn_by_older_code_is_told_apart(tmp_path, capsys):
    """A manifest without ``generator`` (written before the high-contrast bodies) is version 1:
    the same parameters do not make it the current set; make_synthetic_dataset refuses to mix
    them and reproduce's ensure_dataset names the difference when it uses such a set."""
    from fastwsol.data.synthetic import GENERATOR_VERSION, SyntheticSpec, recorded_set_changes
    from fastwsol.reproduce import ensure_dataset

    kw = dict(classes=2, train_per_class=2, val_per_class=1, test_per_class=1, seed=4)
    paths = make_synthetic_dataset(tmp_path / "s", **kw)
    assert recorded_set_changes(paths.root, SyntheticSpec(**kw)) == ""
    # val_per_class defaults to test_per_class, as in make_synthetic_dataset
    assert recorded_set_changes(paths.root, SyntheticSpec(**{k: v for k, v in kw.items() if k != "val_per_class"})) == ""
    manifest = paths.root / "synthetic.json"
    saved = json.loads(manifest.read_text())
    assert saved["generator"] == GENERATOR_VERSION == 2
    del saved["generator"]
    manifest.write_text(json.dumps(saved))
    assert recorded_set_changes(paths.root, SyntheticSpec(**kw)) == "generator 1 -> 2"
    with pytest.raises(ValueError, match="generator 1 -> 2"):
        make_synthetic_dataset(tmp_path / "s", **kw)

    class Data:  # the part of a config ensure_dataset reads
        metadata_root, dataset = str(paths.metadata_root), paths.dataset

    class Config:
        data = Data

    ensure_dataset(Config, **{**kw, "classes": 3})
    note = capsys.readouterr().out
    assert "holds a synthetic set other than the default (classes 2 -> 3, generator 1 -> 2)" in note
    ensure_dataset(Config, **kw)  # used as it is either way: nothing regenerated
    assert "generator 1 -> 2" in capsys.readouterr().out
    assert "generator" not in json.loads(manifest.read_text())


def test_bodies_task_class_is_the_body_and_the_part_is_random(tmp_path):
    """The pretraining stand-in: each class has its own body colours; the part does not follow
    the class (any part on any body)."""
    from fastwsol.data.synthetic import BODY_PALETTE, MAX_CLASSES_OF_TASK, body_of_class

    assert len({body_of_class(c) for c in range(MAX_CLASSES_OF_TASK["bodies"])}) == MAX_CLASSES_OF_TASK["bodies"]
    paths = make_synthetic_dataset(tmp_path / "b", classes=3, train_per_class=6, test_per_class=1, seed=2, task="bodies")
    meta = read_split_metadata(paths.metadata_root, paths.dataset, "train")
    part_lines = (meta.split_dir / "part_localization.txt").read_text().splitlines()
    parts_seen = {c: set() for c in range(3)}
    for image_id, label, line in zip(meta.image_ids, meta.labels, part_lines):
        rgb = cv2.imread(str(paths.data_root / paths.dataset / image_id))[..., ::-1].astype(int)
        x0, y0, x1, y1 = meta.boxes[list(meta.image_ids).index(image_id)][0]
        object_pixels = rgb[y0 : y1 + 1, x0 : x1 + 1].reshape(-1, 3)
        light, dark = (np.array(c) for c in BODY_PALETTE[int(label) % len(BODY_PALETTE)])
        near = np.minimum(np.abs(object_pixels - light).max(1), np.abs(object_pixels - dark).max(1)) < 40
        assert near.mean() > 0.15, image_id  # the class's own body colours make up the object
        px0, py0, px1, py1 = (int(v) for v in line.split(",")[1:])
        crop = rgb[py0 : py1 + 1, px0 : px1 + 1].reshape(-1, 3)
        parts_seen[int(label)].add(tuple(np.median(crop, axis=0).round(-1)))
    assert all(len(seen) > 1 for seen in parts_seen.values())  # parts vary within a class
    with pytest.raises(ValueError, match="task"):
        make_synthetic_dataset(tmp_path / "x", task="wings")
    with pytest.raises(ValueError, match="classes"):
        make_synthetic_dataset(tmp_path / "y", classes=MAX_CLASSES_OF_TASK["bodies"] + 1, task="bodies")


def test_objects_task_class_is_the_body_and_the_part_together(tmp_path):
    """The other pretraining stand-in: class = (body class, part) with parts outside the WSOL
    set's default classes, so neither the body nor the part alone gives the class."""
    from fastwsol.data.synthetic import (
        BODY_PALETTE,
        MAX_CLASSES_OF_TASK,
        OBJECT_PART_OFFSET,
        OBJECT_PARTS,
        part_of_class,
    )

    assert OBJECT_PART_OFFSET >= 10  # disjoint from the default WSOL classes 0..9
    classes = 2 * OBJECT_PARTS  # two bodies × every part
    paths = make_synthetic_dataset(tmp_path / "o", classes=classes, train_per_class=1, test_per_class=1, seed=4,
                                   task="objects")
    meta = read_split_metadata(paths.metadata_root, paths.dataset, "train")
    part_lines = (meta.split_dir / "part_localization.txt").read_text().splitlines()
    for i, (image_id, label, line) in enumerate(zip(meta.image_ids, meta.labels, part_lines)):
        body, part = divmod(int(label), OBJECT_PARTS)
        rgb = cv2.imread(str(paths.data_root / paths.dataset / image_id))[..., ::-1].astype(int)
        x0, y0, x1, y1 = meta.boxes[i][0]
        object_pixels = rgb[y0 : y1 + 1, x0 : x1 + 1].reshape(-1, 3)
        light, dark = (np.array(c) for c in BODY_PALETTE[body % len(BODY_PALETTE)])
        near = np.minimum(np.abs(object_pixels - light).max(1), np.abs(object_pixels - dark).max(1)) < 40
        assert near.mean() > 0.15, image_id  # the body of the class's body class
        px0, py0, px1, py1 = (int(v) for v in line.split(",")[1:])
        crop = rgb[py0 : py1 + 1, px0 : px1 + 1].reshape(-1, 3)
        colour = np.array(part_of_class(OBJECT_PART_OFFSET + part)[1])
        assert (np.abs(crop - colour).max(1) < 40).mean() > 0.3, image_id  # the class's part
    with pytest.raises(ValueError, match="classes"):
        make_synthetic_dataset(tmp_path / "y", classes=MAX_CLASSES_OF_TASK["objects"] + 1, task="objects")


def _body_mean(spec, label, index):
    """Mean colour of a 7×7 patch at the object's centre (body pixels only) of one drawn image."""
    from fastwsol.data.synthetic import render_sample

    rng = np.random.default_rng([spec.seed, 0, label, index])
    image, box, part = render_sample(rng, label, spec)
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    return image[cy - 3 : cy + 4, cx - 3 : cx + 4].reshape(-1, 3).mean(0)


def test_body_groups_give_every_class_of_a_group_the_same_body_tint(tmp_path):
    """``body_groups=G``: a class's body wears the tint of its group (class mod G), so the body
    tells the group and not the class; classes of different groups differ in it."""
    from fastwsol.data.synthetic import SyntheticSpec, body_tint

    classes, groups = 5, 2
    grouped, plain = SyntheticSpec(classes=classes, body_groups=groups), SyntheticSpec(classes=classes)
    tints = np.stack([body_tint(g) for g in range(groups)])
    for label in range(classes):
        for index in range(6):
            shift = _body_mean(grouped, label, index) - _body_mean(plain, label, index)  # same scene otherwise
            # every pixel moves by the tint (up to JPEG-free rounding and clipping at 0/255)
            assert int(np.argmin(np.abs(tints - shift).sum(1))) == label % groups, (label, index, shift)
            assert np.abs(shift - tints[label % groups]).max() < 6, (label, index, shift)
    with pytest.raises(ValueError, match="body_groups must lie in"):
        make_synthetic_dataset(tmp_path / "a", classes=3, body_groups=4)
    with pytest.raises(ValueError, match="not both"):
        make_synthetic_dataset(tmp_path / "b", classes=3, body_groups=2, body_cue=0.5)
    with pytest.raises(ValueError, match="task 'parts'"):
        make_synthetic_dataset(tmp_path / "c", classes=3, body_groups=2, task="bodies")


def test_body_cue_tints_the_body_with_the_class_colour_that_often(tmp_path):
    """``body_cue=q``: a body wears its own class's tint with probability q (else a random
    class's), a weak class cue; ``body_cue=0`` leaves every body in the shared colours."""
    from fastwsol.data.synthetic import SyntheticSpec, body_tint

    classes = 6
    cued, plain = SyntheticSpec(classes=classes, body_cue=0.7), SyntheticSpec(classes=classes)
    tints = np.stack([body_tint(c) for c in range(classes)])
    hits = total = 0
    for label in range(classes):
        for index in range(20):
            shift = _body_mean(cued, label, index) - _body_mean(plain, label, index)  # same scene, same stripes
            nearest = int(np.argmin(np.abs(tints - shift).sum(1)))
            hits += nearest == label
            total += 1
    # own tint with p = 0.7, plus 1/6 of the other 30 %: 0.75 expected
    assert 0.6 <= hits / total <= 0.9
