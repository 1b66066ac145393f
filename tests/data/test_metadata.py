"""Metadata parsing on the real wsolevaluation files and on each kind of bad file."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from fastwsol.data.metadata import MaskAnnotation, read_split_dir, read_split_metadata


@pytest.mark.parametrize(
    "dataset, split, num_images, num_boxes",
    [("CUB", "test", 5794, 5794), ("ILSVRC", "test", 50000, 80477), ("ILSVRC", "val", 10000, 18532)],
)
def test_real_metadata_counts(wsol_metadata_root, dataset, split, num_images, num_boxes):
    meta = read_split_metadata(wsol_metadata_root, dataset, split)
    assert len(meta) == num_images == len(meta.labels) == len(meta.sizes) == len(meta.boxes)
    assert sum(len(b) for b in meta.boxes) == num_boxes
    assert meta.labels.dtype == np.int64 and meta.sizes.dtype == np.int64
    assert meta.sizes.shape == (num_images, 2) and (meta.sizes > 0).all()
    assert len(set(meta.image_ids)) == num_images
    assert all(b.dtype == np.int64 and b.shape[1] == 4 for b in meta.boxes)


def test_real_ilsvrc_alignment(wsol_metadata_root):
    """Image 2 of ILSVRC test has two boxes; spot-check against the raw files."""
    meta = read_split_metadata(wsol_metadata_root, "ILSVRC", "test")
    assert meta.image_ids[1] == "val/ILSVRC2012_val_00000002.JPEG"
    assert meta.labels[:3].tolist() == [65, 970, 230]
    assert meta.sizes[1].tolist() == [500, 375]
    assert meta.boxes[1].tolist() == [[45, 49, 499, 162], [2, 69, 437, 207]]
    assert meta.labels.min() == 0 and meta.labels.max() == 999


GOOD = {
    "image_ids.txt": "a/1.jpg\na/2.jpg\nb/3.jpg",  # no trailing newline, as the real files
    "class_labels.txt": "a/1.jpg,0\na/2.jpg,3\nb/3.jpg,1\n",
    "image_sizes.txt": "a/1.jpg,100,50\na/2.jpg,20,30\nb/3.jpg,64,64\n",
    "localization.txt": "a/1.jpg,0,0,99,49\na/2.jpg,1,2,3,4\nb/3.jpg,5,5,10,10\na/2.jpg,0,0,19,29\n",
}


def _write(tmp_path, **changes):
    split = tmp_path / "DS" / "test"
    split.mkdir(parents=True)
    for name, text in {**GOOD, **changes}.items():
        if text is not None:
            (split / name).write_text(text)
    return split


def test_synthetic_split_parses(tmp_path):
    split = _write(tmp_path)
    meta = read_split_dir(split)
    assert meta.split_dir == split
    assert meta.image_ids == ("a/1.jpg", "a/2.jpg", "b/3.jpg")
    assert meta.labels.tolist() == [0, 3, 1]
    assert meta.sizes.tolist() == [[100, 50], [20, 30], [64, 64]]
    assert [b.tolist() for b in meta.boxes] == [[[0, 0, 99, 49]], [[1, 2, 3, 4], [0, 0, 19, 29]], [[5, 5, 10, 10]]]
    assert read_split_metadata(tmp_path, "DS", "test").image_ids == meta.image_ids


def test_boxes_optional(tmp_path):
    split = _write(tmp_path, **{"localization.txt": None})
    assert read_split_dir(split, require_localization=False).boxes is None
    with pytest.raises(FileNotFoundError, match="localization.txt"):
        read_split_dir(split)


@pytest.mark.parametrize(
    "name, text, match",
    [
        ("image_ids.txt", "a/1.jpg\na/2.jpg\na/1.jpg\nb/3.jpg", r"image_ids.txt:3: duplicated image id 'a/1.jpg'"),
        ("image_ids.txt", "a/1.jpg\n\na/2.jpg\nb/3.jpg", r"image_ids.txt:2: malformed image id"),
        ("class_labels.txt", "a/1.jpg,0\na/2.jpg\nb/3.jpg,1\n", r"class_labels.txt:2: malformed line"),
        ("class_labels.txt", "a/1.jpg,0\na/2.jpg,cat\nb/3.jpg,1\n", r"class_labels.txt:2: class label must be integers"),
        ("class_labels.txt", "a/1.jpg,0\na/2.jpg,1.5\nb/3.jpg,1\n", r"class_labels.txt:2: class label must be integers"),
        ("class_labels.txt", "a/1.jpg,0\nb/3.jpg,1\n", r"class_labels.txt: 1 image\(s\) have no class label; the first is 'a/2.jpg' \(line 2 of image_ids.txt\)"),
        ("class_labels.txt", "a/1.jpg,0\na/2.jpg,1\nb/3.jpg,1\na/1.jpg,2\n", r"class_labels.txt:4: duplicated image id 'a/1.jpg' \(first on line 1\)"),
        ("class_labels.txt", "a/1.jpg,0\na/2.jpg,1\nb/3.jpg,1\nc/9.jpg,2\n", r"class_labels.txt:4: image id 'c/9.jpg' is not listed"),
        ("image_sizes.txt", "a/1.jpg,100,50\na/2.jpg,20\nb/3.jpg,64,64\n", r"image_sizes.txt:2: malformed line"),
        ("image_sizes.txt", "a/1.jpg,100,50\nb/3.jpg,64,64\n", r"image_sizes.txt: 1 image\(s\) have no image size; the first is 'a/2.jpg'"),
        ("image_sizes.txt", "a/1.jpg,100,50\na/2.jpg,0,30\nb/3.jpg,64,64\n", r"image_sizes.txt: image 'a/2.jpg' has a non-positive size"),
        ("localization.txt", "a/1.jpg,0,0,99,49\nb/3.jpg,5,5,10,10\n", r"localization.txt: 1 image\(s\) have no box; the first is 'a/2.jpg'"),
        ("localization.txt", "a/1.jpg,0,0,100,49\na/2.jpg,1,2,3,4\nb/3.jpg,5,5,10,10\n", r"localization.txt:1: box \(0, 0, 100, 49\) of 'a/1.jpg' is not inside its 100x50 image"),
        ("localization.txt", "a/1.jpg,0,0,99,49\na/2.jpg,-1,2,3,4\nb/3.jpg,5,5,10,10\n", r"localization.txt:2: box \(-1, 2, 3, 4\)"),
        ("localization.txt", "a/1.jpg,0,0,99,49\na/2.jpg,3,2,1,4\nb/3.jpg,5,5,10,10\n", r"localization.txt:2: box \(3, 2, 1, 4\)"),
        ("localization.txt", "a/1.jpg,0,0,99,49\na/2.jpg,1,2,3\nb/3.jpg,5,5,10,10\n", r"localization.txt:2: malformed line"),
        ("localization.txt", "a/1.jpg,0,0,99,49\na/2.jpg,1,2,3,x\nb/3.jpg,5,5,10,10\n", r"localization.txt:2: box coordinates must be integers"),
    ],
    ids=[
        "duplicate-id", "empty-id", "label-missing-field", "label-not-int", "label-float",
        "image-without-label", "duplicate-label", "unknown-image", "size-missing-field",
        "image-without-size", "zero-size", "image-without-box", "box-past-right-edge",
        "box-negative", "box-inverted", "box-missing-field", "box-not-int",
    ],
)
def test_malformed_metadata_names_file_and_line(tmp_path, name, text, match):
    split = _write(tmp_path, **{name: text})
    with pytest.raises(ValueError, match=match):
        read_split_dir(split)


@pytest.mark.parametrize("name", sorted(GOOD))
def test_missing_file_is_named(tmp_path, name):
    split = _write(tmp_path, **{name: None})
    with pytest.raises(FileNotFoundError, match=name):
        read_split_dir(split)


def test_missing_split_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="split folder"):
        read_split_metadata(tmp_path, "CUB", "test")


def test_crlf_and_copied_real_files(tmp_path, wsol_metadata_root):
    split = tmp_path / "CUB" / "val"
    shutil.copytree(wsol_metadata_root / "CUB" / "val", split)
    ids = split / "image_ids.txt"
    ids.write_bytes(ids.read_bytes().replace(b"\n", b"\r\n"))
    assert len(read_split_dir(split)) == 1000


MASKS = {
    "image_ids.txt": "a/1.jpg\na/2.jpg\nb/3.jpg",
    "class_labels.txt": "a/1.jpg,0\na/2.jpg,3\nb/3.jpg,1\n",
    "image_sizes.txt": "",  # empty, as in OpenImages' release
    "localization.txt": (
        "a/1.jpg,a/1_m1.png,a/1_ignore.png\n"
        "a/2.jpg,a/2_m1.png,\n"
        "a/1.jpg,a/1_m2.png,\n"
        "b/3.jpg,b/3_m1.png,b/3_ignore.png\n"
        "a/1.jpg,a/1_m3.png,\n"
    ),
}


def test_mask_split_parses(tmp_path):
    """Several mask lines per image (not necessarily adjacent), in file order; an empty ignore
    field on an image's first line means no ignore mask; empty image_sizes.txt gives None."""
    meta = read_split_dir(_write(tmp_path, **MASKS))
    assert meta.localization == "masks" and meta.boxes is None and meta.sizes is None
    assert meta.masks == (
        MaskAnnotation(("a/1_m1.png", "a/1_m2.png", "a/1_m3.png"), "a/1_ignore.png"),
        MaskAnnotation(("a/2_m1.png",), None),
        MaskAnnotation(("b/3_m1.png",), "b/3_ignore.png"),
    )
    assert meta.labels.tolist() == [0, 3, 1]


def test_box_split_localization_and_sizes(tmp_path):
    meta = read_split_dir(_write(tmp_path))
    assert meta.localization == "boxes" and meta.masks is None


def test_mask_localization_optional_when_empty(tmp_path):
    """OpenImages train: localization.txt exists but is empty."""
    split = _write(tmp_path, **{**MASKS, "localization.txt": ""})
    meta = read_split_dir(split, require_localization=False)
    assert meta.localization is None and meta.boxes is None and meta.masks is None
    with pytest.raises(ValueError, match=r"localization.txt: empty, but every image needs boxes or masks"):
        read_split_dir(split)


@pytest.mark.parametrize(
    "text, match",
    [
        ("a/1.jpg,a/1_m1.png,a/1_ignore.png\na/2.jpg,a/2_m1.png,\na/1.jpg,a/1_m2.png,a/1_ignore.png\n"
         "b/3.jpg,b/3_m1.png,\n",
         r"localization.txt:3: image 'a/1.jpg' names an ignore mask 'a/1_ignore.png' on a later line "
         r"\(its first line is 1\)"),
        ("a/1.jpg,a/1_m1.png,\na/2.jpg,a/2_m1.png,\nc/9.jpg,c/9_m1.png,\nb/3.jpg,b/3_m1.png,\n",
         r"localization.txt:3: image id 'c/9.jpg' is not listed in image_ids.txt"),
        ("a/1.jpg,a/1_m1.png,\nb/3.jpg,b/3_m1.png,\n",
         r"localization.txt: 1 image\(s\) have no mask; the first is 'a/2.jpg' \(line 2 of image_ids.txt\)"),
        ("a/1.jpg,a/1_m1.png,\na/2.jpg,,\nb/3.jpg,b/3_m1.png,\n", r"localization.txt:2: malformed line"),
        ("a/1.jpg,a/1_m1.png,\na/2.jpg\nb/3.jpg,b/3_m1.png,\n", r"localization.txt:2: malformed line"),
    ],
    ids=["ignore-on-later-line", "unknown-image", "image-without-mask", "empty-mask-path", "missing-fields"],
)
def test_malformed_masks_name_file_and_line(tmp_path, text, match):
    with pytest.raises(ValueError, match=match):
        read_split_dir(_write(tmp_path, **{**MASKS, "localization.txt": text}))


def test_boxes_need_sizes(tmp_path):
    with pytest.raises(ValueError, match=r"localization.txt: boxes are checked against the image sizes, but .*image_sizes.txt is empty"):
        read_split_dir(_write(tmp_path, **{"image_sizes.txt": ""}))


@pytest.mark.parametrize("split, num_images, num_masks", [("val", 2500, 3854), ("test", 5000, 7632)])
def test_real_openimages_masks(wsol_metadata_root, split, num_images, num_masks):
    meta = read_split_metadata(wsol_metadata_root, "OpenImages", split)
    assert len(meta) == num_images == len(meta.masks) and meta.sizes is None
    assert sum(len(m.mask_paths) for m in meta.masks) == num_masks
    assert meta.labels.min() == 0 and meta.labels.max() == 99


def test_real_openimages_alignment(wsol_metadata_root):
    """The first test image has two instance masks; spot-check against the raw file."""
    meta = read_split_metadata(wsol_metadata_root, "OpenImages", "test")
    assert meta.image_ids[0] == "test/01226z/7af766bd43da900b.jpg"
    assert meta.masks[0] == MaskAnnotation(
        ("test/01226z/7af766bd43da900b_m01226z_6554d965.png", "test/01226z/7af766bd43da900b_m01226z_8856c605.png"),
        "test/01226z/7af766bd43da900b_ignore.png",
    )


def test_real_openimages_train_has_no_localization(wsol_metadata_root):
    meta = read_split_metadata(wsol_metadata_root, "OpenImages", "train", require_localization=False)
    assert len(meta) == 29819 and meta.localization is None and meta.sizes is None
