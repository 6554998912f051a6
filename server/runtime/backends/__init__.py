"""Backends run the exported inference contract on arrays:

    run(images uint8 [B, 3, H, W], image_sizes int64 [B, 2], iou_threshold float)
      -> boxes [B, K, 4] float32 xyxy (resized pixels), scores [B, K], labels [B, K] int64, num_detections [B]

Each module imports its library lazily, inside the backend's constructor.
"""
