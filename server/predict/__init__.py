"""vfnet.server.predict: bulk detection (`vfnet predict`) through the runtime, on one machine or on Ray.

    from vfnet.server.predict import Journal, PredictOptions, expand_sources, predict
    summary = predict(load_detector("m.onnx"), expand_sources(["photos/"]), Journal(Path("dets.jsonl"), resume=False), PredictOptions())

The rooms: sources.py (arguments -> files -> images and video frames), records.py (one record per
input; the journal and the formats made from it), local.py (decode pool -> batches by canvas ->
records), ray_job.py (the same job on Ray Data; Ray imported only there), cli.py.
Needs no torch; videos need PyAV and Parquet pyarrow (`pip install 'vfnet-serve[predict]'`).
"""

from .local import PredictOptions, Summary, predict
from .records import Journal, OutputError, record
from .sources import Item, Source, SourceError, expand_sources, read_items

__all__ = ["Item", "Journal", "OutputError", "PredictOptions", "Source", "SourceError", "Summary", "expand_sources", "predict", "read_items", "record"]
