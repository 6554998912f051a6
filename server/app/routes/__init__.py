"""The HTTP routes, one module per concern (open_inference: the Open Inference Protocol, /v2); `router` holds them all."""

from fastapi import APIRouter

from . import detection, open_inference, operations

router = APIRouter()
router.include_router(detection.router)
router.include_router(operations.router)
router.include_router(open_inference.router)

__all__ = ["router"]
