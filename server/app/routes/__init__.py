"""The HTTP routes, one module per concern (v2: the Open Inference Protocol); `router` holds them all."""

from fastapi import APIRouter

from . import detection, operations, v2

router = APIRouter()
router.include_router(detection.router)
router.include_router(operations.router)
router.include_router(v2.router)

__all__ = ["router"]
