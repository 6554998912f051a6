"""ONNX translation of `vfnet::multiclass_nms` with the standard NonMaxSuppression operator.

The PyTorch op (model/postprocess.py) runs torchvision's batched_nms; here the same function is
built from ONNX operators so that NMS runs inside the graph, on the model's device:

1. NonMaxSuppression(boxes [B, N, 4], scores [B, C, N], K per class, IoU, score floor)
   -> selected [M, 3] rows (image, class, box), per image and class, score-sorted;
2. each selected row's score; a dense [B, M + K] table holding it in its image's row and -1
   elsewhere (the K extra columns of -1 keep TopK's K constant when M < K);
3. TopK(K) per image row -> the best K detections, sorted; entries still at -1 are padding.

Padding follows the PyTorch op: boxes and scores 0, labels -1.
"""

from __future__ import annotations

from onnxscript import opset19 as op


def multiclass_nms_onnx(boxes, scores, score_threshold: float, iou_threshold, max_detections: int):
    k = op.Constant(value_ints=[max_detections])
    selected = op.NonMaxSuppression(
        boxes,
        op.Transpose(scores, perm=[0, 2, 1]),  # [B, C, N]
        k,
        iou_threshold,
        op.Constant(value_floats=[score_threshold]),
    )  # [M, 3] int64: (image, class, box)
    image = op.Gather(selected, op.Constant(value_int=0), axis=1)  # [M]
    label = op.Gather(selected, op.Constant(value_int=1), axis=1)  # [M]
    box = op.Gather(selected, op.Constant(value_int=2), axis=1)  # [M]
    column = op.Constant(value_ints=[1])
    score = op.GatherND(scores, op.Concat(op.Unsqueeze(image, column), op.Unsqueeze(box, column), op.Unsqueeze(label, column), axis=1))  # [M]

    batch = op.Shape(scores, start=0, end=1)  # [1]
    images = op.Range(op.Constant(value_int=0), op.Squeeze(batch), op.Constant(value_int=1))  # [B]
    mine = op.Equal(op.Unsqueeze(images, column), op.Unsqueeze(image, op.Constant(value_ints=[0])))  # [B, M]
    minus_one = op.Constant(value_float=-1.0)
    dense = op.Where(mine, op.Unsqueeze(score, op.Constant(value_ints=[0])), minus_one)  # [B, M]
    filler = op.Expand(minus_one, op.Concat(batch, k, axis=0))  # [B, K]
    top_scores, top = op.TopK(op.Concat(dense, filler, axis=1), k, axis=1)  # [B, K] each, best first

    valid = op.Greater(top_scores, op.Constant(value_float=-0.5))  # [B, K] bool
    # A padding column may point past M (into the filler) or at another image's row: gather from
    # arrays extended by K entries so every index is in range, then mask with `valid`.
    no_box = op.Expand(op.Constant(value_ints=[0]), k)  # [K]
    no_label = op.Expand(op.Constant(value_ints=[-1]), k)  # [K]
    box_index = op.Gather(op.Concat(box, no_box, axis=0), top)  # [B, K]
    labels = op.Where(valid, op.Gather(op.Concat(label, no_label, axis=0), top), op.Constant(value_int=-1))  # [B, K]
    picked = op.GatherND(boxes, op.Unsqueeze(box_index, op.Constant(value_ints=[2])), batch_dims=1)  # [B, K, 4]
    zero = op.Constant(value_float=0.0)
    out_boxes = op.Where(op.Unsqueeze(valid, op.Constant(value_ints=[2])), picked, zero)  # [B, K, 4]
    out_scores = op.Where(valid, top_scores, zero)  # [B, K]
    num_detections = op.ReduceSum(op.Cast(valid, to=7), op.Constant(value_ints=[1]), keepdims=0)  # [B] int64
    return out_boxes, out_scores, labels, num_detections
