"""KServe v2 (the Open Inference Protocol) over gRPC: our .proto files, their generated code
(model_config_pb2, inference_pb2, inference_pb2_grpc: never edited, `make grpc-code`), tensors.py
(messages <-> the protocol's request and outputs), servicer.py (the rpcs and the status-code table)
and server.py (grpc.aio beside uvicorn, health, drain). Importing this package imports nothing: the
app imports server.py only when it serves gRPC."""
