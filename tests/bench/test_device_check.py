"""bench/device_check's pure parts, without a GPU or a build: the summary of step results, the kernel
paths and how they are called, detection matching, and the SASS and ncu parsers. The stand-in itself
(`make device-check-standin`) runs in CI through make."""

import re
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from device_check import REPOSITORY, detections, driver, kernels, pythonpath, report, run, steps_build, steps_tools  # noqa: E402


def step(status, reason="", checks=(), lines=()):
    return {"status": status, "reason": reason, "checks": list(checks), "figures": {}, "lines": list(lines), "seconds": 1.5, "what": "a step"}


def test_the_summary_names_every_step_with_its_status_and_the_failures_with_their_details():
    results = {
        "build": step("passed", "2 checks passed", [{"name": "ptxas", "status": "passed", "detail": "0 spills"}], ["| a | b |"]),
        "kernel": step("failed", "P3: error 2e-3", [{"name": "P3 b1 float16", "status": "failed", "detail": "error 2.00e-03 (bound 1e-03)"}]),
        "profile": step("skipped", "--cpu-standin: ncu needs a GPU"),
    }
    assert not report.overall_passed(results) and report.overall_passed({k: v for k, v in results.items() if k != "kernel"})
    text = "\n".join(report.summary_lines({"gpu": "NVIDIA H100 80GB HBM3 (sm_90)", "mode": "gpu", "seconds": 12, "budget": 480}, results))
    assert text.startswith("# Device check: NVIDIA H100 80GB HBM3 (sm_90)") and "**FAILED**: 1 passed, 1 failed, 1 skipped" in text
    assert "| kernel | failed | 1.5 | P3: error 2e-3 |" in text and "| profile | skipped | 1.5 | --cpu-standin: ncu needs a GPU |" in text
    assert "- failed: P3 b1 float16: error 2.00e-03 (bound 1e-03)" in text and "| a | b |" in text


def test_a_report_fails_on_any_failed_check_and_skips_when_nothing_passed():
    found = report.Report()
    found.skip("float16", "the host build is float32 only")
    assert found.result()["status"] == "skipped"
    found.check("float32", True, "ok")
    assert found.result()["status"] == "passed" and found.result()["reason"] == "1 check passed, 1 skipped"
    found.check("identity", False, "error 1")
    assert found.result()["status"] == "failed" and found.result()["reason"] == "identity: error 1"
    assert report.Report().result("no GPU")["status"] == "skipped"


def test_the_kernel_paths_are_the_algorithms_of_the_python_face_through_the_c_entry_points():
    from vfnet.trt_plugins import ALGORITHMS

    paths = kernels.kernel_paths()
    assert [(p.name, p.algorithm, p.symbol, p.prefix, p.kinds, p.tensor_cores) for p in paths] == [
        ("default", "default", "vfnetStarDeformConvCuda", (), {"float32": 0, "float16": 1}, True),  # the default runs float16 on tensor cores
        ("cuda-cores", "cuda_cores", "vfnetStarDeformConvCudaWith", (ALGORITHMS["cuda_cores"],), {"float32": 0, "float16": 1}, False),
        ("tensor-cores", "tensor_cores", "vfnetStarDeformConvCudaWith", (ALGORITHMS["tensor_cores"],), {"float16": 1}, True),
    ]
    assert (kernels.bound("float16", True), kernels.bound("float16", False), kernels.bound("float32", True)) == (2e-3, 1e-3, 1e-5)


def test_a_path_calls_its_entry_point_with_the_c_apis_parameters():
    source = (REPOSITORY / "trt_plugins" / "star_deform_conv" / "starDeformConvCuda.cpp").read_text()
    calls = []

    class Library:
        def __getitem__(self, symbol):
            def function(*arguments):
                calls.append((symbol, function.argtypes, arguments))
                return 0

            return function

    for path in kernels.kernel_paths():
        for dtype in path.kinds:
            assert path.bind(Library())(dtype, ("f", "b", "w", "o"), (2, 3, 4, 5, 6, 8), "s") == 0
            symbol, argtypes, arguments = calls.pop()
            assert symbol == path.symbol and arguments == (*path.prefix, path.kinds[dtype], "f", "b", "w", "o", 2, 3, 4, 5, 6, 8, "s")
            [parameters] = re.findall(rf"\bint {symbol}\(([^)]*)\)", source)  # the C API declares it with as many parameters
            assert len(argtypes) == len(arguments) == len(parameters.split(","))


def test_the_driver_launches_each_shape_path_type_and_stream_in_order():
    spec = {"shapes": [[1, 2, 3, 4, 5, 8]], "paths": ["default", "tensor-cores"], "streams": ["created", "default"]}
    launches = [(shape, dtype, path.name, stream) for shape, dtype, path, stream in driver.expand_launches(spec)]
    shape = (1, 2, 3, 4, 5, 8)
    assert launches == [
        (shape, "float32", "default", "created"),
        (shape, "float32", "default", "default"),
        (shape, "float16", "default", "created"),
        (shape, "float16", "default", "default"),
        (shape, "float16", "tensor-cores", "created"),
        (shape, "float16", "tensor-cores", "default"),
    ]


def test_the_steps_run_in_their_order_each_with_a_time_box_or_a_reason_to_skip_in_the_stand_in():
    names = [step.name for step in run.STEPS]
    assert names == ["environment", "build", "kernel", "sanitizers", "profile", "timing", "network", "backend", "gpu-tests"]
    assert all(step.box > 0 and (isinstance(step.standin, str) or 0 < step.standin <= step.box) and callable(step.run) for step in run.STEPS)


def boxes_scores_labels(boxes, scores, labels):
    return np.array(boxes, np.float32).reshape(-1, 4), np.array(scores, np.float32), np.array(labels)


A, B, C, D = [0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50], [60, 60, 70, 70]


def test_detections_match_one_to_one_and_may_swap_only_near_ties_or_fall_off_only_at_a_cut():
    want = boxes_scores_labels([A, B, C], [0.9, 0.5004, 0.5], [1, 2, 3])
    tie_swapped = boxes_scores_labels([A, C, [20, 20, 30, 30.01]], [0.9, 0.5003, 0.5001], [1, 3, 2])
    result = detections.match_detections(tie_swapped, want)
    assert result["passed"] and result["matched"] == 3 and not result["labels_in_order"] and 0.99 < result["min_iou"] < 1
    assert not detections.match_detections(boxes_scores_labels([A, B, C], [0.9, 0.45, 0.4], [1, 2, 3]), want)["passed"]  # 0.45 against 0.5004
    assert not detections.match_detections(boxes_scores_labels([A, B, C], [0.9, 0.5004, 0.5], [1, 4, 3]), want)["passed"]  # another label
    assert not detections.match_detections(boxes_scores_labels([A, [20, 20, 30, 31], C], [0.9, 0.5004, 0.5], [1, 2, 3]), want)["passed"]  # IoU 0.91
    cut = boxes_scores_labels([A, B, D], [0.9, 0.5004, 0.5003], [1, 2, 5])  # the last differs where a full top-K of 3 cut it
    assert detections.match_detections(cut, want, limit=3)["passed"] and detections.match_detections(cut, want, limit=3)["unmatched"] == [1, 1]
    assert not detections.match_detections(cut, want, limit=4)["passed"] and not detections.match_detections(cut, want)["passed"]  # no cut: no excuse
    dropped = boxes_scores_labels([A, B], [0.9, 0.5004], [1, 2])
    assert not detections.match_detections(dropped, want)["passed"] and detections.match_detections(dropped, want, score_threshold=0.4995)["passed"]


SASS = """
Fatbin elf code:
================
arch = sm_90

\tcode for sm_90
\t\tFunction : _ZN5vfnet4star20starDeformConvKernelIfEEvPKT_
        /*0000*/                   LDC R1, c[0x0][0x28] ;                    /* 0x00000a00ff017b82 */
        /*0010*/              @!P0 FFMA R2, R3, R4, R2 ;                      /* 0x0000000000007919 */
        /*0020*/                   HMMA.16816.F32 R4, R8, R12, R4 ;          /* 0x0000000000007919 */
        /*0030*/                   LDS.128 R8, [R2] ;                        /* 0x0000000000007919 */
        /*0040*/                   BAR.SYNC.DEFER_BLOCKING 0x0 ;             /* 0x0000000000007919 */
"""


def test_sass_counts_per_architecture_and_function():
    [row] = steps_build.sass_counts(SASS)
    assert row["arch"] == "sm_90" and row["function"].endswith("IfEEvPKT_")
    assert (row["instructions"], row["FFMA"], row["HMMA"], row["LDS"], row["BAR"], row["STS"]) == (5, 1, 1, 1, 1, 0)


def test_ncu_csv_rows_become_launches_with_values_and_units():
    header = '"ID","Process ID","Kernel Name","Section Name","Metric Name","Metric Unit","Metric Value"'
    rows = [
        '"0","7","void vfnet::star::starDeformConvKernel<float>(const T1 *, int)","Command line profiler metrics","gpu__time_duration.sum","nsecond","1,234,567"',
        '"0","7","void vfnet::star::starDeformConvKernel<float>(const T1 *, int)","Command line profiler metrics","sm__warps_active.avg.pct_of_peak_sustained_active","%","48.5"',
        '"1","7","void vfnet::star::starDeformConvKernel<__half>(const T1 *, int)","Command line profiler metrics","gpu__time_duration.sum","nsecond","2,000"',
    ]
    launches = steps_tools.parse_ncu_csv("\n".join(["==PROF== Connected to process 7", "driver: ok", header, *rows]))
    assert launches["0"]["gpu__time_duration.sum"] == (1234567.0, "nsecond") and launches["0"]["sm__warps_active.avg.pct_of_peak_sustained_active"][0] == 48.5
    assert steps_build.readable_kernel(launches["1"]["kernel"]) == "starDeformConvKernel<__half>" and steps_tools.milliseconds(
        2000.0, "nsecond"
    ) == pytest.approx(0.002)


def test_the_pythonpath_folder_links_every_package_of_pyproject(tmp_path):
    tomllib = pytest.importorskip("tomllib")
    package_dir = tomllib.loads((REPOSITORY / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    assert package_dir == {f"vfnet.{name}": name for name in pythonpath.PACKAGES}
    root = pythonpath.make_pythonpath(tmp_path / "pythonpath")
    assert pythonpath.make_pythonpath(tmp_path / "pythonpath") == root  # again: nothing to change
    for name in pythonpath.PACKAGES:
        assert (root / "vfnet" / name).resolve() == REPOSITORY / name and (root / "vfnet" / name / "__init__.py").is_file()
    assert (root / "vfnet" / "__init__.py").is_file()
