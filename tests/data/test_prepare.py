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


# ---------------------------------------------------------------- OpenImages30k

OPENIMAGES_SIZES = {"train": [(30, 20), (24, 26)], "val": [(28, 22), (32, 18)], "test": [(26, 26), (40, 20), (22, 30)]}


def write_mask(path: Path, width: int, height: int, box) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.zeros((height, width), np.uint8)
    x0, y0, x1, y1 = box
    pixels[y0:y1, x0:x1] = 255
    Image.fromarray(pixels).save(path)


@pytest.fixture
def fake_openimages(tmp_path):
    """A metadata root with 2 train, 2 val and 3 test images and the matching source folder
    (images + val/test masks, one test image with two instance masks, one val image without an
    ignore mask): (source, metadata root, {split: image ids}, [mask paths])."""
    src, metadata = tmp_path / "OpenImages_src", tmp_path / "metadata"
    ids, masks = {}, []
    for split, sizes in OPENIMAGES_SIZES.items():
        lines = {name: [] for name in FILES}
        ids[split] = []
        for n, (width, height) in enumerate(sizes):
            cls = f"0{n % 2}abc"
            image_id = f"{split}/{cls}/{split}{n}.jpg"
            ids[split].append(image_id)
            write_image(src / image_id, width, height, seed=n + 10 * len(ids))
            lines["image_ids.txt"].append(image_id)
            lines["class_labels.txt"].append(f"{image_id},{n % 2}")
            if split == "train":
                continue
            instances = [f"{split}/{cls}/{split}{n}_m{cls}_{k}.png" for k in range(2 if (split, n) == ("test", 1) else 1)]
            ignore = "" if (split, n) == ("val", 1) else f"{split}/{cls}/{split}{n}_ignore.png"
            for k, mask in enumerate(instances):
                write_mask(src / mask, width, height, (k, k, width // 2 + k, height // 2))
                lines["localization.txt"].append(f"{image_id},{mask},{ignore if k == 0 else ''}")
            masks += instances
            if ignore:
                write_mask(src / ignore, width, height, (0, 0, width, 3))
                masks.append(ignore)
        (metadata / "OpenImages" / split).mkdir(parents=True)
        for name, rows in lines.items():  # image_sizes.txt stays empty, as in the release
            (metadata / "OpenImages" / split / name).write_text("".join(f"{r}\n" for r in rows))
    return src, metadata, ids, masks


def test_prepare_openimages_lays_out_images_and_masks(fake_openimages, tmp_path, hashes):
    from fastwsol.evaluation import load_gt_masks

    src, metadata, ids, masks = fake_openimages
    (src / "OpenImages_images.zip").write_bytes(b"the archive, beside the unpacked folders: not looked at")
    before = hashes(src)
    out = tmp_path / "data"
    assert run_prepare("openimages", src, "--out", out, "--metadata-root", metadata) == 0
    for relative in [*(i for split in ids.values() for i in split), *masks]:
        laid = out / "OpenImages" / relative
        assert laid.is_symlink() and laid.resolve() == (src / relative).resolve()
    test = read_split_metadata(metadata, "OpenImages", "test")
    gt = load_gt_masks(out / "OpenImages", test.masks)  # the layout the evaluator reads
    assert gt.shape == (3, 224, 224) and (gt == 1).any() and (gt == 255).any()
    assert run_prepare("openimages", src, "--out", out, "--metadata-root", metadata) == 0  # idempotent
    assert hashes(src) == before


def test_prepare_openimages_copy_and_parent_folder(fake_openimages, tmp_path):
    src, metadata, ids, masks = fake_openimages
    parent = tmp_path / "dataset"
    parent.mkdir()
    src.rename(parent / "OpenImages")
    out = tmp_path / "data"
    assert run_prepare("openimages", parent, "--out", out, "--metadata-root", metadata, "--copy") == 0
    laid = out / "OpenImages" / masks[0]
    assert laid.is_file() and not laid.is_symlink()
    assert laid.read_bytes() == (parent / "OpenImages" / masks[0]).read_bytes()


def test_prepare_openimages_reports_bad_files_and_lays_out_nothing(fake_openimages, tmp_path, capsys, hashes):
    src, metadata, ids, masks = fake_openimages
    (src / ids["train"][0]).unlink()  # a missing image
    corrupt = next(m for m in masks if m.startswith("test/") and "_m" in m)
    data = (src / corrupt).read_bytes()
    (src / corrupt).write_bytes(data[: len(data) // 2])  # a truncated mask
    resized = next(m for m in masks if m.startswith("val/") and "ignore" in m)
    write_mask(src / resized, 10, 10, (0, 0, 5, 5))  # an ignore mask of another size than its image
    write_image(src / "test" / "00abc" / "stray.jpg", 20, 20, seed=3)  # listed by no split
    before = hashes(src)
    out = tmp_path / "data"
    assert run_prepare("openimages", src, "--out", out, "--metadata-root", metadata) == 1
    printed = capsys.readouterr().err
    assert f"1 missing:\n  {ids['train'][0]}" in printed
    assert "2 unusable:" in printed and f"{corrupt}: " in printed
    assert f"{resized}: " in printed and "is 10x10, its image val/00abc/val0.jpg is 28x22" in printed
    assert "1 extra" in printed and "stray.jpg" in printed
    assert not (out / "OpenImages").exists()
    report = (out / "prepare-OpenImages-report.txt").read_text()
    assert corrupt in report and "stray.jpg" in report
    assert hashes(src) == before


def test_prepare_openimages_missing_mask_and_skip_bad(fake_openimages, tmp_path, capsys):
    """With --skip-bad an image whose mask is missing or unusable is left out with its masks."""
    src, metadata, ids, masks = fake_openimages
    missing = next(m for m in masks if m.startswith("test/") and "_m" in m)
    (src / missing).unlink()
    corrupt = next(m for m in masks if m.startswith("val/") and "ignore" in m)
    (src / corrupt).write_bytes(b"not a png")
    owners = [m.split("_m")[0].split("_ignore")[0] + ".jpg" for m in (missing, corrupt)]
    out = tmp_path / "data"
    assert run_prepare("openimages", src, "--out", out, "--metadata-root", metadata) == 1
    assert f"{missing} (mask of {owners[0]}; not found)" in capsys.readouterr().err
    assert run_prepare("openimages", src, "--out", out, "--metadata-root", metadata, "--skip-bad") == 0
    for owner in owners:
        assert not os.path.lexists(out / "OpenImages" / owner)
        assert not any(os.path.lexists(out / "OpenImages" / m) for m in masks if m.startswith(owner[:-4] + "_"))
    others = [i for split in ids.values() for i in split if i not in owners]
    assert len(others) == 5 and all((out / "OpenImages" / i).is_symlink() for i in others)


def test_prepare_openimages_never_overwrites(fake_openimages, tmp_path, capsys, hashes):
    src, metadata, _, masks = fake_openimages
    out = tmp_path / "data"
    mine = out / "OpenImages" / masks[0]
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"the user's own file")
    before = hashes(out)
    assert run_prepare("openimages", src, "--out", out, "--metadata-root", metadata) == 1
    assert mine.read_bytes() == b"the user's own file"
    assert "not overwritten" in capsys.readouterr().err
    after = hashes(out)
    assert all(after[name] == digest for name, digest in before.items())
