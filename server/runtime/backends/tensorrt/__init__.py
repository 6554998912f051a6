"""The TensorRT backend, everything of it in one package (TensorRT and cuda-python imported lazily):

    backend.py  TensorRTBackend: serves an engine (.engine + its .engine.json sidecar) on a CUDA GPU
    build.py    engines from our ONNX files: the builder, our plugin library, `prepare_engine` for serving
    cache.py    engines as files: the shape profile, the manifest, the cache keyed by its hash
    preflight.py   a CPU check of an ONNX graph against what TensorRT's ONNX parser imports (with
                   preflight_rules.py, the parser's facts as data, and preflight_graph.py, the graph)

`vfnet export trt` uses build.py and cache.py; `vfnet serve --backend tensorrt --model M.onnx`
reaches `prepare_engine` through the runtime's `open_model`, which serves the cached engine or
builds it while the server listens.
"""
