"""`vfnet pull` for real: a user zoo file, a local HTTP server (zoo_http.py), synthetic key-exact mmdetection files.

Each served .pth is named like an official file but carries its own SHA-256 prefix, so the hash
check passes or fails for the reason a test gives. Namespaces (`unshare -rm`) give a read-only and
a full cache folder to a `vfnet pull` subprocess; a second process shows that concurrent pulls download once.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from vfnet.server.zoo import ZooError, lookup
from vfnet.server.zoo.cli import main as models_main
from vfnet.server.zoo.cli import pull_main
from vfnet.server.zoo.pull import mirrored, pull, pull_file, source_sha256

from .zoo_http import serving

NAME = "tiny_r18_1x"
ORIGIN = "https://download.openmmlab.com"
FOLDER = "/mmdetection/v2.0/vfnet/tiny_r18_1x"
STEM = "vfnet_r50_fpn_1x_coco_20201027"


@dataclass(frozen=True)
class Pth:
    path: Path  # <STEM>-<its own sha256[:8]>.pth
    data: bytes
    sha256: str

    @property
    def url_path(self) -> str:
        return f"{FOLDER}/{self.path.name}"


def _named(folder: Path, data: bytes) -> Pth:
    sha256 = hashlib.sha256(data).hexdigest()
    path = folder / f"{STEM}-{sha256[:8]}.pth"
    path.write_bytes(data)
    return Pth(path, data, sha256)


@pytest.fixture(scope="module")
def pths(tiny_model, tmp_path_factory) -> dict[str, Pth]:
    """good (the tiny r18 as mmdetection saves it), atss (another detector's head keys), truncated, random bytes."""
    import torch

    def saved(state: dict) -> bytes:
        buffer = io.BytesIO()
        torch.save({"meta": {"mmdet_version": "2.10.0", "CLASSES": tuple(tiny_model.class_names)}, "state_dict": state}, buffer)
        return buffer.getvalue()

    state = tiny_model.state_dict()
    heads = {"vfnet_cls": "atss_cls", "vfnet_reg": "atss_reg", "vfnet_reg_refine": "atss_centerness"}

    def renamed(key: str) -> str:
        head, _, rest = key.removeprefix("bbox_head.").partition(".")
        return f"bbox_head.{heads[head]}.{rest}" if key.startswith("bbox_head.") and head in heads else key

    folder = tmp_path_factory.mktemp("pths")
    good = saved(state)
    made = {
        "good": good,
        "atss": saved({renamed(k): v for k, v in state.items()}),
        "truncated": good[: len(good) // 2],
        "random": random.Random(0).randbytes(1 << 20),
    }
    return {kind: _named(folder, data) for kind, data in made.items()}  # four names: each carries its own hash


@pytest.fixture(autouse=True)
def home(monkeypatch, tmp_path) -> Path:
    monkeypatch.delenv("VFNET_ZOO", raising=False)
    monkeypatch.delenv("VFNET_ZOO_MIRROR", raising=False)
    monkeypatch.setenv("VFNET_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def server(pths):
    with serving({p.url_path: p.data for p in pths.values()}) as running:
        yield running


def write_zoo(tmp_path: Path, pth: Pth, sha256: str | None = None, preset: str = "vfnet_r18_demo") -> str:
    path = tmp_path / "zoo.json"
    entry = {"name": NAME, "url": f"{ORIGIN}{pth.url_path}", "sha256": sha256 or pth.sha256[:8], "preset": preset, "aliases": ["tiny"]}
    path.write_text(json.dumps([entry]))
    return str(path)


def left_in(home: Path) -> list[str]:
    """What the cache holds besides the (empty, harmless) lock files filelock leaves behind."""
    return sorted(str(p.relative_to(home)) for p in home.rglob("*") if p.is_file() and p.suffix != ".lock")


def run_pull(capsys, *argv: str) -> tuple[int, str, list[str]]:
    code = pull_main([*argv, "--quiet"])
    out, err = capsys.readouterr()
    return code, out, err.splitlines()


def assert_converted(converted: Path, pth: Pth, tiny_model) -> None:
    from vfnet.model import load_checkpoint

    assert source_sha256(converted) == pth.sha256
    model = load_checkpoint(converted)
    assert (model.preset, model.class_names) == ("vfnet_r18_demo", tuple(tiny_model.class_names))


def test_a_good_pull_converts_and_a_second_pull_downloads_nothing(server, pths, tmp_path, home, capsys, tiny_model):
    good, zoo = pths["good"], write_zoo(tmp_path, pths["good"])
    code, out, err = run_pull(capsys, "tiny", "--zoo", zoo, "--mirror", server.url + "/")
    assert code == 0, err
    url, converted = server.url + good.url_path, home / "models" / f"{NAME}.safetensors"
    assert err == [f"downloading {NAME} from {url}"]
    assert out.splitlines() == [f"{NAME}: {converted} (from {good.path.name}, SHA-256 {good.sha256[:16]}...)", f"serve it: vfnet serve --model {NAME}"]
    assert left_in(home) == [f"checkpoints/{good.path.name}", f"models/{NAME}.safetensors"]
    assert (home / "checkpoints" / good.path.name).read_bytes() == good.data
    assert_converted(converted, good, tiny_model)
    assert models_main(["--json", "--zoo", zoo]) == 0
    row = json.loads(capsys.readouterr().out)["models"][0]
    assert (row["name"], row["checkpoint"], row["converted"]) == (NAME, str(home / "checkpoints" / good.path.name), str(converted))

    code, _, err = run_pull(capsys, NAME, "--zoo", zoo, "--mirror", server.url)
    assert (code, err) == (0, [])
    assert server.gets(good.url_path) == [None] and len(server.log) == 1


def test_an_unknown_name_suggests_the_closest(pths, tmp_path, capsys):
    code, out, err = run_pull(capsys, "tiny_r18_1", "--zoo", write_zoo(tmp_path, pths["good"]))
    assert (code, out) == (1, "")
    assert err == ["vfnet pull: unknown model 'tiny_r18_1'; did you mean 'tiny_r18_1x'? (`vfnet models` lists them all)"]


def test_a_404_names_the_url_and_leaves_nothing(server, pths, tmp_path, home, capsys):
    server.behaviour[pths["good"].url_path] = "404"
    code, _, err = run_pull(capsys, NAME, "--zoo", write_zoo(tmp_path, pths["good"]), "--mirror", server.url)
    url = server.url + pths["good"].url_path
    assert code == 1
    assert err == [f"downloading {NAME} from {url}", f"vfnet pull: cannot download {url}: the server answered 404 Not Found"]
    assert left_in(home) == []


def test_a_short_body_is_kept_and_the_next_pull_resumes_it(server, pths, tmp_path, home, tiny_model):
    good, said = pths["good"], []
    entry, half, url = lookup(NAME, write_zoo(tmp_path, good)), len(good.data) // 2, server.url + good.url_path
    part = home / "checkpoints" / f"{good.path.name}.part"
    server.behaviour[good.url_path] = "short"
    with pytest.raises(ZooError) as raised:
        pull(entry, mirror=server.url, progress=False, say=said.append)
    assert str(raised.value).startswith(f"the download of {url} stopped after {half} of {len(good.data)} bytes; the {half} bytes are kept in {part}")
    assert left_in(home) == [f"checkpoints/{good.path.name}.part"] and part.read_bytes() == good.data[:half]

    del server.behaviour[good.url_path]
    pulled = pull(entry, mirror=server.url, progress=False, say=said.append)
    assert server.gets(good.url_path) == [None, f"bytes={half}-"]
    assert pulled.sha256 == good.sha256 and left_in(home) == [f"checkpoints/{good.path.name}", f"models/{NAME}.safetensors"]
    assert_converted(pulled.converted, good, tiny_model)


def test_a_server_that_ignores_range_gets_a_clean_restart(server, pths, tmp_path, home):
    good = pths["good"]
    entry, half = lookup(NAME, write_zoo(tmp_path, good)), len(good.data) // 2
    server.behaviour[good.url_path], server.ignore_range = "break_once", True
    with pytest.raises(ZooError, match=f"stopped after {half} of {len(good.data)} bytes"):
        pull(entry, mirror=server.url, progress=False, say=lambda _: None)
    pulled = pull(entry, mirror=server.url, progress=False, say=lambda _: None)
    assert server.gets(good.url_path) == [None, f"bytes={half}-"]  # asked to resume, answered 200 with the whole file
    assert pulled.source.read_bytes() == good.data and source_sha256(pulled.converted) == good.sha256


def test_a_wrong_hash_deletes_the_download(server, pths, tmp_path, home):
    good = pths["good"]
    wrong = f"{int(good.sha256[:8], 16) ^ 0xFFFFFFFF:08x}"
    with pytest.raises(ZooError) as raised:
        pull(lookup(NAME, write_zoo(tmp_path, good, sha256=wrong)), mirror=server.url, progress=False, say=lambda _: None)
    assert str(raised.value) == f"{server.url}{good.url_path}: SHA-256 mismatch: expected it to start with {wrong}, got {good.sha256}; the download was deleted"
    assert left_in(home) == []


@pytest.mark.parametrize("kind", ["truncated", "random"])
def test_an_unusable_file_is_deleted(server, pths, tmp_path, home, kind):
    bad = pths[kind]
    with pytest.raises(ZooError) as raised:
        pull(lookup(NAME, write_zoo(tmp_path, bad)), mirror=server.url, progress=False, say=lambda _: None)
    assert str(raised.value).startswith(f"{home / 'checkpoints' / bad.path.name}: not a PyTorch checkpoint")
    assert server.gets(bad.url_path) == [None] and left_in(home) == []


def test_another_detectors_checkpoint_names_its_keys(server, pths, tmp_path, home):
    atss = pths["atss"]
    with pytest.raises(ZooError) as raised:
        pull(lookup(NAME, write_zoo(tmp_path, atss)), mirror=server.url, progress=False, say=lambda _: None)
    message = str(raised.value)
    assert message.startswith(
        f"{home / 'checkpoints' / atss.path.name}: not a VFNet checkpoint: no bbox_head.vfnet_cls / vfnet_reg_refine weights; it holds backbone.* "
    )
    assert message.endswith("; the downloaded file was deleted")
    assert "bbox_head.atss_cls.* 2" in message and "bbox_head.atss_centerness.* 2" in message and "vfnet_cls.*" not in message
    assert left_in(home) == []


def test_a_preset_mismatch_names_both_presets(server, pths, tmp_path, home):
    good = pths["good"]
    with pytest.raises(ZooError) as raised:
        pull(lookup(NAME, write_zoo(tmp_path, good, preset="vfnet_r50_fpn")), mirror=server.url, progress=False, say=lambda _: None)
    assert str(raised.value) == (
        f"{good.path.name} holds a vfnet_r18_demo network, but the zoo says vfnet_r50_fpn: the zoo entry is wrong; the downloaded file was deleted"
    )
    assert left_in(home) == []


def test_a_cache_below_a_file_is_named(pths, tmp_path, monkeypatch, capsys):
    (tmp_path / "a_file").write_text("")
    monkeypatch.setenv("VFNET_HOME", str(tmp_path / "a_file" / "home"))
    code, _, err = run_pull(capsys, NAME, "--zoo", write_zoo(tmp_path, pths["good"]), "--mirror", "http://127.0.0.1:9")
    assert code == 1
    assert err == [f"vfnet pull: the cache folder {tmp_path}/a_file/home/models is not writable (Not a directory); set VFNET_HOME to a folder you can write"]


@functools.cache
def _namespaces() -> bool:
    return shutil.which("unshare") is not None and subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode == 0


def pull_in_namespace(folder: Path, mount_options: str, *argv: str) -> subprocess.CompletedProcess:
    """`vfnet pull ARGV --quiet` with VFNET_HOME=<folder>/home, `folder` a fresh tmpfs (-o mount_options) of
    its own mount namespace; stdout ends with the files the tmpfs holds after the pull (it vanishes then)."""
    if not _namespaces():
        pytest.skip("`unshare -rm true` fails here: no user+mount namespaces to make a read-only or full tmpfs")
    folder.mkdir()
    script = 'mount -t tmpfs -o "$1" tmpfs "$2" || exit 99; shift 2; "$@"; rc=$?; find "$VFNET_HOME" -type f 2>/dev/null; exit $rc'
    command = ["unshare", "-rm", "sh", "-c", script, "sh", mount_options, str(folder), sys.executable, "-m", "vfnet.server.cli", "pull", *argv, "--quiet"]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env={**os.environ, "VFNET_HOME": str(folder / "home")})


def test_a_read_only_cache_is_named(pths, tmp_path):
    done = pull_in_namespace(tmp_path / "ro", "ro,size=1m", NAME, "--zoo", write_zoo(tmp_path, pths["good"]), "--mirror", "http://127.0.0.1:9")
    home = tmp_path / "ro" / "home"
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr.splitlines() == [
        f"vfnet pull: the cache folder {home}/models is not writable (Read-only file system); set VFNET_HOME to a folder you can write"
    ]


@pytest.mark.parametrize("length", ["with Content-Length", "without"])
def test_a_full_disk_is_one_clear_error_and_leaves_no_part(server, pths, tmp_path, length):
    good = pths["good"]
    if length == "without":
        server.behaviour[good.url_path] = "no_length"
    done = pull_in_namespace(tmp_path / "small", "size=8m", NAME, "--zoo", write_zoo(tmp_path, good), "--mirror", server.url)
    checkpoints = tmp_path / "small" / "home" / "checkpoints"
    assert done.returncode == 1, done.stderr
    assert done.stdout.splitlines() == [f"{checkpoints}/{good.path.name}.lock"]  # no .part, no checkpoint
    downloading, error = done.stderr.splitlines()
    assert downloading == f"downloading {NAME} from {server.url}{good.url_path}"
    needed = f"{len(good.data) / 1e6:.1f} MB more are needed, " if length == "with Content-Length" else ""
    assert error.startswith(f"vfnet pull: no space left in {checkpoints}: {needed}") and error.endswith(" MB are free; the partial download was deleted")
    assert server.gets(good.url_path) == [None]


def test_a_full_disk_while_converting_keeps_the_verified_download(server, pths, tmp_path):
    good = pths["good"]
    size = f"size={len(good.data) * 5 // 4 >> 20}m"  # the download fits, its conversion does not
    done = pull_in_namespace(tmp_path / "small", size, NAME, "--zoo", write_zoo(tmp_path, good), "--mirror", server.url)
    home = tmp_path / "small" / "home"
    assert done.returncode == 1, done.stderr
    assert sorted(done.stdout.splitlines()) == [f"{home}/checkpoints/{good.path.name}", f"{home}/checkpoints/{good.path.name}.lock"]
    error = done.stderr.splitlines()[-1]
    assert error.startswith(f"vfnet pull: cannot write {home}/models/{NAME}.safetensors: ") and "No space left on device" in error


def test_a_conversion_without_torch_keeps_the_download_for_the_next_pull(server, pths, tmp_path, home, monkeypatch, tiny_model):
    good = pths["good"]
    entry = lookup(NAME, write_zoo(tmp_path, good))
    with monkeypatch.context() as without_torch:
        without_torch.setitem(sys.modules, "vfnet.model", None)  # `import vfnet.model` raises ImportError
        with pytest.raises(ZooError, match=r"^converting a checkpoint needs torch: pip install 'vfnet-serve\[torch\]'"):
            pull(entry, mirror=server.url, progress=False, say=lambda _: None)
    assert left_in(home) == [f"checkpoints/{good.path.name}"]
    pulled = pull(entry, mirror=server.url, progress=False, say=lambda _: None)
    assert server.gets(good.url_path) == [None]  # verified once, converted on the second try without a download
    assert_converted(pulled.converted, good, tiny_model)


def test_a_part_that_is_already_whole_starts_over(server, pths, tmp_path, home):
    """Killed between the last byte and the rename: the Range request from its end gets a 416, and the download starts over."""
    good = pths["good"]
    part = home / "checkpoints" / f"{good.path.name}.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(good.data + b"extra")
    pulled = pull(lookup(NAME, write_zoo(tmp_path, good)), mirror=server.url, progress=False, say=lambda _: None)
    assert server.gets(good.url_path) == [f"bytes={len(good.data) + 5}-", None]
    assert pulled.source.read_bytes() == good.data and left_in(home) == [f"checkpoints/{good.path.name}", f"models/{NAME}.safetensors"]


def test_two_concurrent_pulls_download_once(server, pths, tmp_path, home, tiny_model):
    good, zoo = pths["good"], write_zoo(tmp_path, pths["good"])
    command = [sys.executable, "-m", "vfnet.server.cli", "pull", NAME, "--zoo", zoo, "--mirror", server.url, "--quiet"]
    logs = [tmp_path / f"pull{i}.err" for i in range(2)]
    server.hold.clear()  # the first to get the lock waits for its download until the other one waits for the lock
    processes = []
    try:
        for log in logs:
            with log.open("w") as err:
                processes.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, text=True))
        deadline = time.monotonic() + 60
        while not any("waiting for another vfnet pull" in log.read_text() for log in logs) and time.monotonic() < deadline:
            time.sleep(0.05)
        server.hold.set()
        results = [(p.wait(timeout=120), p.stdout.read()) for p in processes]
    finally:
        server.hold.set()
        for p in processes:
            if p.poll() is None:
                p.kill()
            p.stdout.close()
    said = sorted(log.read_text() for log in logs)
    assert [code for code, _ in results] == [0, 0], said
    assert said == [f"downloading {NAME} from {server.url}{good.url_path}\n", f"waiting for another vfnet pull of {good.path.name} to finish ...\n"]
    assert all(out.startswith(f"{NAME}: {home}/models/{NAME}.safetensors (from {good.path.name}") for _, out in results)
    assert server.gets(good.url_path) == [None]
    assert_converted(home / "models" / f"{NAME}.safetensors", good, tiny_model)


def test_pull_file_copies_a_zoo_file_into_the_cache(pths, tmp_path, home, capsys, tiny_model):
    good = pths["good"]
    before = good.path.stat()
    code, out, err = run_pull(capsys, str(good.path), "--zoo", write_zoo(tmp_path, good))
    assert (code, err) == (0, [])
    converted = home / "models" / f"{NAME}.safetensors"
    assert out.splitlines()[0] == f"{NAME}: {converted} (from {good.path.name}, SHA-256 {good.sha256[:16]}...)"
    assert (home / "checkpoints" / good.path.name).read_bytes() == good.data
    assert left_in(home) == [f"checkpoints/{good.path.name}", f"models/{NAME}.safetensors"]
    assert_converted(converted, good, tiny_model)
    after = good.path.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)


def test_pull_file_refuses_a_name_with_the_wrong_hash(pths, tmp_path, home):
    good = pths["good"]
    wrong = f"{int(good.sha256[:8], 16) ^ 0xFFFFFFFF:08x}"
    renamed = tmp_path / f"{STEM}-{wrong}.pth"
    shutil.copyfile(good.path, renamed)
    with pytest.raises(ZooError) as raised:
        pull_file(renamed, zoo_file=write_zoo(tmp_path, good), say=lambda _: None)
    assert str(raised.value) == f"{renamed}: SHA-256 mismatch: its name says it starts with {wrong}, it is {good.sha256}; the file is damaged or renamed"
    assert not home.exists()


def test_no_network_names_the_url_the_host_and_the_ways_out(pths, tmp_path, capsys):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code, _, err = run_pull(capsys, NAME, "--zoo", write_zoo(tmp_path, pths["good"]), "--mirror", f"http://127.0.0.1:{port}")
    url = f"http://127.0.0.1:{port}{pths['good'].url_path}"
    assert code == 1 and len(err) == 2 and err[0] == f"downloading {NAME} from {url}"  # then one line, no traceback
    assert err[-1].startswith(f"vfnet pull: cannot download {url}: 127.0.0.1 cannot be reached (")
    assert err[-1].endswith(
        "). Either point --mirror URL (or $VFNET_ZOO_MIRROR) at a copy you can reach, or download the file elsewhere and run `vfnet pull FILE.pth`"
    )


@pytest.mark.parametrize(
    "mirror, expected",
    [
        (None, "https://download.openmmlab.com/mmdetection/v2.0/vfnet/a/b.pth"),
        ("http://10.0.0.5", "http://10.0.0.5/mmdetection/v2.0/vfnet/a/b.pth"),
        ("http://10.0.0.5:8080/zoo/", "http://10.0.0.5:8080/zoo/mmdetection/v2.0/vfnet/a/b.pth"),
        ("file:///srv/openmmlab?x=1", "file:///srv/openmmlab/mmdetection/v2.0/vfnet/a/b.pth"),
    ],
)
def test_mirrored_keeps_the_path_below_the_mirror(mirror, expected):
    assert mirrored("https://download.openmmlab.com/mmdetection/v2.0/vfnet/a/b.pth", mirror) == expected


def test_mirrored_refuses_a_bad_scheme():
    with pytest.raises(ZooError, match=r"mirror 'ftp://10.0.0.5/zoo' is not an http\(s\):// or file:// URL"):
        mirrored("https://download.openmmlab.com/a/b.pth", "ftp://10.0.0.5/zoo")
