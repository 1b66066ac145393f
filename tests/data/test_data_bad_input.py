"""Bad input: a clear error naming the file, or (skip_bad=True) skipped and counted; never a
hang, never a silently wrong label."""

import pytest
import torch
from PIL import Image

from fastwsol.data import BadImageError, build_loader

KINDS = [pytest.param("dali", marks=pytest.mark.requires_dali), "torch"]


def _build(data_root, metadata_root, kind, **kw):
    return build_loader(data_root, metadata_root, "SYNTHETIC", "test", train=False, batch_size=4, loader=kind,
                        device="cpu", num_threads=0 if kind == "torch" else 2, output="uint8", **kw)


@pytest.fixture
def damaged(synthetic, tmp_path, copy_split):
    data_root, metadata_root = copy_split(synthetic, "test", tmp_path)
    ids = (metadata_root / "SYNTHETIC" / "test" / "image_ids.txt").read_text().split()
    return data_root, metadata_root, [data_root / "SYNTHETIC" / i for i in ids]


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _garbage(path):
    path.write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8 + b"\xff\xd9")


def _not_an_image(path):
    path.write_text("this is not an image\n")


DAMAGE = {"missing": lambda p: p.unlink(), "truncated": _truncate, "corrupt": _garbage, "text": _not_an_image}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_bad_file_raises_naming_it(damaged, kind, damage):
    data_root, metadata_root, files = damaged
    DAMAGE[damage](files[6])
    with pytest.raises(BadImageError, match=files[6].name):
        _build(data_root, metadata_root, kind)


@pytest.mark.parametrize("kind", KINDS)
def test_skip_bad_skips_counts_and_keeps_labels_right(damaged, kind, synthetic):
    data_root, metadata_root, files = damaged
    files[2].unlink()
    _truncate(files[9])
    with pytest.warns(UserWarning, match=r"skipped 2 of 15"):
        loader = _build(data_root, metadata_root, kind, skip_bad=True)
    assert [image_id for image_id, _ in loader.problems] == [f"{files[2].parent.name}/{files[2].name}",
                                                            f"{files[9].parent.name}/{files[9].name}"]
    batches = list(loader)
    indices = torch.cat([b["indices"] for b in batches]).tolist()
    labels = torch.cat([b["labels"] for b in batches])
    assert indices == [i for i in range(15) if i not in (2, 9)] and loader.num_samples == 13
    assert torch.equal(labels, torch.from_numpy(loader.metadata.labels[indices]))


@pytest.mark.parametrize("kind", KINDS)
def test_metadata_naming_absent_images(damaged, kind):
    data_root, metadata_root, _ = damaged
    split = metadata_root / "SYNTHETIC" / "test"
    for name, extra in (("image_ids", "c09/ghost.jpg"), ("class_labels", "c09/ghost.jpg,0"),
                        ("image_sizes", "c09/ghost.jpg,100,100"), ("localization", "c09/ghost.jpg,1,1,5,5")):
        with open(split / f"{name}.txt", "a") as f:
            f.write(extra + "\n")
    with pytest.raises(BadImageError, match="ghost.jpg"):
        _build(data_root, metadata_root, kind)


def test_size_disagreeing_with_metadata(damaged):
    data_root, metadata_root, files = damaged
    Image.open(files[0]).resize((64, 48)).save(files[0], format="JPEG")
    with pytest.raises(BadImageError, match=r"64x48 but .*image_sizes.txt"):
        _build(data_root, metadata_root, "torch")


@pytest.mark.parametrize("kind", KINDS)
def test_empty_split(damaged, kind):
    data_root, metadata_root, _ = damaged
    for name in ("image_ids", "class_labels", "image_sizes", "localization"):
        (metadata_root / "SYNTHETIC" / "test" / f"{name}.txt").write_text("")
    with pytest.raises(ValueError, match="empty split"):
        _build(data_root, metadata_root, kind)


@pytest.mark.parametrize("kind", KINDS)
def test_all_bad_with_skip_is_an_error(damaged, kind):
    data_root, metadata_root, files = damaged
    for path in files:
        path.unlink()
    with pytest.raises(ValueError, match="no usable image"), pytest.warns(UserWarning):
        _build(data_root, metadata_root, kind, skip_bad=True)


def _rewrite(path, convert):
    """Re-save under the same name in another format/mode (same size, so metadata still holds)."""
    image = Image.open(path).convert("RGB")
    convert(image).save(path, **({"format": "PNG"} if path.suffix == ".png" else {}))


CONVERSIONS = {
    "grayscale_jpeg": (lambda im: im.convert("L"), "JPEG"),
    "cmyk_jpeg": (lambda im: im.convert("CMYK"), "JPEG"),
    "rgb_png": (lambda im: im, "PNG"),
    "rgba_png": (lambda im: im.convert("RGBA"), "PNG"),
    "palette_png": (lambda im: im.convert("P"), "PNG"),
}


@pytest.mark.requires_dali
@pytest.mark.parametrize("case", sorted(CONVERSIONS))
def test_other_formats_and_modes_decode_like_pil(damaged, case):
    """PNG/grayscale/CMYK/palette files under a .jpg name: both loaders give PIL's RGB."""
    data_root, metadata_root, files = damaged
    convert, fmt = CONVERSIONS[case]
    image = Image.open(files[3]).convert("RGB")
    convert(image).save(files[3], format=fmt)
    dali_loader = _build(data_root, metadata_root, "dali")
    # a file DALI cannot take verbatim is handed over re-encoded, so DALI does not read the files itself
    assert dali_loader.read_in_pipeline == (not dali_loader.checked.needs_reencode)
    dali, ref = list(dali_loader), list(_build(data_root, metadata_root, "torch"))
    a, b = dali[0]["images"][3], ref[0]["images"][3]  # image 3 is the 4th of the first batch
    diff = (a.int() - b.int()).abs()
    assert diff.max() <= 8 and diff.float().mean() <= 0.5
    if case == "grayscale_jpeg":
        assert torch.equal(a[0], a[1]) and torch.equal(a[1], a[2])


@pytest.mark.requires_dali
def test_file_broken_after_the_check_fails_naming_the_batch(damaged):
    """Damage after construction (checks cached): DALI's error is re-raised with the batch's ids."""
    data_root, metadata_root, files = damaged
    loader = _build(data_root, metadata_root, "dali")
    _garbage(files[5])
    with pytest.raises(RuntimeError, match=files[5].name):
        list(loader)


def test_decode_verification_catches_what_headers_miss(damaged):
    """A PNG whose pixel data is cut short but which still ends with IEND: the header check
    passes, decoding fails. (A JPEG cut short with EOI appended decodes with only a libjpeg
    warning in every decoder here, so no check catches it.)"""
    data_root, metadata_root, files = damaged
    Image.open(files[1]).save(files[1], format="PNG")
    data = files[1].read_bytes()
    files[1].write_bytes(data[: len(data) // 2] + data[-12:])  # keep the IEND chunk
    assert len(_build(data_root, metadata_root, "torch")) == 4  # header checks pass
    with pytest.raises(BadImageError, match=files[1].name):
        _build(data_root, metadata_root, "torch", verify="decode")
