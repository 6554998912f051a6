"""SOURCE expansion (files, folders, globs, @lists, COCO files) and reading images and video frames."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from vfnet.server.coco import CocoDetection
from vfnet.server.predict.sources import IMAGE_SUFFIXES, VIDEO_SUFFIXES, Item, Source, SourceError, expand_sources, read_items

from .conftest import make_scenes, write_video


def touch(path: Path, data: bytes = b"") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data or path.name.encode())
    return path


def paths(sources: list[Source]) -> list[str]:
    return [s.path for s in sources]


@pytest.fixture
def tree(tmp_path, monkeypatch) -> Path:
    """A folder `data/` (relative: the tests run in tmp_path) with images, a video, hidden files and others."""
    monkeypatch.chdir(tmp_path)
    for name in ["b.jpg", "a.PNG", "sub/c.mp4", "sub/deeper/e.webp", "sub-2/d.jpeg", ".hidden.jpg", ".cache/f.jpg", "notes.txt", "coco.json", "sub/clip.MOV"]:
        touch(Path("data", name))
    return Path("data")


def test_suffixes_are_lower_case_and_is_video_ignores_case():
    assert all(s == s.lower() and s.startswith(".") for s in IMAGE_SUFFIXES | VIDEO_SUFFIXES)
    assert not IMAGE_SUFFIXES & VIDEO_SUFFIXES
    assert Source("a/b.MP4").is_video and Source("c.mkv").is_video and Source("d.ts").is_video
    assert not Source("a/b.JPG").is_video and not Source("mp4").is_video


def test_file_arguments_are_themselves_in_argument_order(tree):
    assert expand_sources(["data/sub/c.mp4", "data/b.jpg"]) == [Source("data/sub/c.mp4"), Source("data/b.jpg")]


def test_folder_is_recursive_sorted_by_path_and_skips_hidden_and_other_suffixes(tree):
    expected = ["data/a.PNG", "data/b.jpg", "data/sub/c.mp4", "data/sub/clip.MOV", "data/sub/deeper/e.webp", "data/sub-2/d.jpeg"]
    assert paths(expand_sources(["data"])) == expected  # component by component: sub/ before sub-2/
    assert paths(expand_sources(["data/"])) == expected
    assert paths(expand_sources([os.path.abspath("data")])) == [os.path.abspath(p) for p in expected]


def test_glob_matches_media_files_sorted_and_double_star_recurses(tree):
    assert paths(expand_sources(["data/*"])) == ["data/a.PNG", "data/b.jpg"]  # not notes.txt, coco.json, the folders or .hidden.jpg
    assert paths(expand_sources(["data/**/*.jp*g"])) == ["data/b.jpg", "data/sub-2/d.jpeg"]  # `**` includes the top folder, not .cache/
    assert paths(expand_sources(["data/s[u]b/*"])) == ["data/sub/c.mp4", "data/sub/clip.MOV"]
    assert paths(expand_sources(["data/.*"])) == ["data/.hidden.jpg"]  # a pattern that spells the dot matches hidden files


def test_list_file_skips_comments_and_blanks_and_resolves_relative_lines(tree):
    absolute = os.path.abspath("data/sub/c.mp4")
    Path("lists").mkdir()
    Path("lists/run.txt").write_text(f"# what to run\n\n../data/b.jpg\n  ../data/sub-2  \n{absolute}\n# ../data/a.PNG\n../data/sub/deeper/*.webp\n")
    assert paths(expand_sources(["@lists/run.txt"])) == ["lists/../data/b.jpg", "lists/../data/sub-2/d.jpeg", absolute, "lists/../data/sub/deeper/e.webp"]


def test_list_file_errors_name_the_list_and_the_line(tree):
    Path("run.txt").write_text("data/b.jpg\n# fine\ndata/missing.jpg\n")
    with pytest.raises(SourceError, match=r"^@run.txt line 3: data/missing.jpg: no such file or folder$"):
        expand_sources(["@run.txt"])
    Path("empty.txt").write_text("# nothing\n\n")
    with pytest.raises(SourceError, match=r"^@empty.txt: the list names no file$"):
        expand_sources(["@empty.txt"])
    with pytest.raises(SourceError, match=r"^@nope.txt: cannot read the list: \[Errno 2\] No such file or directory$"):
        expand_sources(["@nope.txt"])


def write_coco(path: Path, images: list[dict]) -> Path:
    path.write_text(json.dumps({"images": images, "annotations": [], "categories": [{"id": 1, "name": "thing"}]}))
    return path


def test_coco_file_keeps_its_order_and_ids_and_finds_images_as_coco_detection_does(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    touch(Path("set/images/b.jpg"), b"bee")
    touch(Path("set/a.png"), b"ay")
    annotations = write_coco(Path("set/annotations.json"), [{"id": 7, "file_name": "images/b.jpg"}, {"id": 3, "file_name": "a.png", "width": 4}])
    sources = expand_sources([str(annotations)])
    assert sources == [Source("set/images/b.jpg", image_id=7), Source("set/a.png", image_id=3)]
    dataset = CocoDetection(annotations)  # sorts by id; match by id
    by_id = {im["id"]: dataset.image_bytes(i) for i, im in enumerate(dataset.images)}
    for source in sources:
        (item,) = read_items(source)
        assert item.data == by_id[source.image_id]


def test_coco_file_errors_name_the_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("bad.json").write_text("{not json")
    with pytest.raises(SourceError, match=r"^bad.json: not JSON: "):
        expand_sources(["bad.json"])
    Path("list.json").write_text("[1, 2]")
    with pytest.raises(SourceError, match=r"^list.json: not a COCO annotation file"):
        expand_sources(["list.json"])
    write_coco(Path("no_name.json"), [{"id": 1}])
    with pytest.raises(SourceError, match=r"^no_name.json: not a COCO annotation file"):
        expand_sources(["no_name.json"])
    write_coco(Path("empty.json"), [])
    with pytest.raises(SourceError, match=r'^empty.json: its "images" list is empty$'):
        expand_sources(["empty.json"])


def test_arguments_that_name_nothing_usable_are_errors_naming_them(tree):
    with pytest.raises(SourceError, match=r"^data/notes.txt: neither an image nor a video suffix"):
        expand_sources(["data/b.jpg", "data/notes.txt"])
    with pytest.raises(SourceError, match=r"^data/missing.jpg: no such file or folder$"):
        expand_sources(["data/missing.jpg"])
    with pytest.raises(SourceError, match=r"^data/\*\.gif: the pattern matches no image or video file$"):
        expand_sources(["data/*.gif"])
    Path("data/.cache/only-hidden").mkdir()
    with pytest.raises(SourceError, match=r"^data/.cache/only-hidden: no image or video file below this folder$"):
        expand_sources(["data/.cache/only-hidden"])
    assert issubclass(SourceError, ValueError)


def test_a_file_named_twice_is_kept_once_where_first_named(tree):
    Path("run.txt").write_text("data/b.jpg\n")
    sources = expand_sources(["data/sub/c.mp4", "data", "./data/b.jpg", "@run.txt", "data/*.jpg"])
    assert paths(sources) == ["data/sub/c.mp4", "data/a.PNG", "data/b.jpg", "data/sub/clip.MOV", "data/sub/deeper/e.webp", "data/sub-2/d.jpeg"]


def test_an_image_is_one_item_with_the_file_bytes(tmp_path):
    image = touch(tmp_path / "x.jpg", b"\xff\xd8 not decoded here")
    (item,) = read_items(Source(str(image), image_id=5))
    assert item == Item(Source(str(image), image_id=5), None, None, b"\xff\xd8 not decoded here")
    assert item.key == (str(image), None)


def test_an_unreadable_image_is_an_error_item(tmp_path):
    (tmp_path / "x.jpg").mkdir()
    (item,) = read_items(Source(str(tmp_path / "x.jpg")))
    assert (item.frame, item.data, item.error) == (None, None, "cannot read: [Errno 21] Is a directory")
    gone = touch(tmp_path / "gone.png")
    (source,) = expand_sources([str(gone)])
    gone.unlink()
    assert [i.error for i in read_items(source)] == ["cannot read: [Errno 2] No such file or directory"]


def test_bad_every_or_max_frames_raise_at_the_call():
    with pytest.raises(ValueError, match="every"):
        read_items(Source("v.mp4"), every=0)
    with pytest.raises(ValueError, match="max_frames"):
        read_items(Source("v.mp4"), max_frames=0)


def test_video_frames_are_rgb_in_order_with_their_times(tmp_path, scenes):
    video = write_video(tmp_path / "clip.mp4", scenes, fps=10)
    items = list(read_items(Source(str(video))))
    assert [i.frame for i in items] == [0, 1, 2, 3, 4, 5]
    assert [i.timestamp for i in items] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.5])
    assert all(i.error is None and i.data.shape == (160, 224, 3) and i.data.dtype == np.uint8 for i in items)
    for i, item in enumerate(items):
        differences = [np.abs(item.data.astype(np.int16) - scene).mean() for scene in scenes]
        assert differences[i] < 3  # lossy, but close (about 1 for mpeg4 here) ...
        assert int(np.argmin(differences)) == i  # ... and closest to its own frame
    assert items[2].key == (str(video), 2)


def test_every_and_max_frames_pick_frames_by_decoded_index(tmp_path, scenes):
    video = Source(str(write_video(tmp_path / "clip.mkv", scenes, fps=5, codec="libx264")))
    assert [(i.frame, i.timestamp) for i in read_items(video, every=2)] == [(0, 0.0), (2, 0.4), (4, 0.8)]
    assert [i.frame for i in read_items(video, every=4)] == [0, 4]
    assert [i.frame for i in read_items(video, every=2, max_frames=2)] == [0, 2]
    assert [i.frame for i in read_items(video, max_frames=1)] == [0]
    assert [i.frame for i in read_items(video, max_frames=100)] == [0, 1, 2, 3, 4, 5]
    assert [i.frame for i in read_items(video, every=100)] == [0]


def test_a_file_that_is_not_a_video_is_one_error_item(tmp_path):
    pytest.importorskip("av")
    noise = tmp_path / "noise.mp4"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    (item,) = read_items(Source(str(noise)))
    assert (item.frame, item.timestamp, item.data) == (None, None, None)
    assert item.error.startswith("not a video PyAV can decode: [Errno 1094995529] Invalid data found when processing input")
    (missing,) = read_items(Source(str(tmp_path / "missing.mkv")))
    assert missing.error == "cannot read: [Errno 2] No such file or directory"


def test_a_file_without_a_video_stream_is_one_error_item(tmp_path):
    av = pytest.importorskip("av")
    path = tmp_path / "sound.mp4"  # an MP4 with one AAC stream: a video suffix, no video in it
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 8000
        container.mux(stream.encode(frame))
        container.mux(stream.encode())
    assert [i.error for i in read_items(Source(str(path)))] == ["not a video PyAV can decode: it has no video stream"]


def test_a_truncated_video_ends_cleanly_or_cannot_be_opened(tmp_path):
    """What FFmpeg does with the first half of a file: Matroska (frames found as they come) decodes
    the whole frames in that half and then ends, with no error; MP4 as written by default keeps its
    index (moov) at the end, so without it the file cannot be opened at all."""
    scenes = make_scenes(40)  # the first (key) frame is over half of a 12-frame file
    for suffix in (".mkv", ".mp4"):
        data = write_video(tmp_path / f"whole{suffix}", scenes).read_bytes()
        (tmp_path / f"half{suffix}").write_bytes(data[: len(data) // 2])
    items = list(read_items(Source(str(tmp_path / "half.mkv"))))
    assert 0 < len(items) < 40
    assert [i.frame for i in items] == list(range(len(items))) and all(i.error is None for i in items)
    (item,) = read_items(Source(str(tmp_path / "half.mp4")))
    assert item.frame is None and item.error.startswith("not a video PyAV can decode: ")


def test_a_decode_error_mid_video_ends_it_with_one_error_item(tmp_path):
    """H.264 without frame delay (tune=zerolatency), its 7th packet overwritten with 0xFF bytes: the
    decoder rejects that packet, so frames 0-5 come out and then the error, at frame 6."""
    av = pytest.importorskip("av")
    video = write_video(tmp_path / "clip.mp4", make_scenes(12), codec="libx264", tune="zerolatency")
    with av.open(str(video)) as container:
        packets = [(p.pos, p.size) for p in container.demux(video=0) if p.size]
    data = bytearray(video.read_bytes())
    position, size = packets[6]
    data[position : position + size] = b"\xff" * size
    video.write_bytes(bytes(data))
    items = list(read_items(Source(str(video))))
    assert [i.frame for i in items] == [0, 1, 2, 3, 4, 5, 6]
    assert all(i.error is None for i in items[:6])
    assert (items[6].data, items[6].timestamp) == (None, None)
    assert items[6].error.startswith("decoding failed: [Errno 1094995529] Invalid data found when processing input")
    assert [i.frame for i in read_items(Source(str(video)), every=4)] == [0, 4, 6]  # the error item whatever `every`


def test_without_pyav_a_video_is_an_error_item_saying_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` now raises ImportError
    (item,) = read_items(Source(str(tmp_path / "clip.mp4")))
    assert (item.frame, item.data) == (None, None)
    assert item.error == "cannot decode videos without PyAV: pip install 'vfnet-serve[predict]'"


def test_uris_are_listed_and_read_through_pyarrow_file_systems(tree, scenes):
    pytest.importorskip("pyarrow")
    write_video(tree / "sub" / "c.mp4", scenes[:3])
    root = f"file://{os.path.abspath('data')}"
    found = paths(expand_sources([root + "/"]))
    assert found == [f"{root}/{p}" for p in ("a.PNG", "b.jpg", "sub/c.mp4", "sub/clip.MOV", "sub/deeper/e.webp", "sub-2/d.jpeg")]
    assert paths(expand_sources([f"{root}/b.jpg", f"{root}/b.jpg", "data/b.jpg"])) == [f"{root}/b.jpg", "data/b.jpg"]
    [image] = read_items(Source(f"{root}/b.jpg"))
    assert image.data == b"b.jpg" and image.error is None
    frames = list(read_items(Source(f"{root}/sub/c.mp4")))
    local = list(read_items(Source("data/sub/c.mp4")))
    assert [f.frame for f in frames] == [0, 1, 2] and all(np.array_equal(a.data, b.data) for a, b in zip(frames, local))
    [missing] = read_items(Source(f"{root}/gone.jpg"))
    assert missing.data is None and missing.error.startswith("cannot read")
    with pytest.raises(SourceError, match="no such file or folder"):
        expand_sources([f"{root}/nothing/"])
    with pytest.raises(SourceError, match="a URI must name an image, a video or a folder"):
        expand_sources([f"{root}/notes.txt"])
    with pytest.raises(SourceError, match="nosuch://bucket/x"):
        expand_sources(["nosuch://bucket/x"])
