/*
 * The arithmetic of the star deformable convolution, shared by the CUDA kernel and the host build.
 *
 * No TensorRT and no CUDA runtime types: plain floats and ints, compiled as __host__ __device__
 * under nvcc and as ordinary inline C++ elsewhere, so the host library computes exactly what the
 * kernel computes and the tests of the host library test the kernel's sampling.
 *
 * Conventions (VFNet, mmdetection's vfnet_head.py):
 *   bbox_init [B, 4, H, W] float32: (l, t, r, b), distances in input-image pixels from the level's
 *     anchor point to the box edges. The level's stride turns them into feature cells.
 *   For output cell (y, x) and tap k = 3 * i + j (row-major 3x3), the tap samples the feature map at
 *     row    y + {-t, 0, +b}[i] / stride,   column x + {-l, 0, +r}[j] / stride
 *   i.e. the anchor, the 4 edge midpoints through the anchor and the 4 box corners. This is the
 *   official 3x3 DCNv1 (padding 1, stride 1, dilation 1, one offset group) fed with
 *   star_dcn_offset(bbox_init), written without the offset tensor.
 *   Sampling is bilinear with torchvision's / mmcv's border rule: a point with row <= -1, row >= H,
 *   column <= -1 or column >= W reads 0; otherwise each of its 4 neighbours that lies inside the map
 *   contributes with its bilinear weight and the others read 0.
 */
#pragma once

#include <math.h>

#if defined(__CUDACC__)
#define STAR_HD __host__ __device__ __forceinline__
#else
#define STAR_HD inline
#endif

namespace vfnet
{
namespace star
{

constexpr int kTaps = 9; //!< 3x3 kernel taps, k = 3 * i + j

//! One bilinear sample: 4 neighbours as offsets into an H*W plane, and their weights (0 for a
//! neighbour outside the map, whose offset is then 0 so that reading it is always in bounds).
struct BilinearTap
{
    int offset[4];
    float weight[4];
};

//! Where tap `k` of output cell (y, x) samples, in feature cells: (row, column).
//! l, t, r, b are the cell's bbox_init values in input pixels.
STAR_HD void starPoint(float l, float t, float r, float b, float stride, int y, int x, int k, float& row, float& column)
{
    int const i = k / 3;
    int const j = k % 3;
    float const dy = i == 0 ? -(t / stride) : (i == 1 ? 0.0F : b / stride);
    float const dx = j == 0 ? -(l / stride) : (j == 1 ? 0.0F : r / stride);
    row = static_cast<float>(y) + dy;
    column = static_cast<float>(x) + dx;
}

//! The bilinear neighbours of (row, column) in an H x W map, with torchvision's border rule.
STAR_HD BilinearTap bilinearTap(float row, float column, int height, int width)
{
    BilinearTap tap{{0, 0, 0, 0}, {0.0F, 0.0F, 0.0F, 0.0F}};
    if (row <= -1.0F || row >= static_cast<float>(height) || column <= -1.0F || column >= static_cast<float>(width))
    {
        return tap;
    }
    int const y0 = static_cast<int>(floorf(row));
    int const x0 = static_cast<int>(floorf(column));
    int const y1 = y0 + 1;
    int const x1 = x0 + 1;
    float const ly = row - static_cast<float>(y0);
    float const lx = column - static_cast<float>(x0);
    float const hy = 1.0F - ly;
    float const hx = 1.0F - lx;
    int const ys[4] = {y0, y0, y1, y1};
    int const xs[4] = {x0, x1, x0, x1};
    float const ws[4] = {hy * hx, hy * lx, ly * hx, ly * lx};
    for (int n = 0; n < 4; ++n)
    {
        bool const inside = ys[n] >= 0 && ys[n] < height && xs[n] >= 0 && xs[n] < width;
        tap.offset[n] = inside ? ys[n] * width + xs[n] : 0;
        tap.weight[n] = inside ? ws[n] : 0.0F;
    }
    return tap;
}

//! The bilinear sample of one feature plane (any type convertible to float), accumulated in float
//! in torchvision's order (w1 v1 + w2 v2 + w3 v3 + w4 v4).
template <typename T>
STAR_HD float sample(T const* plane, BilinearTap const& tap)
{
    float value = 0.0F;
    for (int n = 0; n < 4; ++n)
    {
        value += tap.weight[n] * static_cast<float>(plane[tap.offset[n]]);
    }
    return value;
}

} // namespace star
} // namespace vfnet
