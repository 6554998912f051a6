/*
 * C interface of the host build (libvfnet_star_deform_conv_host.so), float32, contiguous NCHW:
 *   features [B, C, H, W], bbox [B, 4, H, W] (l, t, r, b in input pixels), weight [C_out, C, 3, 3]
 *   -> output [B, C_out, H, W]. `threads` <= 0: one per hardware thread.
 * Returns 0, or non-zero with a message in `error` (at most errorSize bytes, NUL-terminated).
 */
#pragma once

#include <stddef.h>

#ifdef __cplusplus
extern "C"
{
#endif

__attribute__((visibility("default"))) int vfnetStarDeformConvF32(float const* features, float const* bbox, float const* weight, float* output, int batch,
    int channels, int height, int width, int outChannels, int stride, int threads, char* error, size_t errorSize);

#ifdef __cplusplus
}
#endif
