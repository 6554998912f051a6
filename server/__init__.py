"""vfnet.server: the inference runtime (`runtime/`, no torch needed) and the HTTP service (`app/`)."""
