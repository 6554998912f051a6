"""Generate the Python code of the .proto files beside this module with grpcio-tools' protoc:
`make grpc-code` (or `python -m vfnet.server.app.grpc.generate`) rewrites inference_pb2.py,
inference_pb2_grpc.py and model_config_pb2.py here; tests/server/app/test_grpc_code.py checks that
the committed files are exactly what it makes, so they never drift from the .proto files.

The protos are compiled under the import path vfnet/server/app/grpc/, the generated code's own
package, so that the generated modules import each other as `from vfnet.server.app.grpc import ...`
(protoc turns a .proto's path into the Python module name). The output depends on the version of
grpcio-tools (pinned in the `dev` extra): another version writes other version checks into them.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACKAGE_PATH = "vfnet/server/app/grpc"  # where the protos sit on protoc's import path
PROTOS = ("model_config.proto", "inference.proto")
SERVICES = ("inference.proto",)  # the protos with a service, which get a *_pb2_grpc.py
GENERATED = ("model_config_pb2.py", "inference_pb2.py", "inference_pb2_grpc.py")


def generate(out: Path) -> list[Path]:
    """Compile the protos into `out` (a folder); returns the files written, GENERATED's order."""
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory() as tmp:
        messages = ["--python_out", tmp, *(str(HERE / name) for name in PROTOS)]
        services = ["--grpc_python_out", tmp, *(str(HERE / name) for name in SERVICES)]
        for outputs in (messages, services):
            if protoc.main(["grpc_tools.protoc", f"--proto_path={PACKAGE_PATH}={HERE}", *outputs]) != 0:
                raise RuntimeError(f"protoc failed on {', '.join(PROTOS)} (its message is above)")
        out.mkdir(parents=True, exist_ok=True)
        for name in GENERATED:
            shutil.copyfile(Path(tmp, PACKAGE_PATH, name), out / name)
    return [out / name for name in GENERATED]


def main() -> int:
    for path in generate(HERE):
        print(f"generated {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
