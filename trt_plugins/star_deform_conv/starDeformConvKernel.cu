/*
 * The fused star deformable convolution kernel (declared in starDeformConvKernel.h).
 *
 * One thread block computes a tile of kTileChannels output channels x kTilePixels output cells of
 * one image, as a GEMM over K = C * 9 (weight [C_out, K] x sampled columns [K, cells]):
 *   1. the 9 bilinear taps of each of the tile's cells (starDeformConvCore.h) into shared memory;
 *   2. for each slice of kTileK rows of K: the weight slice and the sampled column slice (each
 *      element a 4-neighbour bilinear sample of channel c = k / 9 at tap k % 9) into shared memory,
 *      converted to float; then each thread accumulates its 4 x 4 outputs in float registers.
 * Thread (tx, ty) owns channels ty + 16 i and cells tx + 16 j (i, j < 4): reads of shared memory and
 * the final stores are consecutive across a warp.
 */
#include "starDeformConvCore.h"
#include "starDeformConvKernel.h"

#include <cuda_fp16.h>

#include <cstddef>

namespace vfnet
{
namespace star
{
namespace
{

constexpr int kTileChannels = 64;
constexpr int kTilePixels = 64;
constexpr int kTileK = 16;
constexpr int kThreads = 256; // 16 x 16 threads, 4 x 4 outputs each

template <typename T>
__device__ __forceinline__ float toFloat(T value)
{
    return static_cast<float>(value);
}

template <typename T>
__device__ __forceinline__ T fromFloat(float value)
{
    return static_cast<T>(value);
}

template <>
__device__ __forceinline__ __half fromFloat<__half>(float value)
{
    return __float2half_rn(value);
}

template <typename T>
__global__ void __launch_bounds__(kThreads) starDeformConvKernel(T const* __restrict__ features,
    float const* __restrict__ bbox, T const* __restrict__ weight, T* __restrict__ output, int channels, int height,
    int width, int outChannels, float stride)
{
    __shared__ BilinearTap taps[kTilePixels][kTaps];
    __shared__ float weightTile[kTileK][kTileChannels];
    __shared__ float columnTile[kTileK][kTilePixels];

    int const cells = height * width;
    int const firstCell = blockIdx.x * kTilePixels;
    int const firstChannel = blockIdx.y * kTileChannels;
    int const image = blockIdx.z;
    int const depth = channels * kTaps; // K
    T const* imageFeatures = features + static_cast<size_t>(image) * channels * cells;
    float const* imageBox = bbox + static_cast<size_t>(image) * 4 * cells;

    for (int e = threadIdx.x; e < kTilePixels * kTaps; e += kThreads)
    {
        int const local = e / kTaps;
        int const k = e % kTaps;
        int const cell = firstCell + local;
        BilinearTap tap{{0, 0, 0, 0}, {0.0F, 0.0F, 0.0F, 0.0F}};
        if (cell < cells)
        {
            float row;
            float column;
            starPoint(imageBox[cell], imageBox[cells + cell], imageBox[2 * cells + cell], imageBox[3 * cells + cell],
                stride, cell / width, cell % width, k, row, column);
            tap = bilinearTap(row, column, height, width);
        }
        taps[local][k] = tap;
    }
    __syncthreads();

    int const tx = threadIdx.x % 16;
    int const ty = threadIdx.x / 16;
    float accumulator[4][4] = {};
    for (int k0 = 0; k0 < depth; k0 += kTileK)
    {
        for (int e = threadIdx.x; e < kTileChannels * kTileK; e += kThreads)
        {
            int const m = e / kTileK;
            int const kk = e % kTileK;
            int const channel = firstChannel + m;
            int const k = k0 + kk;
            weightTile[kk][m]
                = channel < outChannels && k < depth ? toFloat(weight[static_cast<size_t>(channel) * depth + k]) : 0.0F;
        }
        for (int e = threadIdx.x; e < kTileK * kTilePixels; e += kThreads)
        {
            int const kk = e / kTilePixels;
            int const n = e % kTilePixels;
            int const k = k0 + kk;
            float value = 0.0F;
            if (k < depth && firstCell + n < cells)
            {
                value = sample(imageFeatures + static_cast<size_t>(k / kTaps) * cells, taps[n][k % kTaps]);
            }
            columnTile[kk][n] = value;
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < kTileK; ++kk)
        {
            float a[4];
            float b[4];
#pragma unroll
            for (int i = 0; i < 4; ++i)
            {
                a[i] = weightTile[kk][ty + 16 * i];
                b[i] = columnTile[kk][tx + 16 * i];
            }
#pragma unroll
            for (int i = 0; i < 4; ++i)
            {
#pragma unroll
                for (int j = 0; j < 4; ++j)
                {
                    accumulator[i][j] = fmaf(a[i], b[j], accumulator[i][j]);
                }
            }
        }
        __syncthreads();
    }

    T* imageOutput = output + static_cast<size_t>(image) * outChannels * cells;
#pragma unroll
    for (int i = 0; i < 4; ++i)
    {
        int const channel = firstChannel + ty + 16 * i;
#pragma unroll
        for (int j = 0; j < 4; ++j)
        {
            int const cell = firstCell + tx + 16 * j;
            if (channel < outChannels && cell < cells)
            {
                imageOutput[static_cast<size_t>(channel) * cells + cell] = fromFloat<T>(accumulator[i][j]);
            }
        }
    }
}

template <typename T>
cudaError_t launch(void const* features, float const* bbox, void const* weight, void* output, int batch, int channels,
    int height, int width, int outChannels, float stride, cudaStream_t stream)
{
    int const cells = height * width;
    dim3 const grid((cells + kTilePixels - 1) / kTilePixels, (outChannels + kTileChannels - 1) / kTileChannels, batch);
    starDeformConvKernel<T><<<grid, kThreads, 0, stream>>>(static_cast<T const*>(features), bbox,
        static_cast<T const*>(weight), static_cast<T*>(output), channels, height, width, outChannels, stride);
    return cudaGetLastError();
}

} // namespace

cudaError_t starDeformConvForward(DataType type, void const* features, float const* bbox, void const* weight,
    void* output, int batch, int channels, int height, int width, int outChannels, float stride,
    cudaStream_t stream) noexcept
{
    if (batch <= 0 || height <= 0 || width <= 0 || outChannels <= 0)
    {
        return cudaSuccess; // an empty output: nothing to compute
    }
    if (channels <= 0 || !(stride > 0.0F) || batch > 65535)
    {
        return cudaErrorInvalidValue;
    }
    if (type == DataType::kFloat16)
    {
        return launch<__half>(features, bbox, weight, output, batch, channels, height, width, outChannels, stride, stream);
    }
    return launch<float>(features, bbox, weight, output, batch, channels, height, width, outChannels, stride, stream);
}

} // namespace star
} // namespace vfnet
