/*
 * The star deformable convolution on the GPU: one fused kernel, no TensorRT types.
 *
 *   features [B, C, H, W]      float32 or float16 (`type`)
 *   bbox     [B, 4, H, W]      float32 (l, t, r, b) in input pixels (see starDeformConvCore.h)
 *   weight   [C_out, C, 3, 3]  the same type as features
 *   output   [B, C_out, H, W]  the same type as features
 *
 * Products are accumulated in float32 for both types. No workspace, no cuBLAS: the 9 bilinear
 * taps of a tile of output cells are computed once into shared memory and the sampled columns are
 * formed on the fly from them (an implicit GEMM), so nothing of size C * 9 * H * W is ever written.
 */
#pragma once

#include <cuda_runtime_api.h>

namespace vfnet
{
namespace star
{

enum class DataType
{
    kFloat32,
    kFloat16,
};

//! Enqueue the convolution on `stream`; returns the launch error (cudaSuccess when queued).
cudaError_t starDeformConvForward(DataType type, void const* features, float const* bbox, void const* weight,
    void* output, int batch, int channels, int height, int width, int outChannels, float stride,
    cudaStream_t stream) noexcept;

} // namespace star
} // namespace vfnet
