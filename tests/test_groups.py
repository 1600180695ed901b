"""Shoppers by age group (age_model.groups, `predict --bands`, the tab's function): bands, the
uncertain rule, folders, zips, videos with the box tracker, Dataset.map, and every bad input."""

from __future__ import annotations

import csv
import io
import json
import re
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from age_model import predict as cli
from age_model.groups import (
    NO_FACE,
    UNCERTAIN,
    UNREADABLE,
    Bands,
    BoxTracker,
    FaceRow,
    FaceRows,
    GroupCounter,
    Limits,
    report_from_rows,
    safe_member_name,
    summarise,
    write_csv,
)
from age_model.predictor import AgePredictor, FaceEstimate, PhotoResult
from tests.groups_support import Placed, Scene, three_faces_video, write_video, zip_of

DEFAULT_NAMES = ["0-17", "18-24", "25-34", "35-44", "45-54", "55-64", "65+"]


@pytest.fixture(scope="module")
def predictor(tiny_model_dir: Path) -> AgePredictor:
    return AgePredictor(tiny_model_dir, device="cpu")


@pytest.fixture(scope="module")
def images(fixture_dir: Path) -> Path:
    return fixture_dir / "images"


@pytest.fixture(scope="module")
def photos(images: Path) -> list[Path]:
    return sorted(images.glob("fgnet_*"))[:4]


@pytest.fixture(scope="module")
def video(images: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return three_faces_video(tmp_path_factory.mktemp("video") / "entrance.mp4", images)


class FakePredictor:
    """Faces from the file name, e.g. ``a_30_2.jpg`` is one face aged 30 ± 2 (``nofaces.jpg`` has none)."""

    tta, score_threshold = True, 0.7

    def predict(self, sources):
        results = []
        for source in sources:
            name = Path(source).stem if isinstance(source, (str, Path)) else source.decode()
            numbers = [float(n) for n in re.findall(r"\d+(?:\.\d+)?", name)]
            faces = [
                FaceEstimate(box=(0.0, 0.0, 10.0, 10.0), age=a, spread=s, score=1.0)
                for a, s in zip(numbers[::2], numbers[1::2])
            ]
            results.append(PhotoResult(faces=faces, size=(10, 10)))
        return results


# --------------------------------------------------------------------------- bands and the rule


def test_default_bands_and_the_uncertain_rule() -> None:
    bands = Bands()
    assert bands.names == DEFAULT_NAMES
    assert [bands.name(a) for a in (-3, 0, 17.99, 18, 24.9, 25, 64.9, 65, 130)] == [
        "0-17",
        "0-17",
        "0-17",
        "18-24",
        "18-24",
        "25-34",
        "55-64",
        "65+",
        "65+",
    ]
    assert bands.classify(30, 4) == ("25-34", "25-34")  # 26-34 stays inside
    assert bands.classify(30, 5.5) == (UNCERTAIN, "25-34")  # 24.5-35.5 crosses both edges
    assert bands.classify(2, 10) == ("0-17", "0-17")  # below 0 is still 0-17
    assert bands.classify(80, 14) == ("65+", "65+")  # the open band has no upper edge
    assert bands.classify(16, 2) == (UNCERTAIN, "0-17")  # 18.0 is already 18-24


def test_bands_are_configurable_and_checked() -> None:
    assert Bands.parse("18,25,35,45,55,65") == Bands()
    assert Bands.parse("0-17, 18-24, 25+").names == ["0-17", "18-24", "25+"]
    assert Bands.parse("13,18,65").names == ["0-12", "13-17", "18-64", "65+"]
    for bad in ("25,18", "0,18", "18,x", "0-17,19-24,25+", "5-17,18+", "0-17,18-24", "18,18", "18.5"):
        with pytest.raises(ValueError, match="Band"):
            Bands.parse(bad)


def test_summary_counts_and_shares_over_rows() -> None:
    bands = Bands()
    rows = [
        FaceRow("x", 0, 0, 1, 1, age, spread, *bands.classify(age, spread))
        for age, spread in ((20, 1), (21, 2), (30, 2), (30, 9), (70, 3))
    ]
    rows.append(FaceRow("y", 0, 0, 0, 0, None, None, NO_FACE, ""))  # a photo without a face counts nowhere
    lines = {line.band: line for line in summarise(rows, bands)}
    assert list(lines) == DEFAULT_NAMES + [UNCERTAIN, "total"]
    assert (lines["18-24"].faces, lines["18-24"].share) == (2, pytest.approx(0.4))
    assert (lines["25-34"].faces, lines["25-34"].by_estimate) == (1, 2)
    assert (lines[UNCERTAIN].faces, lines["65+"].faces, lines["total"].faces) == (1, 1, 5)
    assert sum(line.faces for line in lines.values() if line.band != "total") == 5
    assert sum(lines[name].share_by_estimate for name in DEFAULT_NAMES) == pytest.approx(1.0)
    assert summarise([], bands)[-1].faces == 0


def test_a_run_with_known_ages(tmp_path: Path) -> None:
    for name in ("a_20_1.jpg", "b_30_2_31_9.jpg", "c_70_3.jpg", "nofaces.jpg"):
        (tmp_path / name).write_bytes(b"x")
    report = GroupCounter(FakePredictor()).run([tmp_path])
    assert (report.photos, report.no_face, report.faces) == (4, 1, 4)
    by_band = {line.band: line.faces for line in report.summary()}
    assert by_band == {
        "0-17": 0,
        "18-24": 1,
        "25-34": 1,
        "35-44": 0,
        "45-54": 0,
        "55-64": 0,
        "65+": 1,
        UNCERTAIN: 1,
        "total": 4,
    }
    assert report.rows[0].file == str(tmp_path / "a_20_1.jpg")  # folder members named by the path given


# --------------------------------------------------------------------------- photos, folders, zips


def test_folder_one_row_per_face(predictor: AgePredictor, images: Path) -> None:
    report = GroupCounter(predictor).run([images])
    assert (report.photos, report.no_face, report.problems) == (16, 0, [])
    assert report.faces == len(report.rows) >= 16
    for row in report.rows:
        assert row.file.startswith(f"{images}/") and row.time_s is None and row.frames == 1
        assert row.x0 < row.x1 and row.y0 < row.y1 and row.spread > 0
        assert row.band in DEFAULT_NAMES + [UNCERTAIN] and row.estimate_band in DEFAULT_NAMES
        assert row.band in (UNCERTAIN, row.estimate_band)


def test_zip_read_in_memory(predictor: AgePredictor, photos: list[Path], tmp_path: Path) -> None:
    archive = zip_of(
        tmp_path / "store 7.zip",
        {
            "day1/a.jpg": photos[0].read_bytes(),
            "day1/b.JPG": photos[1].read_bytes(),
            "c.jpg": photos[2].read_bytes(),
            "notes.txt": b"till 3",
            "__MACOSX/day1/._a.jpg": b"junk",
            "day1/.hidden.jpg": b"junk",
            "day2/": b"",
        },
        zipfile.ZIP_DEFLATED,
    )
    before = sorted(p.name for p in tmp_path.iterdir())
    report = GroupCounter(predictor).run([("store 7.zip", archive)])
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing extracted
    assert (report.photos, report.skipped, report.problems) == (3, 3, [])
    assert {r.file for r in report.rows} == {"store 7.zip:day1/a.jpg", "store 7.zip:day1/b.JPG", "store 7.zip:c.jpg"}
    direct = GroupCounter(predictor).run(photos[:3])
    assert sorted(r.age for r in report.rows) == pytest.approx(sorted(r.age for r in direct.rows), abs=1e-3)


# --------------------------------------------------------------------------- video and the tracker


class Box(SimpleNamespace):
    pass


def faces(*boxes: tuple[float, float, float, float]) -> list[Box]:
    return [Box(box=b, age=30.0, spread=2.0) for b in boxes]


def test_tracker_follows_moving_boxes_and_ends_lost_ones() -> None:
    tracker = BoxTracker()
    assert tracker.update(0, 0.0, faces((0, 0, 100, 100), (300, 0, 400, 100))) == []
    assert tracker.update(1, 1.0, faces((40, 0, 140, 100), (305, 5, 405, 105))) == []  # walked 40 px, IoU 0.43
    ended = tracker.update(2, 2.0, faces((80, 0, 180, 100)))  # the second face missed once: kept
    assert ended == [] and len(tracker.active) == 2
    ended = tracker.update(3, 3.0, faces((600, 0, 700, 100)))  # a new face; the second is now lost
    assert len(ended) == 1 and ended[0].first_box == (300.0, 0.0, 400.0, 100.0) and len(ended[0].ages) == 2
    rest = tracker.finish()
    assert sorted(len(t.ages) for t in rest) == [1, 3]
    assert tracker.active == []


def test_tracker_never_merges_two_faces_in_one_frame() -> None:
    tracker = BoxTracker()
    tracker.update(0, 0.0, faces((0, 0, 100, 100)))
    tracker.update(1, 1.0, faces((5, 0, 105, 100), (10, 0, 110, 100)))  # both overlap the one track
    assert len(tracker.finish()) == 2


def test_video_counts_each_face_once(predictor: AgePredictor, video: Path) -> None:
    seen = []
    report = GroupCounter(predictor, every_seconds=0.4).run([video], lambda f, m: seen.append((f, m)))
    assert report.problems == [] and (report.videos, report.photos) == (1, 0)
    assert report.frames == 20 and report.video_seconds == pytest.approx(8.0)
    assert len(report.rows) == report.faces == 3  # 1 face in 0-3 s, none in 3-4 s, 2 in 4-8 s
    rows = sorted(report.rows, key=lambda r: (r.time_s, r.x0))
    assert [(r.time_s, r.frames) for r in rows] == [(0.0, 8), (4.0, 10), (4.0, 10)]
    assert rows[0].until_s == pytest.approx(2.8) and rows[1].until_s == pytest.approx(7.6)
    assert rows[1].x1 <= rows[2].x0  # the left face and the right one
    assert all(Path(r.file).name == "entrance.mp4" and r.band in DEFAULT_NAMES + [UNCERTAIN] for r in rows)
    assert seen[-1] == (1.0, "done") and all(0 <= f <= 1 for f, _ in seen)


def test_video_sampling_and_length_limit(predictor: AgePredictor, video: Path) -> None:
    every_second = GroupCounter(predictor, every_seconds=1.0).run([video])
    assert every_second.frames == 8 and every_second.faces == 3
    capped = GroupCounter(predictor, limits=Limits(video_seconds=2.0)).run([video])
    assert capped.video_seconds == pytest.approx(2.0) and capped.faces == 1 and capped.frames == 2
    assert capped.problems and "only the first" in capped.problems[0]


# --------------------------------------------------------------------------- bad inputs


def test_bad_zips_are_refused_whole(predictor: AgePredictor, photos: list[Path], tmp_path: Path) -> None:
    photo = photos[0].read_bytes()
    good = zip_of(tmp_path / "good.zip", {"a.jpg": photo, "b.jpg": photo})
    corrupt = tmp_path / "corrupt.zip"
    corrupt.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 4)
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(good.read_bytes()[: len(photo) // 2])
    zip_of(tmp_path / "many.zip", {f"{i}.jpg": photo for i in range(4)})
    zip_of(tmp_path / "bomb.zip", {"a.jpg": photo, "big.png": bytes(6 * 2**20)}, zipfile.ZIP_DEFLATED)
    huge = zip_of(tmp_path / "huge.zip", {"a.jpg": photo, "b.jpg": photo})
    limits = Limits(zip_members=3, zip_bytes=10 * 2**20, member_bytes=8 * 2**20)
    expected = {
        "corrupt.zip": "not a readable zip file",
        "truncated.zip": "not a readable zip file",
        "many.zip": "4 files, more than the 3 allowed",
        "bomb.zip": "zip bomb",
    }
    for name, text in expected.items():
        report = GroupCounter(predictor, limits=limits).run([(name, tmp_path / name)])  # named as the app names uploads
        assert report.photos == 0 and len(report.problems) == 1 and text in report.problems[0], (name, report.problems)
        assert report.problems[0].startswith(name) and str(tmp_path) not in report.problems[0]
    small = Limits(zip_bytes=len(photo) + 10)
    assert "would unpack to" in GroupCounter(predictor, limits=small).run([huge]).problems[0]
    tight = Limits(member_bytes=len(photo) - 1)
    assert "zip bomb" in GroupCounter(predictor, limits=tight).run([huge]).problems[0]
    assert GroupCounter(predictor, limits=limits).run([good]).photos == 2


def test_a_member_bigger_than_it_declares_is_not_read(
    predictor: AgePredictor, photos: list[Path], tmp_path: Path
) -> None:
    """A forged central directory (a small declared size over a big member) reads only the declared bytes."""
    photo = photos[0].read_bytes()
    archive = zip_of(tmp_path / "forged.zip", {"a.jpg": photo})
    data = bytearray(archive.read_bytes())
    directory = data.rindex(b"PK\x01\x02")
    data[directory + 24 : directory + 28] = (100).to_bytes(4, "little")  # uncompressed size: 100 bytes
    archive.write_bytes(bytes(data))
    report = GroupCounter(predictor).run([archive])
    assert report.photos == 0 and len(report.problems) == 1 and "forged.zip:a.jpg" in report.problems[0]


def test_a_zip_declaring_too_many_entries_is_refused_before_parsing(
    predictor: AgePredictor, photos: list[Path], tmp_path: Path
) -> None:
    archive = zip_of(tmp_path / "declares.zip", {"a.jpg": photos[0].read_bytes()})
    data = bytearray(archive.read_bytes())
    end = data.rindex(b"PK\x05\x06")
    data[end + 8 : end + 12] = (60000).to_bytes(2, "little") * 2  # entries on this disk, entries in all
    archive.write_bytes(bytes(data))
    report = GroupCounter(predictor, limits=Limits(zip_members=1000)).run([("declares.zip", archive)])
    assert report.problems == [
        "declares.zip: 60,000 files, more than the 1,000 allowed in one zip; split it into smaller zips."
    ]


@pytest.mark.parametrize(
    "member", ["../evil.jpg", "day1/../../evil.jpg", "/etc/evil.jpg", "C:/evil.jpg", "..\\evil.jpg"]
)
def test_path_traversal_names_refuse_the_zip(
    predictor: AgePredictor, photos: list[Path], tmp_path: Path, member: str
) -> None:
    archive = tmp_path / "traversal.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("fine.jpg", photos[0].read_bytes())
        handle.writestr(zipfile.ZipInfo(member), photos[0].read_bytes())
    report = GroupCounter(predictor).run([archive])
    assert report.photos == 0 and "names files outside itself" in report.problems[0]
    assert not (tmp_path.parent / "evil.jpg").exists()


def test_safe_member_names() -> None:
    assert all(safe_member_name(n) for n in ("a.jpg", "day 1/a.jpg", "a..b.jpg", "..a.jpg"))
    assert not any(
        safe_member_name(n) for n in ("", "/a.jpg", "\\a.jpg", "../a.jpg", "a/../../b.jpg", "D:a.jpg", "a\x00.jpg")
    )


def test_bad_videos_and_folders(predictor: AgePredictor, video: Path, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(range(256)) * 8)  # an MP4 header, then nothing
    playlist = tmp_path / "playlist.mp4"
    playlist.write_text("#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:0\n#EXTINF:10.0,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n")
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(video.read_bytes()[:2000])
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no photos here")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    cases = {
        garbage: "could not be opened",
        playlist: "not a video file agecheck reads",
        truncated: "could not be opened|no frame could be read",
        empty: "the folder has no photos",
        text: "not a photo, zip or video",
        tmp_path / "missing.jpg": "no such file",
    }
    for path, text_expected in cases.items():
        report = GroupCounter(predictor).run([path])
        assert not report.counted_anything and len(report.problems) == 1, (path, report.problems)
        assert re.search(text_expected, report.problems[0]), (path, report.problems)


def test_what_was_counted_is_kept(predictor: AgePredictor, photos: list[Path], video: Path, tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.zip"
    corrupt.write_bytes(b"not a zip")
    broken_photo = tmp_path / "broken.jpg"
    broken_photo.write_bytes(b"not a jpeg")
    bad_video = tmp_path / "bad.mp4"
    bad_video.write_bytes(b"RIFF\x00\x00\x00\x00AVI LIST" + bytes(500))
    good_zip = zip_of(tmp_path / "good.zip", {"a.jpg": photos[1].read_bytes()})
    report = GroupCounter(predictor).run([photos[0], corrupt, broken_photo, good_zip, bad_video, video])
    assert (report.photos, report.videos) == (2, 1) and report.faces == 2 + 3
    assert [Path(p.split(":")[0]).name for p in report.problems] == ["corrupt.zip", "broken.jpg", "bad.mp4"]


def test_photo_limit_stops_and_keeps(predictor: AgePredictor, images: Path) -> None:
    report = GroupCounter(predictor, limits=Limits(photos=5), photo_batch=2).run([images])
    assert report.photos == 5 and report.faces >= 5
    assert (
        len(report.problems) == 1 and "Stopped after 5 photos" in report.problems[0] and "11 more" in report.problems[0]
    )


# --------------------------------------------------------------------------- Dataset.map


def test_face_rows_as_a_dataset_map(predictor: AgePredictor, photos: list[Path], tmp_path: Path) -> None:
    from datasets import Dataset, Features, Value
    from datasets import Image as ImageFeature
    from PIL import Image

    Image.new("RGB", (120, 100), (128, 128, 128)).save(tmp_path / "blank.png")
    files = [str(p) for p in photos[:2]] + [str(tmp_path / "blank.png")]
    dataset = Dataset.from_dict(
        {"image": files, "store": ["north", "north", "south"]},
        features=Features({"image": ImageFeature(), "store": Value("string")}),
    )
    mapper = FaceRows(predictor=predictor)
    rows = dataset.map(
        mapper,
        batched=True,
        batch_size=2,
        remove_columns=dataset.column_names,
        features=FaceRows.features(),
        keep_in_memory=True,
    )
    assert rows.column_names == list(FaceRows.features())
    faces = [r for r in rows if r["age"] is not None]
    assert len(faces) == len(GroupCounter(predictor).run(photos[:2]).rows)
    assert rows[-1]["band"] == NO_FACE and rows[-1]["age"] is None
    report = report_from_rows(rows)
    assert (report.photos, report.no_face, report.faces) == (3, 1, len(faces))
    # Undecoded bytes work too, and an unreadable image is a row, not a crash.
    raw = Dataset.from_dict(
        {"image": [{"bytes": b"junk", "path": "junk.jpg"}, {"bytes": photos[0].read_bytes(), "path": "p.jpg"}]},
        features=Features({"image": ImageFeature(decode=False)}),
    )
    mapped = raw.map(
        FaceRows(predictor=predictor),
        batched=True,
        remove_columns=["image"],
        features=FaceRows.features(),
        keep_in_memory=True,
    )
    assert mapped[0]["band"] == UNREADABLE and "not an image" in mapped[0]["note"] and mapped[1]["file"] == "p.jpg"
    assert report_from_rows(mapped).problems[0].startswith("junk.jpg:")


def test_face_rows_pickles_without_its_model(tiny_model_dir: Path) -> None:
    import pickle

    mapper = FaceRows(tiny_model_dir)
    assert mapper.predictor is not None
    clone = pickle.loads(pickle.dumps(mapper))
    assert clone._predictor is None and clone.model == str(tiny_model_dir)


# --------------------------------------------------------------------------- the command line


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_cli_folder_zip_and_video(
    tiny_model_dir: Path, images: Path, photos: list[Path], video: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    archive = zip_of(tmp_path / "till.zip", {"a.jpg": photos[0].read_bytes(), "b.jpg": photos[1].read_bytes()})
    out = tmp_path / "faces.csv"
    summary = tmp_path / "summary.csv"
    code = cli.main(
        [
            "--model",
            str(tiny_model_dir),
            "--bands",
            "--csv",
            str(out),
            "--summary-csv",
            str(summary),
            "--every",
            "1",
            str(images),
            str(archive),
            str(video),
        ]
    )
    printed = capsys.readouterr()
    assert code == 0, printed.err
    rows = read_csv(out)
    assert list(rows[0]) == [
        "file",
        "time_s",
        "until_s",
        "frames",
        "x0",
        "y0",
        "x1",
        "y1",
        "age",
        "spread",
        "band",
        "estimate_band",
    ]
    assert len(rows) == 16 + 2 + 3
    video_rows = [r for r in rows if r["file"] == str(video)]
    assert len(video_rows) == 3 and all(r["time_s"] != "" and int(r["frames"]) >= 3 for r in video_rows)
    assert {r["file"] for r in rows if r["file"].startswith(str(archive))} == {f"{archive}:a.jpg", f"{archive}:b.jpg"}
    assert all(r["time_s"] == "" for r in rows if r["file"] != str(video))
    lines = read_csv(summary)
    assert [line["band"] for line in lines] == DEFAULT_NAMES + [UNCERTAIN, "total"]
    assert lines[-1]["faces"] == "21" and sum(int(line["faces"]) for line in lines[:-1]) == 21
    assert (
        "Faces by age band: 21 faces in 18 photos (0 without a face) and 1 video (8 s, 8 frames sampled)" in printed.out
    )
    assert "uncertain" in printed.out and "rows written to" in printed.out and "[100%] done" in printed.err


def test_cli_table_json_and_bands(tiny_model_dir: Path, photos: list[Path], capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["--model", str(tiny_model_dir), "--bands", "--band-edges", "0-17,18-39,40+", str(photos[0])]) == 0
    out = capsys.readouterr().out
    assert str(photos[0]) in out and "18-39" in out and "40+" in out and "45-54" not in out
    assert cli.main(["--model", str(tiny_model_dir), "--bands", "--json", str(photos[0]), str(photos[1])]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 3 and lines[0]["file"] == str(photos[0]) and "band" in lines[0]
    assert (
        lines[-1]["faces"] == 2
        and lines[-1]["summary"][-1]["band"] == "total"
        and lines[-1]["rule"].startswith("uncertain")
    )


def test_cli_errors(tiny_model_dir: Path, photos: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["--model", str(tiny_model_dir), "--csv", "x.csv", str(photos[0])]) == cli.EXIT_USAGE
    assert "only go with --bands" in capsys.readouterr().err
    assert (
        cli.main(["--model", str(tiny_model_dir), "--bands", "--band-edges", "30,20", str(photos[0])]) == cli.EXIT_USAGE
    )
    assert "--band-edges" in capsys.readouterr().err
    assert cli.main(["--model", str(tiny_model_dir), "--bands", "--every", "0", str(photos[0])]) == cli.EXIT_USAGE
    capsys.readouterr()
    corrupt = tmp_path / "corrupt.zip"
    corrupt.write_bytes(b"nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["--model", str(tiny_model_dir), "--bands", str(corrupt), str(empty)]) == cli.EXIT_ALL_FAILED
    err = capsys.readouterr().err
    assert f"warning: {corrupt}: not a readable zip" in err
    assert "the folder has no photos" in err


def test_cli_num_proc_gives_the_same_rows(
    tiny_model_dir: Path, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    one, two = tmp_path / "one.csv", tmp_path / "two.csv"
    base = ["--model", str(tiny_model_dir), "--bands", "--no-tta"]
    assert cli.main(base + ["--csv", str(one), str(images)]) == 0
    assert cli.main(base + ["--num-proc", "2", "--csv", str(two), str(images)]) == 0
    capsys.readouterr()
    key = lambda r: (r["file"], float(r["x0"]))  # noqa: E731
    first, second = sorted(read_csv(one), key=key), sorted(read_csv(two), key=key)
    assert [r["file"] for r in first] == [r["file"] for r in second] and len(first) == 16
    assert [float(r["age"]) for r in first] == pytest.approx([float(r["age"]) for r in second], abs=0.05)


def test_write_csv_skips_photos_without_faces() -> None:
    buffer = io.StringIO()
    write_csv(
        [
            FaceRow("a.jpg", 1, 2, 3, 4, 30.0, 2.0, "25-34", "25-34"),
            FaceRow("b.jpg", 0, 0, 0, 0, None, None, NO_FACE, ""),
        ],
        buffer,
    )
    assert buffer.getvalue().splitlines()[1:] == ["a.jpg,,,1,1,2,3,4,30.0,2.0,25-34,25-34"]


# --------------------------------------------------------------------------- the tab's function (no browser)


def test_tab_function_counts_and_forgets_uploads(
    predictor: AgePredictor, photos: list[Path], video: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gradio as gr

    from age_model.ui.groups_tab import MAX_UPLOADS, count_groups
    from age_model.ui.state import AppState

    uploads = tmp_path / "uploads"
    uploads.mkdir()
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(uploads))
    state = AppState(model="tiny", predictor=predictor, upload_folder=uploads)
    sent = []
    for source in (photos[0], photos[1], video):
        target = uploads / "h" / source.name if source != video else uploads / "v" / source.name
        target.parent.mkdir(exist_ok=True)
        target.write_bytes(source.read_bytes())
        sent.append(str(target))
    outside = tmp_path / "mine.jpg"
    outside.write_bytes(photos[2].read_bytes())
    status, chart, table, csv_path, cleared = count_groups(state, sent + [str(outside)], 1.0)
    assert cleared is None and "6 faces in 3 photos (0 without a face) and 1 video" in status
    assert list(chart.columns) == ["band", "faces", "kind"] and chart["faces"].sum() == 6 and len(chart) == 14
    assert len(table) == 6 and {row[0] for row in table} == {photos[0].name, photos[1].name, video.name, "mine.jpg"}
    assert len(read_csv(Path(csv_path))) == 6 and Path(csv_path).is_relative_to(uploads)
    assert not any(Path(p).exists() for p in sent) and outside.exists()  # uploads deleted; other files never
    for bad, message in (
        ([], "No files yet"),
        ([1, 2], "list of uploaded files"),
        (["x"] * (MAX_UPLOADS + 1), "too many"),
    ):
        with pytest.raises(gr.Error, match=message):
            count_groups(state, bad, 1.0)
    for every in ("1", 0.1, float("nan"), True):
        with pytest.raises(gr.Error, match="time between video frames"):
            count_groups(state, [str(outside)], every)
    junk = uploads / "junk.zip"
    junk.write_bytes(b"junk")
    with pytest.raises(gr.Error, match="Nothing could be counted. junk.zip: not a readable zip") as error:
        count_groups(state, [str(junk)], 1.0)
    assert str(uploads) not in str(error.value)


def test_tab_refuses_without_a_model() -> None:
    import gradio as gr

    from age_model.ui.groups_tab import count_groups
    from age_model.ui.state import AppState

    with pytest.raises(gr.Error, match="No age model is loaded"):
        count_groups(AppState(model="none", model_error="missing"), ["a.jpg"], 1.0)


def test_synthetic_video_has_the_faces_it_claims(images: Path, tmp_path: Path) -> None:
    """The fixture video: every frame's face count as designed (the tracker test relies on it)."""
    import cv2

    from age_model.faces import detect_faces, load_image

    path = write_video(
        tmp_path / "v.mp4",
        [
            Scene(0.4, [Placed(images / "fgnet_082A18.JPG", 150, 80, 320)]),
            Scene(0.4, []),
            Scene(
                0.4,
                [Placed(images / "fgnet_001A29.JPG", 20, 100, 300), Placed(images / "fgnet_071A43.JPG", 340, 100, 300)],
            ),
        ],
    )
    capture = cv2.VideoCapture(str(path))
    counts = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        counts.append(len(detect_faces(load_image(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)))))
    assert counts == [1, 1, 0, 0, 2, 2]
