/*
 * C interface of the host build (libvfnet_star_deform_conv_host.so), contiguous NCHW:
 *   features [B, C, H, W], bbox [B, 4, H, W] float32 (l, t, r, b in input pixels),
 *   weight [C_out, C, 3, 3] -> output [B, C_out, H, W]. `threads` <= 0: one per hardware thread.
 * Each returns 0, or non-zero with a message in `error` (at most errorSize bytes, NUL-terminated).
 * An empty output (B, H or W 0) is a success that reads and writes nothing: its buffers may be null.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C"
{
#endif

//! The host build proper, float32: sampled columns of bands of cells, then a vectorised GEMM.
__attribute__((visibility("default"))) int vfnetStarDeformConvF32(float const* features, float const* bbox, float const* weight, float* output, int batch,
    int channels, int height, int width, int outChannels, int stride, int threads, char* error, size_t errorSize);

//! The host mirror of a CUDA kernel: the kernel's own tile loops, index arithmetic, shared-memory
//! layouts, sampling and rounding (starDeformConvCore.h), block by block, thread by thread.
//!   algorithm 0: the kernel the GPU would run for `type` (1 for float32, 2 for float16);
//!             1: the CUDA-core kernel (float32 multiplies), type 0 or 1;
//!             2: the tensor-core kernel (float16 products, float32 sums), type 1 only.
//!   type 0: float32 features, weight and output; 1: float16 (uint16_t bit patterns). bbox float32.
__attribute__((visibility("default"))) int vfnetStarDeformConvTiled(int algorithm, int type, void const* features, float const* bbox,
    void const* weight, void* output, int batch, int channels, int height, int width, int outChannels, int stride, int threads,
    char* error, size_t errorSize);

//! The mirror's float16 rounding (round to nearest even, as __float2half_rn) and widening:
//! halves[i] = float16(values[i]), widened[i] = float(halves[i]). Returns 0.
__attribute__((visibility("default"))) int vfnetStarHalfRoundTrip(float const* values, uint16_t* halves, float* widened, size_t count);

#ifdef __cplusplus
}
#endif
