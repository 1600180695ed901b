"""age_model.faces: every input kind and mode, every bad input, detection on real photos, crop geometry."""

from __future__ import annotations

import io
import struct
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from age_model import faces
from age_model.faces import Face, ImageError, crop_face, detect_faces, expand_box, load_image
from age_model.faces.crops import CropSpec
from age_model.modeling import AgeSettings

# --------------------------------------------------------------------------- helpers


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height``: a decompression bomb without allocating it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def gradient(width: int = 320, height: int = 240) -> Image.Image:
    ramp = np.linspace(0, 255, width, dtype=np.float64)[None, :].repeat(height, 0)
    return Image.fromarray(np.stack([ramp, ramp[::-1, ::-1], np.full_like(ramp, 128)], -1).astype(np.uint8))


@pytest.fixture(scope="module")
def fgnet_photos(fixture_dir: Path) -> dict[str, Image.Image]:
    paths = sorted((fixture_dir / "images").glob("fgnet_*"))
    assert len(paths) == 8
    return {p.name: load_image(p) for p in paths}


@pytest.fixture(scope="module")
def fgnet_faces(fgnet_photos: dict[str, Image.Image]) -> dict[str, list[Face]]:
    return {name: detect_faces(photo) for name, photo in fgnet_photos.items()}


# --------------------------------------------------------------------------- input kinds and modes


def test_path_str_bytes_pil_and_array_give_the_same_pixels(tmp_path: Path) -> None:
    source = noise(64, 48)
    path = tmp_path / "photo.png"
    source.save(path)
    expected = np.asarray(source)
    for given in (path, str(path), path.read_bytes(), source, np.asarray(source)):
        image = load_image(given)
        assert image.mode == "RGB" and image.size == (64, 48)
        np.testing.assert_array_equal(np.asarray(image), expected)


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "1", "YCbCr", "I;16", "I", "F"])
def test_every_mode_becomes_rgb(mode: str) -> None:
    grey = np.asarray(gradient(64, 48).convert("L"))
    source = Image.fromarray(grey.astype(np.uint16) * 257) if mode == "I;16" else gradient(64, 48).convert(mode)
    assert source.mode == mode
    image = load_image(source)
    assert image.mode == "RGB" and image.size == (64, 48)
    if mode in ("L", "I;16", "I", "F"):  # greyscale ramps survive, whatever the bit depth
        assert np.abs(np.asarray(image)[:, :, 0].astype(int) - grey).max() <= 1


def test_alpha_is_composited_on_white() -> None:
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[:, :20] = (200, 0, 0, 255)  # opaque red left half, fully transparent black right half
    for source in (Image.fromarray(rgba, "RGBA"), Image.fromarray(rgba, "RGBA").convert("LA"), rgba):
        pixels = np.asarray(load_image(source))
        assert (pixels[:, 30] == 255).all(), "transparent pixels must turn white, not black"
        assert pixels[5, 5, 0] > 0 and (pixels[:, 5] != 255).any()


def test_palette_with_transparency_on_white() -> None:
    palette = Image.new("P", (40, 40), 0)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.paste(1, (0, 0, 20, 40))
    palette.info["transparency"] = 0
    pixels = np.asarray(load_image(encoded(palette, "PNG", transparency=0)))
    assert tuple(pixels[10, 30]) == (255, 255, 255) and tuple(pixels[10, 5]) == (255, 0, 0)


def test_sixteen_bit_is_scaled_not_clipped(tmp_path: Path) -> None:
    values = np.array([[0, 257 * 100, 65535] * 12] * 36, dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I")
    for source in (path, Image.fromarray(values), values):
        grey = np.asarray(load_image(source))[0, :3, 0]
        assert list(grey) == [0, 100, 255]


def test_float_and_int32_images_are_scaled() -> None:
    floats = np.tile(np.array([0.0, 0.5, 1.0], np.float32), (36, 12))
    assert list(np.asarray(load_image(Image.fromarray(floats, "F")))[0, :3, 0]) == [0, 128, 255]
    assert list(np.asarray(load_image(floats))[0, :3, 0]) == [0, 128, 255]
    ints = Image.fromarray(np.tile(np.array([0, 32896, 65535], np.int32), (36, 12)), "I")
    assert list(np.asarray(load_image(ints))[0, :3, 0]) == [0, 128, 255]


def test_cmyk_jpeg_loads(tmp_path: Path) -> None:
    path = tmp_path / "cmyk.jpg"
    Image.new("RGB", (48, 48), (255, 0, 0)).convert("CMYK").save(path)
    red = np.asarray(load_image(path))[24, 24]
    assert red[0] > 200 and red[1] < 60 and red[2] < 60


def test_exif_orientation_applied_and_metadata_stripped(tmp_path: Path) -> None:
    source = Image.new("RGB", (80, 40), (0, 0, 255))
    source.paste((255, 0, 0), (0, 0, 40, 40))  # red on the left of the stored pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    exif[0x010F] = "SecretCam"
    path = tmp_path / "rotated.jpg"
    source.save(path, exif=exif, quality=95)
    assert Image.open(path).getexif()[0x0112] == 6
    image = load_image(path)
    assert image.size == (40, 80), "portrait after EXIF rotation"
    pixels = np.asarray(image)
    assert pixels[10, 20, 0] > 200 and pixels[70, 20, 2] > 200, "stored left side is now on top"
    assert image.info == {} and len(image.getexif()) == 0


def test_png_text_metadata_stripped(tmp_path: Path) -> None:
    from PIL.PngImagePlugin import PngInfo

    meta = PngInfo()
    meta.add_text("Author", "someone")
    path = tmp_path / "meta.png"
    noise(40, 40).save(path, pnginfo=meta)
    assert Image.open(path).info.get("Author") == "someone"
    assert load_image(path).info == {}


def test_pil_input_is_not_modified() -> None:
    source = Image.new("L", (40, 40), 7)
    image = load_image(source)
    assert image is not source and source.mode == "L" and image.mode == "RGB"


def test_animated_gif_gives_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (64, 64), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(path).n_frames == 2
    pixel = np.asarray(load_image(path))[32, 32]
    assert pixel[0] > 200 and pixel[2] < 50


@pytest.mark.parametrize("shape", [(40, 40, 1), (40, 40, 3), (40, 40, 4), (40, 40)])
def test_array_shapes(shape: tuple[int, ...]) -> None:
    array = np.full(shape, 90, np.uint8)
    if len(shape) == 3 and shape[2] == 4:
        array[..., 3] = 255  # opaque: alpha compositing must then leave the colour alone
    image = load_image(array)
    assert image.size == (40, 40) and np.asarray(image)[0, 0, 0] == 90


# --------------------------------------------------------------------------- bad inputs


def assert_refused(source, *words: str) -> str:
    with pytest.raises(ImageError) as caught:
        load_image(source)
    message = str(caught.value)
    for word in words:
        assert word.lower() in message.lower(), message
    return message


def test_image_error_is_a_value_error() -> None:
    assert issubclass(ImageError, ValueError)


def test_random_bytes_refused(tmp_path: Path) -> None:
    path = tmp_path / "noise.jpg"
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    assert_refused(path, "not an image", "JPEG")
    assert_refused(b"hello, not an image", "not an image")


def test_truncated_jpeg_refused(tmp_path: Path) -> None:
    data = encoded(noise(200, 200), "JPEG", quality=90)
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    assert_refused(path, "truncated", "again")


def test_lazily_opened_truncated_pil_image_refused() -> None:
    data = encoded(noise(200, 200), "JPEG", quality=90)
    lazy = Image.open(io.BytesIO(data[: len(data) // 2]))  # only the header is read so far
    assert_refused(lazy, "truncated")


def test_empty_file_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    assert_refused(path, "empty", "0 bytes")
    assert_refused(b"", "empty")


def test_missing_file_and_wrong_type_refused(tmp_path: Path) -> None:
    assert_refused(tmp_path / "nope.jpg", "does not exist")
    assert_refused(42, "int")
    assert_refused(np.zeros((40, 40, 2), np.uint8), "shape")


@pytest.mark.parametrize("side", [8000, 20000])
def test_decompression_bomb_refused_before_decoding(side: int) -> None:
    # 8000^2 = 64 MP trips our 50 MP limit; 20000^2 = 400 MP trips Pillow's own guard at open time.
    message = assert_refused(png_header_only(side, side), "MP")
    assert "50" in message or "decode" in message


def test_tiny_image_refused() -> None:
    message = assert_refused(Image.new("RGB", (8, 8)), "too small", "face")
    assert str(faces.MIN_SIDE) in message
    assert_refused(encoded(Image.new("RGB", (8, 200)), "PNG"), "too small")


# --------------------------------------------------------------------------- detection


def test_detects_one_sensible_face_on_every_fgnet_photo(fgnet_photos, fgnet_faces) -> None:
    for name, photo in fgnet_photos.items():
        found = fgnet_faces[name]
        assert found, f"no face on {name}"
        face = found[0]
        width, height = photo.size
        x0, y0, x1, y1 = face.box
        assert face.score >= faces.DEFAULT_SCORE_THRESHOLD
        assert -0.05 * width <= x0 < x1 <= 1.05 * width and -0.05 * height <= y0 < y1 <= 1.05 * height
        assert 0.2 * width < face.width < width, f"{name}: implausible face width {face.width} in {width}"
        assert 0.6 < face.height / face.width < 2.0
        right_eye, left_eye, nose, mouth_right, mouth_left = face.landmarks
        assert right_eye[0] < left_eye[0] and mouth_right[0] < mouth_left[0], "subject's right is image left"
        assert max(right_eye[1], left_eye[1]) < nose[1] < min(mouth_right[1], mouth_left[1])
        assert all(x0 <= x <= x1 and y0 <= y <= y1 for x, y in face.landmarks)


def test_no_face_in_a_gradient() -> None:
    assert detect_faces(gradient()) == []


def test_big_photo_is_downscaled_and_boxes_mapped_back(fgnet_photos, fgnet_faces) -> None:
    name = sorted(fgnet_photos)[0]
    photo, small = fgnet_photos[name], fgnet_faces[name][0]
    big = photo.resize((photo.width * 3, photo.height * 3), Image.BICUBIC)  # > 640: detected on a downscale
    face = detect_faces(big)[0]
    expected = np.array(small.box) * 3
    assert faces.quad_iou(faces.crop_quad(face.box, CropSpec(margin=0.0)), expected) > 0.85
    assert np.allclose(np.array(face.landmarks), np.array(small.landmarks) * 3, atol=0.06 * small.width * 3)


def test_faces_sorted_largest_first(fgnet_photos) -> None:
    photo = next(iter(fgnet_photos.values()))
    canvas = Image.new("RGB", (900, 700), (120, 130, 140))
    canvas.paste(photo.resize((photo.width // 2, photo.height // 2)), (20, 20))
    canvas.paste(photo, (420, 100))
    found = detect_faces(canvas)
    assert len(found) >= 2
    areas = [f.width * f.height for f in found]
    assert areas == sorted(areas, reverse=True) and found[0].box[0] > 400


def test_detection_is_thread_safe(fgnet_photos) -> None:
    photos = list(fgnet_photos.values())[:4]
    serial = [detect_faces(p)[0].box for p in photos]
    results: dict[int, list] = {}

    def work(i: int) -> None:
        results[i] = [detect_faces(photos[(i + k) % 4])[0].box for k in range(4)]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, boxes in results.items():
        for k, box in enumerate(boxes):
            assert np.allclose(box, serial[(i + k) % 4], atol=1e-3)


# --------------------------------------------------------------------------- crop geometry


def test_expand_box_by_hand() -> None:
    # box 100 wide, 50 high: 40 px more left and right, 20 px more above and below
    assert expand_box((10, 20, 110, 70), 0.4) == pytest.approx((-30, 0, 150, 90))
    assert expand_box((10, 20, 110, 70), 0.0, square=True) == pytest.approx((10, -5, 110, 95))
    assert expand_box((10, 20, 110, 70), -0.1) == pytest.approx((20, 25, 100, 65))


def test_box_crop_inside_the_photo_is_pixel_exact() -> None:
    photo = noise(300, 200)
    crop = crop_face(photo, (100, 60, 150, 110), CropSpec(style="box", margin=0.4))  # -> (80, 40, 170, 130)
    assert crop.size == (90, 90)
    np.testing.assert_array_equal(np.asarray(crop), np.asarray(photo.crop((80, 40, 170, 130))))


@pytest.mark.parametrize("pad", ["black", "edge", "reflect"])
def test_crop_past_the_edge_is_padded(pad: str) -> None:
    photo = noise(100, 100, seed=3)
    crop = np.asarray(crop_face(photo, (0, 0, 50, 50), CropSpec(margin=0.4), pad=pad))  # -> (-20, -20, 70, 70)
    assert crop.shape == (90, 90, 3)
    np.testing.assert_array_equal(crop[20:, 20:], np.asarray(photo)[:70, :70])
    if pad == "black":
        assert (crop[:20] == 0).all() and (crop[:, :20] == 0).all()
    elif pad == "edge":
        np.testing.assert_array_equal(crop[5, 20:], np.asarray(photo)[0, :70])
    else:
        np.testing.assert_array_equal(crop[19, 20:], np.asarray(photo)[1, :70])


def test_aligned_quad_by_hand() -> None:
    level = [(40, 50), (60, 50), (50, 60), (42, 70), (58, 70)]
    # eye distance 20 -> 40, eye-to-mouth 20 -> 36: half side 40; centre 0.1 x 20 below the eyes
    quad = faces.aligned_quad(level, scale=1.0, shift=0.1)
    np.testing.assert_allclose(quad, [[10, 12], [90, 12], [90, 92], [10, 92]], atol=1e-9)
    angle = np.deg2rad(30)
    turn = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    turned = faces.aligned_quad((np.array(level) - 50) @ turn.T + 50, scale=1.0, shift=0.1)
    top_edge = turned[1] - turned[0]
    assert np.degrees(np.arctan2(top_edge[1], top_edge[0])) == pytest.approx(30, abs=1e-6)
    assert np.hypot(*top_edge) == pytest.approx(80)


def eye_angle(face: Face) -> float:
    (rx, ry), (lx, ly) = face.landmarks[:2]
    return float(np.degrees(np.arctan2(ly - ry, lx - rx)))


def test_aligned_crop_undoes_head_tilt(fgnet_photos) -> None:
    photo = next(iter(fgnet_photos.values()))
    # 15 degrees: YuNet's landmarks under-report bigger tilts (25 degrees reads as about 20), so
    # the crop then straightens only most of the way.
    tilted = photo.rotate(15, resample=Image.BICUBIC, expand=True, fillcolor=(128, 128, 128))
    angles = []
    for image in (photo, tilted):
        face = detect_faces(image)[0]
        crop = crop_face(image, face, CropSpec(style="aligned", align_scale=0.8, align_shift=0.3))
        assert crop.width == crop.height
        angles.append((eye_angle(face), eye_angle(detect_faces(crop)[0])))
    (plain_in, plain_out), (tilted_in, tilted_out) = angles
    assert abs(tilted_in - plain_in) > 10, "the input really is turned"
    assert abs(tilted_out - plain_out) < 3, "the aligned crop looks the same whatever the tilt"
    assert abs(tilted_out) < 10


def test_aligned_needs_landmarks_and_bad_options_raise() -> None:
    with pytest.raises(ValueError, match="landmarks"):
        crop_face(noise(50, 50), (0, 0, 40, 40), CropSpec(style="aligned"))
    with pytest.raises(ValueError, match="style"):
        CropSpec(style="round")
    with pytest.raises(ValueError, match="pad"):
        crop_face(noise(50, 50), (0, 0, 40, 40), pad="mirror")


def test_largest_face_crop_follows_settings(fgnet_photos, fgnet_faces) -> None:
    name = sorted(fgnet_photos)[1]
    photo, face = fgnet_photos[name], fgnet_faces[name][0]
    crop = faces.largest_face_crop(photo, CropSpec(margin=0.4))
    assert crop.size == pytest.approx((face.width * 1.8, face.height * 1.8), abs=2)
    aligned = faces.largest_face_crop(photo, AgeSettings(crop_style="aligned", align_scale=0.6, align_shift=0.5).crop)
    assert aligned.width == aligned.height and aligned.width < crop.width
    assert faces.largest_face_crop(gradient()) is None


# --------------------------------------------------------------------------- calibration


def test_calibration_recovers_a_known_crop(fgnet_photos, fgnet_faces) -> None:
    photos = [(fgnet_photos[n], fgnet_faces[n][0]) for n in sorted(fgnet_photos)]
    square = [crop_face(p, f, CropSpec(style="square", margin=0.3)) for p, f in photos]
    found = faces.calibrate_crop(square * 2)
    assert found.style == "square" and found.margin == pytest.approx(0.3, abs=0.051)
    aligned = [crop_face(p, f, CropSpec(style="aligned", align_scale=0.8, align_shift=0.3)) for p, f in photos]
    fit = faces.fit_crop(aligned * 2)
    assert fit.crop.style == "aligned"
    assert fit.crop.align_scale == pytest.approx(0.8, rel=0.1)
    assert fit.crop.align_shift == pytest.approx(0.3, abs=0.12)


def test_utkface_chips_need_the_aligned_crop_not_appa_margin(shared_dir: Path) -> None:
    chips = [
        Image.open(p).convert("RGB") for p in sorted((shared_dir / "data" / "utkface" / "images").glob("*.jpg"))[:24]
    ]
    fit = faces.fit_crop(chips)
    assert fit.detected >= 22
    aligned = max(v for k, v in fit.iou.items() if k.startswith("aligned"))
    assert fit.crop.style == "aligned" and aligned > 0.8
    assert fit.iou["box margin=+0.40"] < aligned - 0.3, "APPA-REAL's 40% margin frames UTKFace chips badly"
