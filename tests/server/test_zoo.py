"""The zoo as data: the built-in table, user zoo files, lookup, the cache layout and `vfnet models`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vfnet.server.zoo import (
    BUILT_IN,
    OFFICIAL,
    PRESET_NAMES,
    UNCONVERTIBLE,
    ZooError,
    checkpoint_path,
    converted_path,
    hash_from_file_name,
    load_zoo,
    lookup,
    vfnet_home,
)

R50_2X = "vfnet_r50_fpn_mstrain_2x_coco"
SHA = "0123456789abcdef" * 4


@pytest.fixture(autouse=True)
def _no_user_settings(monkeypatch, tmp_path):
    monkeypatch.delenv("VFNET_ZOO", raising=False)
    monkeypatch.setenv("VFNET_HOME", str(tmp_path / "home"))


def write_zoo(tmp_path, content) -> str:
    path = tmp_path / "zoo.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


def test_the_table_holds_the_eight_official_checkpoints():
    assert len(OFFICIAL) == 8 and len({e.name for e in OFFICIAL}) == 8
    for entry in OFFICIAL:
        assert entry.sha256 == entry.file_name.rsplit("-", 1)[1].removesuffix(".pth") and len(entry.sha256) == 8
        assert entry.url == f"https://download.openmmlab.com/mmdetection/v2.0/vfnet/{entry.name}/{entry.file_name}"
        assert entry.preset in PRESET_NAMES and entry.source == BUILT_IN and entry.input_size == (1333, 800)
        assert 40 < entry.ap_val <= entry.ap_test_dev < 51
    by_name = {e.name: e for e in OFFICIAL}
    assert by_name[R50_2X].aliases == ("vfnet_r50_fpn_ms-2x_coco",) and by_name[R50_2X].sha256 == "7cc75bd2"
    assert (by_name["vfnet_x101_64x4d_fpn_mdconv_c3-c5_mstrain_2x_coco"].ap_val, by_name["vfnet_x101_64x4d_fpn_mdconv_c3-c5_mstrain_2x_coco"].ap_test_dev) == (
        50.4,
        50.8,
    )
    assert {m.name for m in UNCONVERTIBLE} == {"vfnet_r2_101_fpn_mstrain_2x_coco", "vfnet_r2_101_fpn_mdconv_c3-c5_mstrain_2x_coco", "vfnetx"}
    assert all(m.reason for m in UNCONVERTIBLE) and not {m.name for m in UNCONVERTIBLE} & {e.name for e in OFFICIAL}


def test_preset_names_are_the_model_presets():
    presets = pytest.importorskip("vfnet.model.presets")
    assert set(PRESET_NAMES) == set(presets.PRESETS)


def test_hash_from_file_name():
    assert hash_from_file_name("a_20201027pth-6879c318.pth") == "6879c318"
    with pytest.raises(ValueError):
        hash_from_file_name("vfnet_r50.pth")


def test_lookup_by_name_and_by_3x_alias():
    assert lookup(R50_2X).sha256 == "7cc75bd2"
    assert lookup("vfnet_r101-mdconv-c3-c5_fpn_ms-2x_coco").name == "vfnet_r101_fpn_mdconv_c3-c5_mstrain_2x_coco"


def test_unknown_name_suggests_the_closest():
    with pytest.raises(ZooError, match=r"unknown model 'vfnet_r50_fpn_mstrain_2x'.*did you mean 'vfnet_r50_fpn_mstrain_2x_coco'"):
        lookup("vfnet_r50_fpn_mstrain_2x")
    with pytest.raises(ZooError, match="cannot be converted: VFNet-X"):
        lookup("vfnetx")


def test_user_file_overrides_a_built_in_and_adds_a_new_one(tmp_path, monkeypatch):
    path = write_zoo(
        tmp_path,
        [
            {"name": R50_2X, "url": "https://mirror.example/r50.pth", "sha256": SHA.upper(), "preset": "vfnet_r50_fpn"},
            {
                "name": "my_r101",
                "url": "https://mirror.example/a/my%20r101.pth",
                "sha256": "deadbeef",
                "preset": "vfnet_r101_fpn",
                "aliases": ["mine"],
                "ap_val": 40,
            },
        ],
    )
    mirrored = lookup(R50_2X, zoo_file=path)
    assert (mirrored.url, mirrored.sha256, mirrored.source, mirrored.file_name) == ("https://mirror.example/r50.pth", SHA, path, "r50.pth")
    added = lookup("mine", zoo_file=path)
    assert (added.name, added.file_name, added.source, added.ap_val, added.input_size) == ("my_r101", "my r101.pth", path, 40, None)
    assert lookup("vfnet_r50_fpn_1x_coco", zoo_file=path).source == BUILT_IN
    assert len(load_zoo(path)) == 9
    monkeypatch.setenv("VFNET_ZOO", path)
    assert lookup("my_r101").source == path


@pytest.mark.parametrize(
    "content, problem",
    [
        ("[{", "not JSON"),
        ({"name": "x"}, "expected a JSON list of model objects, got a JSON dict"),
        (["x"], "entry 0 is a str, not an object"),
        ([{"name": "x", "url": "https://h/x.pth", "preset": "vfnet_r50_fpn"}], "entry 0 ('x'): missing field(s) sha256"),
        ([{"name": "x", "url": "https://h/x.pth", "sha256": "abc123", "preset": "vfnet_r50_fpn"}], "sha256 'abc123' is not hex digits"),
        ([{"name": "x", "url": "https://h/x.pth", "sha256": "ghijklmn", "preset": "vfnet_r50_fpn"}], "sha256 'ghijklmn' is not hex digits"),
        ([{"name": "x", "url": "https://h/x.pth", "sha256": "deadbeef", "preset": "vfnet_r50"}], "unknown preset 'vfnet_r50'; did you mean 'vfnet_r50_fpn'?"),
        (
            [{"name": "x", "url": "https://h/x.pth", "sha256": "deadbeef", "preset": "vfnet_r50_fpn"}] * 2,
            "duplicate name 'x'",
        ),
        ([{"name": "x", "url": "https://h/x.pth", "sha256": "deadbeef", "preset": "vfnet_r50_fpn", "apval": 1}], "unknown field(s) apval"),
        ([{"name": "x", "url": "h/x.pth", "sha256": "deadbeef", "preset": "vfnet_r50_fpn"}], "is not an http(s):// or file:// URL"),
        ([{"name": "x", "url": "https://h/x.pth", "sha256": "deadbeef", "preset": "vfnet_r50_fpn", "input_size": [800]}], "input_size must be"),
    ],
)
def test_a_bad_zoo_file_gives_one_clear_error(tmp_path, content, problem):
    path = write_zoo(tmp_path, content)
    with pytest.raises(ZooError) as raised:
        load_zoo(path)
    assert str(raised.value).startswith(f"zoo file {path}: ") and problem in str(raised.value)


def test_a_missing_zoo_file_is_named(tmp_path):
    with pytest.raises(ZooError, match="cannot read it"):
        load_zoo(tmp_path / "nope.json")


def test_cache_layout(monkeypatch, tmp_path):
    entry = lookup(R50_2X)
    assert checkpoint_path(entry) == tmp_path / "home" / "checkpoints" / "vfnet_r50_fpn_mstrain_2x_coco_20201027-7cc75bd2.pth"
    assert converted_path(entry) == tmp_path / "home" / "models" / f"{R50_2X}.safetensors"
    monkeypatch.delenv("VFNET_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert vfnet_home() == tmp_path / "xdg" / "vfnet-serve"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative")  # the XDG spec says to ignore a relative one
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert vfnet_home() == tmp_path / "user" / ".cache" / "vfnet-serve"


def run_models(*args, env=None) -> subprocess.CompletedProcess:
    script = "import sys; from vfnet.server.cli import main; code = main(sys.argv[1:]); print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'onnxruntime')), file=sys.stderr); sys.exit(code)"
    return subprocess.run([sys.executable, "-c", script, "models", *args], capture_output=True, text=True, env={**os.environ, **(env or {})})


def test_vfnet_models_lists_every_name_and_marks_what_is_downloaded(tmp_path):
    home = tmp_path / "home"
    entry = lookup(R50_2X)
    checkpoint_path(entry).parent.mkdir(parents=True)
    checkpoint_path(entry).write_bytes(b"pth")
    converted_path(entry).parent.mkdir(parents=True)
    converted_path(entry).write_bytes(b"st")
    done = run_models(env={"VFNET_HOME": str(home)})
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "[]"  # no torch, no onnxruntime
    lines = {line.split()[0]: line for line in done.stdout.splitlines() if line.strip()}
    for e in OFFICIAL:
        assert e.name in lines and e.preset in lines[e.name] and f"{e.ap_val:.1f}" in lines[e.name]
    assert lines[R50_2X].endswith(f"{checkpoint_path(entry)}, {converted_path(entry)}")
    assert lines["vfnet_r50_fpn_1x_coco"].endswith("built-in  no")
    assert all(f"  {m.name}: {m.reason}" in done.stdout for m in UNCONVERTIBLE)


def test_vfnet_models_json_and_a_user_zoo(tmp_path):
    path = write_zoo(tmp_path, [{"name": "my_r50", "url": "file:///srv/models/r50.pth", "sha256": "deadbeef", "preset": "vfnet_r50_fpn"}])
    done = run_models("--json", env={"VFNET_ZOO": path})
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["home"] == str(tmp_path / "home")
    assert [m["name"] for m in out["models"]] == ["my_r50", *(e.name for e in OFFICIAL)]
    assert out["models"][0]["source"] == path and out["models"][0]["checkpoint"] is None and out["models"][1]["source"] == BUILT_IN
    assert out["models"][2]["aliases"] == ["vfnet_r50_fpn_ms-2x_coco"]
    assert [m["name"] for m in out["unconvertible"]] == [m.name for m in UNCONVERTIBLE]
    table = run_models("--zoo", path)
    assert any(line.startswith("my_r50 ") and path in line for line in table.stdout.splitlines())


def test_vfnet_models_reports_a_bad_zoo_file(tmp_path):
    path = write_zoo(tmp_path, "{")
    done = run_models("--zoo", path)
    assert done.returncode == 2 and f"vfnet models: zoo file {path}: not JSON" in done.stderr


def test_the_readme_table_is_the_catalog():
    """README's "Pretrained COCO models" table: one row per official entry, its name, preset and AP."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Pretrained COCO models", 1)[1].split("\n## ", 1)[0]
    rows = [[cell.strip(" `") for cell in line.strip("|").split("|")] for line in section.splitlines() if line.startswith("| `")]
    expected = [[e.name, e.preset, f"{e.ap_val:.1f} / {e.ap_test_dev:.1f}", f"vfnet serve --model {e.name}"] for e in OFFICIAL]
    assert rows == expected
