"""The HTTP routes, one module per concern; `router` holds them all."""

from fastapi import APIRouter

from . import detection, operations

router = APIRouter()
router.include_router(detection.router)
router.include_router(operations.router)

__all__ = ["router"]
