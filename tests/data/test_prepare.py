"""`fastwsol prepare` on small fake CUB / ImageNet trees made here, and a tiny training run on the
prepared CUB layout with the shipped CUB config."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fastwsol.cli import main
from fastwsol.data import BUILTIN_METADATA_ROOT, read_split_metadata

FILES = ("image_ids.txt", "class_labels.txt", "image_sizes.txt", "localization.txt")
FIELDS_AFTER_ID = {"image_ids.txt": 0, "class_labels.txt": 1, "image_sizes.txt": 2, "localization.txt": 4}


def write_image(path: Path, width: int, height: int, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pixels = np.full((height, width, 3), rng.integers(0, 256, 3), dtype=np.uint8)
    pixels[height // 4: 3 * height // 4, width // 4: 3 * width // 4] = rng.integers(0, 256, 3)
    Image.fromarray(pixels).save(path, quality=85)


def write_subset(source: Path, dest: Path, keep) -> None:
    """The lines of a split's four files whose image id satisfies ``keep``."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        lines = (source / name).read_text().splitlines()
        kept = [line for line in lines if keep(line.rsplit(",", FIELDS_AFTER_ID[name])[0])]
        (dest / name).write_text("".join(f"{line}\n" for line in kept))


@pytest.fixture(scope="module")
def fake_cub(tmp_path_factory):
    """The real metadata of the first two classes cut to 4 train / 2 val / 2 test images per class,
    and images of the recorded sizes: (CUB_200_2011 dir, CUBV2 dir, metadata root)."""
    root = tmp_path_factory.mktemp("fake_cub")
    cub, cubv2, metadata = root / "CUB_200_2011", root / "CUBV2", root / "metadata"
    per_split = {"train": 4, "val": 2, "test": 2}
    for split, count in per_split.items():
        meta = read_split_metadata("builtin", "CUB", split)
        chosen = set()
        for label in (0, 1):
            chosen |= {meta.image_ids[i] for i in np.flatnonzero(meta.labels == label)[:count]}
        write_subset(BUILTIN_METADATA_ROOT / "CUB" / split, metadata / "CUB" / split, chosen.__contains__)
        for i, image_id in enumerate(meta.image_ids):
            if image_id in chosen:
                width, height = meta.sizes[i].tolist()
                write_image((cubv2 if split == "val" else cub / "images") / image_id, width, height, seed=i)
    (cub / "images.txt").write_text("the archive's other files are not images/\n")
    return cub, cubv2, metadata


def run_prepare(*args) -> int:
    return main(["prepare", *map(str, args), "--no-progress", "--workers", "2"])


def test_prepare_cub_lays_out_every_split(fake_cub, tmp_path):
    cub, cubv2, metadata = fake_cub
    out = tmp_path / "data"
    assert run_prepare("cub", cub, "--val", cubv2, "--out", out, "--metadata-root", metadata) == 0
    for split in ("train", "val", "test"):
        for image_id in read_split_metadata(metadata, "CUB", split).image_ids:
            laid = out / "CUB" / image_id
            assert laid.is_symlink() and laid.resolve() == ((cubv2 if split == "val" else cub / "images") / image_id).resolve()
    # A second run finds everything in place and changes nothing.
    assert run_prepare("cub", cub, "--val", cubv2, "--out", out, "--metadata-root", metadata) == 0


def test_prepare_cub_copy(fake_cub, tmp_path):
    cub, cubv2, metadata = fake_cub
    out = tmp_path / "data"
    assert run_prepare("cub", cub, "--val", cubv2, "--out", out, "--metadata-root", metadata, "--copy") == 0
    image_id = read_split_metadata(metadata, "CUB", "test").image_ids[0]
    laid = out / "CUB" / image_id
    assert laid.is_file() and not laid.is_symlink()
    assert laid.read_bytes() == (cub / "images" / image_id).read_bytes()
    assert not list(out.rglob(".*partial*"))


@pytest.fixture
def damaged_cub(fake_cub, tmp_path):
    """A copy of the fake CUB with one missing, one truncated, one wrongly sized and one extra file."""
    import shutil

    cub, cubv2, metadata = fake_cub
    shutil.copytree(cub, tmp_path / "cub")
    ids = read_split_metadata(metadata, "CUB", "train").image_ids
    images = tmp_path / "cub" / "images"
    (images / ids[0]).unlink()
    data = (images / ids[1]).read_bytes()
    (images / ids[1]).write_bytes(data[: len(data) // 2])
    write_image(images / ids[2], 33, 17, seed=0)
    write_image(images / "999.Not_A_Class" / "stray.jpg", 20, 20, seed=1)
    return tmp_path / "cub", cubv2, metadata, ids


def test_prepare_cub_reports_bad_files_and_lays_out_nothing(damaged_cub, tmp_path, capsys):
    cub, cubv2, metadata, ids = damaged_cub
    out = tmp_path / "data"
    assert run_prepare("cub", cub, "--val", cubv2, "--out", out, "--metadata-root", metadata) == 1
    printed = capsys.readouterr().err
    assert f"1 missing:\n  {ids[0]}" in printed
    assert "2 unusable:" in printed and ids[1] in printed and f"{ids[2]}: " in printed and "33x17" in printed
    assert "1 extra" in printed and "stray.jpg" in printed
    assert not (out / "CUB").exists()
    report = (out / "prepare-CUB-report.txt").read_text()
    assert ids[0] in report and "stray.jpg" in report


def test_prepare_cub_skip_bad_lays_out_the_rest(damaged_cub, tmp_path):
    cub, cubv2, metadata, ids = damaged_cub
    out = tmp_path / "data"
    assert run_prepare("cub", cub, "--val", cubv2, "--out", out, "--metadata-root", metadata, "--skip-bad") == 0
    assert not any(os.path.lexists(out / "CUB" / i) for i in ids[:3])
    assert all((out / "CUB" / i).is_symlink() for i in ids[3:])


def test_prepare_never_overwrites(fake_cub, tmp_path, capsys):
    cub, cubv2, metadata = fake_cub
    out = tmp_path / "data"
    image_id = read_split_metadata(metadata, "CUB", "train").image_ids[0]
    mine = out / "CUB" / image_id
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"the user's own file")
    assert run_prepare("cub", cub, "--val", cubv2, "--out", out, "--metadata-root", metadata) == 1
    assert mine.read_bytes() == b"the user's own file"
    assert "not overwritten" in capsys.readouterr().err


def test_prepare_cub_without_val_names_it(fake_cub, tmp_path, capsys):
    cub, _, metadata = fake_cub
    assert run_prepare("cub", cub, "--out", tmp_path / "data", "--metadata-root", metadata) == 1
    printed = capsys.readouterr().err
    assert "4 missing" in printed and "CUBV2" in printed


def test_train_accepts_the_prepared_cub_layout(fake_cub, tmp_path, tiny_run_overrides):
    """configs/cub_vgg16.yaml trains on what `prepare cub` laid out (tiny: vgg_small, 64², 2 epochs)."""
    cub, cubv2, metadata = fake_cub
    data_root, run = tmp_path / "data", tmp_path / "run"
    assert run_prepare("cub", cub, "--val", cubv2, "--out", data_root, "--metadata-root", metadata) == 0
    overrides = tiny_run_overrides(run, f"data.data_root={data_root}", f"data.metadata_root={metadata}",
                                   "data.dataset=CUB", "model.pretrained=null")
    args = ["train", "--config", str(Path(__file__).resolve().parents[2] / "configs" / "cub_vgg16.yaml")]
    for value in overrides:
        args += ["--set", value]
    assert main(args) == 0
    metrics = json.loads((run / "test_metrics.json").read_text())
    assert metrics["num_images"] == 4 and (run / "best.pt").is_file()  # 2 classes × 2 test images


# ---------------------------------------------------------------- ImageNet

WNIDS = ("n01440764", "n01443537", "n01484850")


@pytest.fixture
def fake_imagenet(tmp_path):
    """3 classes: train 2 images each, ILSVRC2012 val 4 images (metadata 'test'), ImageNetV2 3
    (metadata 'val'); returns (train, val flat, val in wnid folders, val2, metadata root, test labels)."""
    train, flat, nested, val2, metadata = (tmp_path / n for n in ("train", "val", "val_nested", "v2", "metadata"))
    for c, wnid in enumerate(WNIDS):
        for k in range(2):
            write_image(train / wnid / f"{wnid}_{k}.JPEG", 30 + k, 20 + c, seed=10 * c + k)
    labels = [2, 0, 1, 0]
    test_lines = {name: [] for name in FILES}
    for n, label in enumerate(labels, 1):
        name = f"ILSVRC2012_val_{n:08d}.JPEG"
        width, height = 40 + n, 24
        write_image(flat / name, width, height, seed=100 + n)
        write_image(nested / WNIDS[label] / name, width, height, seed=100 + n)
        for key, line in zip(FILES, (f"val/{name}", f"val/{name},{label}", f"val/{name},{width},{height}",
                                     f"val/{name},1,2,{width - 1},{height - 2}")):
            test_lines[key].append(line)
    val_lines = {name: [] for name in FILES}
    for c in range(3):
        image_id = f"{c}/0.jpeg"
        write_image(val2 / image_id, 26, 22, seed=200 + c)
        for key, line in zip(FILES, (f"val2/{image_id}", f"val2/{image_id},{c}", f"val2/{image_id},26,22",
                                     f"val2/{image_id},0,0,25,21")):
            val_lines[key].append(line)
    for split, lines in (("test", test_lines), ("val", val_lines)):
        (metadata / "ILSVRC" / split).mkdir(parents=True)
        for name, rows in lines.items():
            (metadata / "ILSVRC" / split / name).write_text("".join(f"{r}\n" for r in rows))
    return train, flat, nested, val2, metadata, labels


@pytest.mark.parametrize("val_layout", ["flat", "nested"])
def test_prepare_imagenet(fake_imagenet, tmp_path, val_layout):
    train, flat, nested, val2, metadata, labels = fake_imagenet
    out = tmp_path / "data"
    val = flat if val_layout == "flat" else nested
    assert run_prepare("imagenet", "--train", train, "--val", val, "--val2", val2, "--out", out,
                       "--metadata-root", metadata) == 0
    meta = read_split_metadata(out / "metadata", "ILSVRC", "train", require_localization=False)
    assert meta.image_ids == tuple(f"train/{w}/{w}_{k}.JPEG" for w in WNIDS for k in range(2))
    assert meta.labels.tolist() == [0, 0, 1, 1, 2, 2]  # sorted-synset order
    assert meta.sizes.tolist() == [[30, 20], [31, 20], [30, 21], [31, 21], [30, 22], [31, 22]]
    assert all((out / "ILSVRC" / i).is_file() for i in meta.image_ids)
    test = read_split_metadata(out / "metadata", "ILSVRC", "test")
    assert test.labels.tolist() == labels
    for image_id in test.image_ids:
        assert (out / "ILSVRC" / image_id).resolve().parent == val.resolve() / ("" if val_layout == "flat" else WNIDS[labels[test.image_ids.index(image_id)]])
    for image_id in read_split_metadata(out / "metadata", "ILSVRC", "val").image_ids:
        assert (out / "ILSVRC" / image_id).resolve() == (val2 / image_id[len("val2/"):]).resolve()
    # Idempotent: the same run again changes nothing and succeeds.
    before = (out / "metadata" / "ILSVRC" / "train" / "image_sizes.txt").stat().st_mtime_ns
    assert run_prepare("imagenet", "--train", train, "--val", val, "--val2", val2, "--out", out,
                       "--metadata-root", metadata) == 0
    assert (out / "metadata" / "ILSVRC" / "train" / "image_sizes.txt").stat().st_mtime_ns == before


def test_prepare_imagenet_names_bad_val_files(fake_imagenet, tmp_path, capsys):
    train, _, nested, val2, metadata, labels = fake_imagenet
    # An image in the wrong synset folder, one missing, one stray file.
    moved = nested / WNIDS[labels[0]] / "ILSVRC2012_val_00000001.JPEG"
    moved.rename(nested / WNIDS[(labels[0] + 1) % 3] / moved.name)
    (nested / WNIDS[0] / "ILSVRC2012_val_00000002.JPEG").unlink()
    (nested / "LOC_val_solution.csv").write_text("not an image\n")
    out = tmp_path / "data"
    assert run_prepare("imagenet", "--train", train, "--val", nested, "--val2", val2, "--out", out,
                       "--metadata-root", metadata) == 1
    printed = capsys.readouterr().err
    assert "ILSVRC2012_val_00000001.JPEG: found in folder" in printed and "metadata says class 2" in printed
    assert "1 missing" in printed and "ILSVRC2012_val_00000002.JPEG" in printed
    assert "LOC_val_solution.csv" in printed
    assert not (out / "ILSVRC").exists() and not (out / "metadata").exists()


def test_prepare_imagenet_skip_bad_leaves_corrupt_train_images_out(fake_imagenet, tmp_path):
    train, flat, _, val2, metadata, _ = fake_imagenet
    bad = train / WNIDS[1] / f"{WNIDS[1]}_0.JPEG"
    bad.write_bytes(b"not a jpeg")
    out = tmp_path / "data"
    args = ("imagenet", "--train", train, "--val", flat, "--val2", val2, "--out", out, "--metadata-root", metadata)
    assert run_prepare(*args) == 1
    assert run_prepare(*args, "--skip-bad") == 0
    ids = read_split_metadata(out / "metadata", "ILSVRC", "train", require_localization=False).image_ids
    assert len(ids) == 5 and f"train/{WNIDS[1]}/{bad.name}" not in ids


def test_prepare_imagenet_class_count_must_match(fake_imagenet, tmp_path, capsys):
    train, flat, _, val2, metadata, _ = fake_imagenet
    (train / "n09999999").mkdir()
    assert run_prepare("imagenet", "--train", train, "--val", flat, "--out", tmp_path / "d", "--metadata-root", metadata) == 2
    assert "4 class folder(s)" in capsys.readouterr().err
