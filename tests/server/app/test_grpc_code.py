"""The gRPC code in server/app/grpc is what its .proto files make (`make grpc-code`), and those
.proto files say what Triton's published ones say for everything they share: the service's rpcs,
every message's field names, numbers and types, every enum's values, so tritonclient.grpc and
perf_analyzer talk to the server. Ours are read from protoc's descriptor set, not imported: the
generated modules and tritonclient's define the same symbols, which one process cannot hold."""

from __future__ import annotations

import tempfile
from pathlib import Path

from google.protobuf import descriptor_pb2
from tritonclient.grpc import service_pb2

from vfnet.server.app.grpc import generate


def test_the_committed_code_is_what_the_protos_make(tmp_path):
    for made in generate.generate(tmp_path):
        committed = generate.HERE / made.name
        assert made.read_bytes() == committed.read_bytes(), f"{committed} is not what {', '.join(generate.PROTOS)} make: run `make grpc-code`"


def our_files() -> list[descriptor_pb2.FileDescriptorProto]:
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp, "set.pb")
        sources = [str(generate.HERE / name) for name in generate.PROTOS]
        assert protoc.main(["protoc", f"--proto_path={generate.PACKAGE_PATH}={generate.HERE}", f"--descriptor_set_out={out}", *sources]) == 0
        return list(descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file)


def fields(message: descriptor_pb2.DescriptorProto) -> dict[str, tuple]:
    return {f.name: (f.number, f.type, f.label, f.type_name) for f in message.field}


def test_every_rpc_message_field_and_enum_value_is_tritons():
    triton = service_pb2.DESCRIPTOR.pool
    checked = 0

    def compare(prefix: str, message: descriptor_pb2.DescriptorProto) -> None:
        nonlocal checked
        name = f"{prefix}.{message.name}"
        theirs = descriptor_pb2.DescriptorProto()
        triton.FindMessageTypeByName(name).CopyToProto(theirs)
        assert fields(message).items() <= fields(theirs).items(), name
        for enum in message.enum_type:
            assert {v.name: v.number for v in enum.value}.items() <= {v.name: v.number for v in triton.FindEnumTypeByName(f"{name}.{enum.name}").values}.items()
        for nested in message.nested_type:
            compare(name, nested)
        checked += 1

    for file in our_files():
        assert file.package == "inference"
        for message in file.message_type:
            compare("inference", message)
        for enum in file.enum_type:
            assert {v.name: v.number for v in enum.value} == {v.name: v.number for v in triton.FindEnumTypeByName(f"inference.{enum.name}").values}
        for service in file.service:
            theirs = triton.FindServiceByName(f"inference.{service.name}")
            for method in service.method:
                twin = theirs.methods_by_name[method.name]
                assert (method.input_type, method.output_type) == (f".{twin.input_type.full_name}", f".{twin.output_type.full_name}")
            assert [m.name for m in service.method] == [
                "ServerLive",
                "ServerReady",
                "ModelReady",
                "ServerMetadata",
                "ModelMetadata",
                "ModelInfer",
                "ModelConfig",
            ]
    assert checked >= 25  # every message, nested ones (map entries included) too
