"""The two TensorRT libraries as they are deployed: copied together into one folder (docker/Dockerfile.gpu:
/opt/vfnet/plugins) and loaded the way ONNX Runtime's TensorRT provider loads plugin libraries
(dlopen RTLD_NOW | RTLD_LOCAL, TensorRT itself loaded RTLD_LOCAL before).

- Both carry a RUNPATH of exactly $ORIGIN (no path of the machine that built them), and the copied
  autoregister library resolves libvfnet_trt_plugins.so to the copy beside it.
- The autoregister library is built only when linked against a libnvinfer; `make plugins-check`
  (no libnvinfer here) still compiles its source against each header set, and says why it skipped it.
- Loaded, it registers each creator once: nothing when libvfnet_trt_plugins.so came first through
  loadLibrary (both our libraries in one process), one line when another library holds the name.

No libnvinfer exists here, so the CMake build that links it runs against a stand-in (FAKE_NVINFER
below: getPluginRegistry and a registry that behaves as TensorRT's for what we call, recording the
calls). What TensorRT's real registry does is not exercised here.
Needs g++, nvcc (the plugin library holds the CUDA kernel), cmake, readelf, ldd and the headers in
../shared/third_party; the plugins-check tests read `make plugins-check`'s output."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vfnet.trt_plugins.build_report import main as build_report

from .conftest import CUDA, NVCC, REPOSITORY

THIRD_PARTY = next((p for p in (REPOSITORY.parent / "shared" / "third_party", Path("/work/shared/third_party")) if p.is_dir()), None)
HEADER_SETS = sorted(THIRD_PARTY.glob("tensorrt-*/include")) if THIRD_PARTY else []
CHECK_BUILDS = sorted((REPOSITORY / "build" / "plugins-check").glob("tensorrt-*"))
TRT_LIBRARIES = ("libvfnet_trt_plugins.so", "libvfnet_trt_plugins_autoregister.so")
AUTOREGISTER_OBJECT = Path("CMakeFiles/vfnet_trt_plugins_autoregister_objects.dir/vfnetPluginsAutoregister.cpp.o")
needs_plugins_check = pytest.mark.skipif(not CHECK_BUILDS, reason="no `make plugins-check` output here (build/plugins-check)")
needs_toolchain = pytest.mark.skipif(
    not HEADER_SETS or NVCC is None or not shutil.which("cmake") or not shutil.which("g++"),
    reason="needs the TensorRT headers in ../shared/third_party, nvcc, cmake and g++",
)


def dynamic_section(library: Path) -> dict[str, list[str]]:
    """readelf -d: NEEDED, SONAME, RUNPATH and RPATH entries (a RUNPATH split at its colons)."""
    text = subprocess.run(["readelf", "-d", str(library)], capture_output=True, text=True, check=True).stdout
    entries: dict[str, list[str]] = {"NEEDED": [], "SONAME": [], "RUNPATH": [], "RPATH": []}
    for tag, value in re.findall(r"\((NEEDED|SONAME|RUNPATH|RPATH)\)\s+[^\[]*\[([^\]]*)\]", text):
        entries[tag] += value.split(":") if tag in ("RUNPATH", "RPATH") else [value]
    return entries


# ---- what `make plugins-check` built here (against the headers only, no libnvinfer) ----------------


@needs_plugins_check
def test_plugins_check_libraries_carry_only_an_origin_runpath():
    libraries = [b / name for b in CHECK_BUILDS for name in TRT_LIBRARIES if (b / name).is_file()]
    assert {p.parent.name.split("-")[1].split(".")[0] for p in libraries} >= {"10", "11"}, libraries
    for library in libraries:
        entries = dynamic_section(library)
        assert entries["RUNPATH"] == ["$ORIGIN"] and entries["RPATH"] == [], (library, entries)


@needs_plugins_check
def test_plugins_check_compiles_the_autoregister_source_and_links_it_only_against_libnvinfer():
    for build in CHECK_BUILDS:
        configure = (build / "configure.log").read_text()
        undefined = subprocess.run(["nm", "-u", str(build / AUTOREGISTER_OBJECT)], capture_output=True, text=True, check=True).stdout.split()
        assert {"getCreators", "getPluginRegistry"} <= set(undefined), (build, undefined)  # compiled, against these headers
        library = build / "libvfnet_trt_plugins_autoregister.so"
        if "-- vfnet: SKIPPED vfnet_trt_plugins_autoregister" in configure:
            assert not library.exists(), library
            reason = configure.split("-- vfnet: SKIPPED vfnet_trt_plugins_autoregister", 1)[1].split("\n", 1)[0]
            assert "no libnvinfer" in reason and "getPluginRegistry" in reason and "RTLD_LOCAL" in reason, reason
        else:  # a machine with a libnvinfer of this major: linked against it
            assert any(n.startswith("libnvinfer.so.") for n in dynamic_section(library)["NEEDED"]), library


def test_the_build_report_prints_what_was_skipped_and_why(tmp_path, capsys):
    (tmp_path / "configure.log").write_text(
        "-- The CXX compiler identification is GNU 12.2.0\n"
        "-- vfnet: building vfnet_trt_plugins against TensorRT 10 headers (/x/include); no libnvinfer found\n"
        "-- vfnet: SKIPPED vfnet_trt_plugins_autoregister (only its source is compiled): no libnvinfer of TensorRT 10 found. "
        "Unlinked, its getPluginRegistry stays undefined (RTLD_LOCAL)\n"
    )
    (tmp_path / "build.log").write_text("")
    (tmp_path / "libvfnet_trt_plugins.so").write_bytes(b"")
    assert build_report(str(tmp_path / "configure.log"), str(tmp_path / "build.log")) == 0
    out = capsys.readouterr().out
    assert "  building vfnet_trt_plugins against TensorRT 10 headers (/x/include); no libnvinfer found\n" in out
    skipped = out.split("skipped, and why:\n", 1)[1]
    assert skipped.startswith("  - vfnet_trt_plugins_autoregister (only its source is compiled): no libnvinfer of TensorRT 10 found.")
    assert "getPluginRegistry stays undefined (RTLD_LOCAL)" in " ".join(skipped.split()), out
    assert f"libraries in {tmp_path}: libvfnet_trt_plugins.so\n" in out
    assert "The CXX compiler" not in out


# ---- the CMake build that links libnvinfer (a stand-in here), copied and loaded ---------------------

FAKE_NVINFER = r"""
// A stand-in for libnvinfer.so.N: getPluginRegistry() gives a registry that behaves as TensorRT's does
// for what our libraries call (a miss in getCreator is logged as an error; a second creator of one
// name, version and namespace is refused with an error; loadLibrary registers getCreators()), and
// prints each call on stdout.
#include <NvInferRuntime.h>

#include <dlfcn.h>

#include <cstdio>
#include <cstring>
#include <vector>

using namespace nvinfer1;

namespace
{
char const* nameOf(IPluginCreatorInterface const* c, int what)
{
    if (std::strcmp(c->getInterfaceInfo().kind, "PLUGIN CREATOR_V3ONE") != 0)
        return "?";
    auto const* v3 = static_cast<IPluginCreatorV3One const*>(c);
    return what == 0 ? v3->getPluginName() : what == 1 ? v3->getPluginVersion() : v3->getPluginNamespace();
}

bool sameKey(IPluginCreatorInterface const* c, char const* name, char const* version, char const* ns)
{
    return std::strcmp(nameOf(c, 0), name) == 0 && std::strcmp(nameOf(c, 1), version) == 0 && std::strcmp(nameOf(c, 2), ns ? ns : "") == 0;
}

class ForeignCreator : public IPluginCreatorV3One
{
public:
    IPluginV3* createPlugin(char const*, PluginFieldCollection const*, TensorRTPhase) noexcept override { return nullptr; }
    PluginFieldCollection const* getFieldNames() noexcept override { return &mFields; }
    char const* getPluginName() const noexcept override { return "StarDeformConv"; }
    char const* getPluginVersion() const noexcept override { return "1"; }
    char const* getPluginNamespace() const noexcept override { return ""; }
private:
    PluginFieldCollection mFields{};
} gForeign;

class FakeRegistry : public IPluginRegistry
{
public:
    std::vector<IPluginCreatorInterface*> creators;
#if NV_TENSORRT_MAJOR < 11
    bool registerCreator(IPluginCreator&, AsciiChar const* const) noexcept override { return false; }
    IPluginCreator* const* getPluginCreatorList(int32_t* const n) const noexcept override { *n = 0; return nullptr; }
    IPluginCreator* getPluginCreator(AsciiChar const* const, AsciiChar const* const, AsciiChar const* const) noexcept override { return nullptr; }
    bool deregisterCreator(IPluginCreator const&) noexcept override { return false; }
#endif
    void setErrorRecorder(IErrorRecorder* const) noexcept override {}
    IErrorRecorder* getErrorRecorder() const noexcept override { return nullptr; }
    bool isParentSearchEnabled() const override { return false; }
    void setParentSearchEnabled(bool const) override {}
    PluginLibraryHandle loadLibrary(AsciiChar const* path) noexcept override
    {
        std::printf("call loadLibrary\n");
        std::fflush(stdout);
        void* handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
        using GetCreators = IPluginCreatorInterface* const* (*)(int32_t&);
        auto get = handle ? reinterpret_cast<GetCreators>(dlsym(handle, "getCreators")) : nullptr;
        if (get == nullptr)
            return nullptr;
        int32_t n = 0;
        IPluginCreatorInterface* const* list = get(n);
        bool ok = true;
        for (int32_t i = 0; i < n; ++i)
            ok = registerCreator(*list[i], nameOf(list[i], 2)) && ok;
        return ok ? handle : nullptr;
    }
    void deregisterLibrary(PluginLibraryHandle) noexcept override {}
    bool registerCreator(IPluginCreatorInterface& creator, AsciiChar const* const ns) noexcept override
    {
        bool const taken = getCreatorQuietly(nameOf(&creator, 0), nameOf(&creator, 1), ns) != nullptr;
        std::printf("call registerCreator %s %s '%s' -> %s\n", nameOf(&creator, 0), nameOf(&creator, 1), ns, taken ? "refused" : "registered");
        std::fflush(stdout);
        if (taken)
        {
            std::fprintf(stderr, "[E] [TRT] IPluginRegistry::registerCreator: plugin %s version %s already registered\n", nameOf(&creator, 0), nameOf(&creator, 1));
            return false;
        }
        creators.push_back(&creator);
        return true;
    }
    IPluginCreatorInterface* const* getAllCreators(int32_t* const n) const noexcept override
    {
        std::printf("call getAllCreators\n");
        std::fflush(stdout);
        *n = static_cast<int32_t>(creators.size());
        return creators.data();
    }
    IPluginCreatorInterface* getCreator(AsciiChar const* const name, AsciiChar const* const version, AsciiChar const* const ns) noexcept override
    {
        std::printf("call getCreator %s %s '%s'\n", name, version, ns);
        std::fflush(stdout);
        IPluginCreatorInterface* found = getCreatorQuietly(name, version, ns);
        if (found == nullptr)
            std::fprintf(stderr, "[E] [TRT] getCreator could not find plugin: %s version: %s\n", name, version);
        return found;
    }
    bool deregisterCreator(IPluginCreatorInterface const&) noexcept override { return false; }
    IPluginResource* acquirePluginResource(AsciiChar const*, IPluginResource*) noexcept override { return nullptr; }
    int32_t releasePluginResource(AsciiChar const*) noexcept override { return -1; }
    IPluginCreatorInterface* const* getAllCreatorsRecursive(int32_t* const n) noexcept override { return getAllCreators(n); }

private:
    IPluginCreatorInterface* getCreatorQuietly(char const* name, char const* version, char const* ns) const
    {
        for (IPluginCreatorInterface* c : creators)
            if (sameKey(c, name, version, ns))
                return c;
        return nullptr;
    }
} gRegistry;
} // namespace

extern "C" IPluginRegistry* getPluginRegistry() noexcept { return &gRegistry; }
extern "C" int fakeLoadLibrary(char const* path) { return gRegistry.loadLibrary(path) != nullptr; }
extern "C" int fakeRegisterForeign() { return gRegistry.registerCreator(gForeign, ""); }
extern "C" void fakeDump()
{
    for (IPluginCreatorInterface* c : gRegistry.creators)
        std::printf("holds %s %s '%s' %s\n", nameOf(c, 0), nameOf(c, 1), nameOf(c, 2), c == &gForeign ? "foreign" : "ours");
    std::fflush(stdout);
}
"""

# As ONNX Runtime's TensorRT provider: TensorRT loaded RTLD_LOCAL, then the plugin library RTLD_NOW | RTLD_LOCAL.
DRIVER = r"""
import ctypes, os, sys
nvinfer_path, folder, scenario = sys.argv[1:4]
mode = os.RTLD_NOW | os.RTLD_LOCAL
nvinfer = ctypes.CDLL(nvinfer_path, mode=mode)
if scenario == "loadLibrary first":
    assert nvinfer.fakeLoadLibrary(os.path.join(folder, "libvfnet_trt_plugins.so").encode()) == 1
elif scenario == "foreign first":
    assert nvinfer.fakeRegisterForeign() == 1
library = os.path.join(folder, "libvfnet_trt_plugins_autoregister.so")
try:
    ctypes.CDLL(library, mode=mode)
except OSError as exc:
    print("load failed:", exc, flush=True)
    sys.exit(3)
nvinfer.fakeDump()
with open("/proc/self/maps") as maps:
    mapped = sorted({line.split()[-1] for line in maps if line.rstrip().endswith("/libvfnet_trt_plugins.so")})
print("mapped", *mapped, flush=True)
"""


def tensorrt_major(headers: Path) -> str:
    return re.search(r"#define TRT_MAJOR_ENTERPRISE (\d+)", (headers / "NvInferVersion.h").read_text())[1]


def run(command, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=600, **kwargs)
    assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module", params=HEADER_SETS, ids=lambda p: p.parent.name)
def linked(request, tmp_path_factory):
    """trt_plugins built by CMake against one header set and a stand-in libnvinfer.so.N (its NVINFER_LIBRARY
    branch, as on a machine with TensorRT): (build folder, stand-in path, TensorRT major)."""
    headers: Path = request.param
    major = tensorrt_major(headers)
    root = tmp_path_factory.mktemp(f"linked-{headers.parent.name}")
    (root / "nvinfer").mkdir()
    (root / "nvinfer" / "fake_nvinfer.cpp").write_text(FAKE_NVINFER)
    stand_in = root / "nvinfer" / f"libnvinfer.so.{major}"
    run(["g++", "-std=c++17", "-shared", "-fPIC", "-Wall", "-Wextra", "-Werror", "-Wno-deprecated-declarations", "-isystem", headers, "-isystem", CUDA / "include",
         root / "nvinfer" / "fake_nvinfer.cpp", f"-Wl,-soname,libnvinfer.so.{major}", "-ldl", "-o", stand_in])  # fmt: skip
    (root / "nvinfer" / "libnvinfer.so").symlink_to(stand_in.name)
    build = root / "build"
    configure = run(["cmake", "-S", REPOSITORY / "trt_plugins", "-B", build, f"-DCMAKE_CUDA_COMPILER={NVCC}", f"-DTENSORRT_INCLUDE_DIR={headers}",
                     f"-DNVINFER_LIBRARY={root / 'nvinfer' / 'libnvinfer.so'}", "-DCMAKE_CUDA_ARCHITECTURES=75-real"])  # fmt: skip
    assert "-- vfnet: building vfnet_trt_plugins_autoregister, linked against" in configure.stdout, configure.stdout
    run(["cmake", "--build", build, "-j", "2", "--target", "vfnet_trt_targets"])
    return build, stand_in, major


def deploy(build: Path, folder: Path) -> Path:
    """Both TensorRT libraries copied into a fresh folder, as docker/Dockerfile.gpu does."""
    folder.mkdir(parents=True)
    for name in TRT_LIBRARIES:
        shutil.copy2(build / name, folder / name)
    return folder


def load(stand_in: Path, folder: Path, scenario: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", DRIVER, str(stand_in), str(folder), scenario], capture_output=True, text=True, timeout=60)


@needs_toolchain
def test_linked_libraries_carry_only_an_origin_runpath_and_name_their_dependencies(linked):
    build, _, major = linked
    plugins, autoregister = (dynamic_section(build / name) for name in TRT_LIBRARIES)
    assert plugins["RUNPATH"] == ["$ORIGIN"] and plugins["RPATH"] == [], plugins
    assert autoregister["RUNPATH"] == ["$ORIGIN"] and autoregister["RPATH"] == [], autoregister
    assert plugins["SONAME"] == ["libvfnet_trt_plugins.so"]
    assert {"libvfnet_trt_plugins.so", f"libnvinfer.so.{major}"} <= set(autoregister["NEEDED"]), autoregister


@needs_toolchain
def test_the_copied_autoregister_library_finds_the_plugin_library_beside_it(linked, tmp_path):
    build, stand_in, major = linked
    folder = deploy(build, tmp_path / "opt" / "vfnet" / "plugins")
    resolved = run(["ldd", folder / "libvfnet_trt_plugins_autoregister.so"], env={**os.environ, "LD_LIBRARY_PATH": str(stand_in.parent)}).stdout
    paths = dict(re.findall(r"^\s*(\S+) => (\S+)", resolved, flags=re.M))
    assert paths["libvfnet_trt_plugins.so"] == str(folder / "libvfnet_trt_plugins.so"), resolved
    assert paths[f"libnvinfer.so.{major}"] == str(stand_in), resolved
    assert str(build) not in resolved


@needs_toolchain
@pytest.mark.parametrize("scenario", ["alone", "loadLibrary first", "foreign first"])
def test_the_copied_autoregister_library_loads_and_registers_each_creator_once(linked, tmp_path, scenario):
    build, stand_in, _ = linked
    folder = deploy(build, tmp_path / "plugins")
    ran = load(stand_in, folder, scenario)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    calls = [line for line in ran.stdout.splitlines() if line.startswith("call ")]
    held = [line for line in ran.stdout.splitlines() if line.startswith("holds ")]
    assert f"mapped {folder / 'libvfnet_trt_plugins.so'}" in ran.stdout.splitlines(), ran.stdout  # the copy, not the build tree
    assert not any(c.startswith("call getCreator") for c in calls), calls  # a miss there is an error in TensorRT's log
    if scenario == "alone":
        assert calls == ["call getAllCreators", "call registerCreator StarDeformConv 1 '' -> registered"], calls
        assert held == ["holds StarDeformConv 1 '' ours"] and ran.stderr == "", ran.stdout + ran.stderr
    elif scenario == "loadLibrary first":  # both our libraries in one process: the creator is there already, nothing said
        assert calls == ["call loadLibrary", "call registerCreator StarDeformConv 1 '' -> registered", "call getAllCreators"], calls
        assert held == ["holds StarDeformConv 1 '' ours"] and ran.stderr == "", ran.stdout + ran.stderr
    else:  # another library holds the name: left alone, one line says so
        assert calls == ["call registerCreator StarDeformConv 1 '' -> registered", "call getAllCreators"], calls
        assert held == ["holds StarDeformConv 1 '' foreign"], ran.stdout
        assert ran.stderr == "vfnet_trt_plugins_autoregister: StarDeformConv version 1 is registered already by another library; that one is used\n"


@needs_toolchain
def test_an_unlinked_autoregister_library_does_not_load_where_tensorrt_is_local(linked, tmp_path):
    """Why the autoregister library is skipped without a libnvinfer to link: unlinked (as CMake built it
    before), getPluginRegistry stays undefined, and a host that loaded TensorRT RTLD_LOCAL cannot load it."""
    build, stand_in, _ = linked
    folder = deploy(build, tmp_path / "plugins")
    unlinked = folder / "libvfnet_trt_plugins_autoregister.so"
    unlinked.unlink()
    run(["g++", "-shared", build / AUTOREGISTER_OBJECT, "-L", folder, "-lvfnet_trt_plugins", "-Wl,-rpath,$ORIGIN", "-o", unlinked])
    assert "getPluginRegistry" in run(["nm", "-D", "--undefined-only", unlinked]).stdout
    ran = load(stand_in, folder, "alone")
    assert ran.returncode == 3 and "undefined symbol: getPluginRegistry" in ran.stdout, ran.stdout + ran.stderr
