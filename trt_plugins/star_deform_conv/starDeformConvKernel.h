/*
 * The star deformable convolution on the GPU: two fused kernels, no TensorRT types.
 *
 *   features [B, C, H, W]      float32 or float16 (`type`)
 *   bbox     [B, 4, H, W]      float32 (l, t, r, b) in input pixels (see starDeformConvCore.h)
 *   weight   [C_out, C, 3, 3]  the same type as features
 *   output   [B, C_out, H, W]  the same type as features
 *
 * Both are implicit GEMMs (README.md, "The kernels"): the sampled columns are formed in shared
 * memory from the box, so nothing of size C * 9 * H * W is ever written; no workspace, no cuBLAS.
 *   kCudaCores    float32 multiplies on CUDA cores, for float32 inputs and for float16 inputs
 *                 (widened to float32): exact float32 arithmetic; the reference of the other.
 *   kTensorCores  float16 only: float16 columns and weights, mma.sync on tensor cores, float32
 *                 accumulation (sm_80 and newer: m16n8k16; sm_75: m16n8k8).
 *   kDefault      kTensorCores for float16, kCudaCores for float32.
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

enum class Algorithm
{
    kDefault = 0,
    kCudaCores = 1,
    kTensorCores = 2,
};

//! Enqueue the convolution on `stream` with the default algorithm (what the TensorRT plugin calls);
//! returns the launch error (cudaSuccess when queued).
cudaError_t starDeformConvForward(DataType type, void const* features, float const* bbox, void const* weight,
    void* output, int batch, int channels, int height, int width, int outChannels, float stride,
    cudaStream_t stream) noexcept;

//! The same with the algorithm chosen; kTensorCores with float32 is cudaErrorInvalidValue.
cudaError_t starDeformConvForwardWith(Algorithm algorithm, DataType type, void const* features, float const* bbox,
    void const* weight, void* output, int batch, int channels, int height, int width, int outChannels, float stride,
    cudaStream_t stream) noexcept;

} // namespace star
} // namespace vfnet
