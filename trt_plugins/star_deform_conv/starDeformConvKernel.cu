/*
 * The fused star deformable convolution kernels (declared in starDeformConvKernel.h).
 *
 * Each kernel is a thin driver over the tiled code of starDeformConvCore.h, which the host mirror
 * (starDeformConvHost.cpp) runs too: per group of input channels, (1) every thread loads its part of
 * the weight rows and samples its part of the columns into shared memory, (2) after a barrier every
 * warp multiplies, (3) after a second barrier the next group may overwrite shared memory. At the end
 * each thread stores its results. README.md ("The kernels") gives the tiles, the shared-memory
 * layouts and their bank arithmetic.
 */
#include "starDeformConvCore.h"
#include "starDeformConvKernel.h"

#include <cstddef>
#include <cstdint>

namespace vfnet
{
namespace star
{
namespace
{

//! float32 multiplies on CUDA cores: 128 output channels x 128 cells per block, 8 x 8 per thread.
template <typename T>
__global__ void __launch_bounds__(kBlockThreads, 2) starDeformConvCudaCores(Problem<T> p)
{
    __shared__ __align__(16) CudaCoreShared shared;
    BlockTile const block{static_cast<int>(blockIdx.x), static_cast<int>(blockIdx.y), static_cast<int>(blockIdx.z)};
    int const thread = static_cast<int>(threadIdx.x);
    CellState const cell = cellState<CudaCoreTile>(p, block, thread);
    CudaCoreAccumulators acc = {};
    int const groups = groupsOf<CudaCoreTile>(p.channels);
    for (int group = 0; group < groups; ++group)
    {
        cudaCoreLoad(shared, p, block, cell, group, thread);
        __syncthreads();
        cudaCoreMultiply(shared, thread, acc);
        __syncthreads();
    }
    cudaCoreStore(p, block, thread, acc);
}

//! float16 multiplies on tensor cores: 256 output channels x 64 cells per block, 64 x 32 per warp.
__global__ void __launch_bounds__(kBlockThreads, 2) starDeformConvTensorCores(Problem<uint16_t> p)
{
    __shared__ __align__(16) TensorCoreShared shared;
    BlockTile const block{static_cast<int>(blockIdx.x), static_cast<int>(blockIdx.y), static_cast<int>(blockIdx.z)};
    int const thread = static_cast<int>(threadIdx.x);
    int const warp = thread / kWarpSize;
    int const lane = thread % kWarpSize;
    CellState const cell = cellState<TensorCoreTile>(p, block, thread);
    TensorCoreAccumulators acc[1] = {};
    int const groups = groupsOf<TensorCoreTile>(p.channels);
    for (int group = 0; group < groups; ++group)
    {
        tensorCoreLoad(shared, p, block, cell, group, thread);
        __syncthreads();
        tensorCoreMultiply<1>(shared, warp, lane, acc);
        __syncthreads();
    }
    tensorCoreStore(p, block, warp, lane, acc[0]);
}

template <class Tile, typename T>
cudaError_t launch(void const* features, float const* bbox, void const* weight, void* output, int batch, int channels,
    int height, int width, int outChannels, float stride, cudaStream_t stream, void (*kernel)(Problem<T>))
{
    Problem<T> const p = problemOf<Tile>(static_cast<T const*>(features), bbox, static_cast<T const*>(weight),
        static_cast<T*>(output), channels, height, width, outChannels, stride);
    int cellTiles;
    int rowTiles;
    gridOf<Tile>(height * width, outChannels, cellTiles, rowTiles);
    if (rowTiles > 65535)
    {
        return cudaErrorInvalidValue;
    }
    kernel<<<dim3(cellTiles, rowTiles, batch), kBlockThreads, 0, stream>>>(p);
    return cudaPeekAtLastError(); // the launch's own error, without clearing one that other code left pending
}

} // namespace

cudaError_t starDeformConvForwardWith(Algorithm algorithm, DataType type, void const* features, float const* bbox,
    void const* weight, void* output, int batch, int channels, int height, int width, int outChannels, float stride,
    cudaStream_t stream) noexcept
{
    if (algorithm == Algorithm::kTensorCores && type != DataType::kFloat16)
    {
        return cudaErrorInvalidValue; // tensor cores multiply float16 only
    }
    if (batch <= 0 || height <= 0 || width <= 0 || outChannels <= 0)
    {
        return cudaSuccess; // an empty output: nothing to compute
    }
    if (channels <= 0 || !(stride > 0.0F) || batch > 65535)
    {
        return cudaErrorInvalidValue;
    }
    if (type == DataType::kFloat16 && algorithm != Algorithm::kCudaCores)
    {
        return launch<TensorCoreTile, uint16_t>(features, bbox, weight, output, batch, channels, height, width,
            outChannels, stride, stream, starDeformConvTensorCores);
    }
    if (type == DataType::kFloat16)
    {
        return launch<CudaCoreTile, uint16_t>(features, bbox, weight, output, batch, channels, height, width,
            outChannels, stride, stream, starDeformConvCudaCores<uint16_t>);
    }
    return launch<CudaCoreTile, float>(features, bbox, weight, output, batch, channels, height, width, outChannels,
        stride, stream, starDeformConvCudaCores<float>);
}

cudaError_t starDeformConvForward(DataType type, void const* features, float const* bbox, void const* weight,
    void* output, int batch, int channels, int height, int width, int outChannels, float stride,
    cudaStream_t stream) noexcept
{
    return starDeformConvForwardWith(Algorithm::kDefault, type, features, bbox, weight, output, batch, channels, height,
        width, outChannels, stride, stream);
}

} // namespace star
} // namespace vfnet
