/*
 * The arithmetic and the tiling of the star deformable convolution, shared by the CUDA kernels and
 * the host build.
 *
 * No TensorRT and no CUDA runtime types: plain floats, ints and float16 bit patterns (uint16_t),
 * compiled as __host__ __device__ under nvcc and as ordinary inline C++ elsewhere. The host library
 * runs these very functions (the host mirror, starDeformConvHost.cpp), so its tests test the
 * kernels' sampling, tile loops, index arithmetic, shared-memory layouts, edge masking and float16
 * rounding. Only two things have two bodies: the tensor-core step (mmaK16 / mmaK8: mma.sync on the
 * device, a plain loop over the same fragments on the host) and the raw half/word memory moves.
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
 *
 * The tiled GEMM (README.md, "The kernels"): output [C_out, cells] = weight [C_out, K] x columns
 * [K, cells], K = C * 9 in the weight's own order k = 9 c + tap. A thread block of 256 threads owns
 * kRows output channels x kCells cells of one image and walks K in groups of kGroupChannels input
 * channels (kDepth = 9 * kGroupChannels rows of K, 144 bytes of weight row per output channel):
 *   1. load: the group's weight rows [kRows][kDepth] (a straight copy of 144 contiguous bytes per
 *      row) and its sampled columns (each thread owns one cell and one set of taps: it computes the
 *      tap's bilinear neighbours once and samples each channel of the group);
 *   2. multiply: tensor cores (mma.sync m16n8k16 + one m16n8k8, float16 in, float32 accumulation)
 *      or CUDA cores (an 8 x 8 register tile per thread, fmaf in float32).
 * Nothing of size C * 9 * H * W is written; there is no workspace.
 */
#pragma once

#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__CUDACC__)
#include <cuda_fp16.h>
#define STAR_HD __host__ __device__ __forceinline__
#else
#define STAR_HD inline
#endif

// Loop unrolling on the device: STAR_UNROLL unrolls fully (tile loops with constant trip counts,
// whose arrays must stay in registers); STAR_ROLLED keeps a loop rolled where unrolling would hold
// more loads in flight than the 128 registers of two blocks per SM allow next to the accumulators.
#if defined(__CUDA_ARCH__)
#define STAR_UNROLL _Pragma("unroll")
#define STAR_ROLLED _Pragma("unroll 1")
#else
#define STAR_UNROLL
#define STAR_ROLLED
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

//! Where tap `k` of output cell (y, x) samples, in feature cells, from the box already divided by
//! the stride (left = l / stride, ...).
STAR_HD void starPointScaled(float left, float top, float right, float bottom, int y, int x, int k, float& row, float& column)
{
    int const i = k / 3;
    int const j = k % 3;
    float const dy = i == 0 ? -top : (i == 1 ? 0.0F : bottom);
    float const dx = j == 0 ? -left : (j == 1 ? 0.0F : right);
    row = static_cast<float>(y) + dy;
    column = static_cast<float>(x) + dx;
}

//! Where tap `k` of output cell (y, x) samples, in feature cells: (row, column).
//! l, t, r, b are the cell's bbox_init values in input pixels.
STAR_HD void starPoint(float l, float t, float r, float b, float stride, int y, int x, int k, float& row, float& column)
{
    starPointScaled(l / stride, t / stride, r / stride, b / stride, y, x, k, row, column);
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

//! The bilinear sample of one float32 feature plane, accumulated in float in torchvision's order
//! (w1 v1 + w2 v2 + w3 v3 + w4 v4). The host build's float32 path.
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

// ---------------------------------------------------------------------------------------------
// float16 as bit patterns (uint16_t): round to nearest even, as __float2half_rn. The device uses
// the conversion instructions, the host the same rounding in integer arithmetic.
// ---------------------------------------------------------------------------------------------

STAR_HD float halfToFloat(uint16_t bits)
{
#if defined(__CUDA_ARCH__)
    return __half2float(__ushort_as_half(bits));
#else
    uint32_t const sign = static_cast<uint32_t>(bits & 0x8000U) << 16;
    uint32_t const exponent = (bits >> 10) & 0x1FU;
    uint32_t const mantissa = bits & 0x3FFU;
    uint32_t word;
    if (exponent == 0)
    {
        float const magnitude = static_cast<float>(mantissa) * 5.9604644775390625e-8F; // mantissa * 2^-24, exact
        memcpy(&word, &magnitude, sizeof word);
        word |= sign;
    }
    else if (exponent == 0x1F)
    {
        word = sign | 0x7F800000U | (mantissa << 13);
    }
    else
    {
        word = sign | ((exponent + 112U) << 23) | (mantissa << 13);
    }
    float value;
    memcpy(&value, &word, sizeof value);
    return value;
#endif
}

STAR_HD uint16_t floatToHalf(float value)
{
#if defined(__CUDA_ARCH__)
    return __half_as_ushort(__float2half_rn(value));
#else
    uint32_t word;
    memcpy(&word, &value, sizeof word);
    uint32_t const sign = (word >> 16) & 0x8000U;
    uint32_t const magnitude = word & 0x7FFFFFFFU;
    if (magnitude > 0x7F800000U)
    {
        return static_cast<uint16_t>(0x7FFFU); // NaN, as the device's conversion gives it
    }
    if (magnitude >= 0x477FF000U) // >= 65520: rounds to infinity
    {
        return static_cast<uint16_t>(sign | 0x7C00U);
    }
    if (magnitude < 0x38800000U) // below 2^-14: a float16 subnormal (or zero), in units of 2^-24
    {
        float absolute;
        memcpy(&absolute, &magnitude, sizeof absolute);
        float const scaled = absolute * 16777216.0F;                         // exact: a power of two
        float const rounded = (scaled + 8388608.0F) - 8388608.0F;            // to an integer, ties to even
        return static_cast<uint16_t>(sign | static_cast<uint32_t>(rounded)); // 1024 is the smallest normal
    }
    uint32_t const rounded = magnitude + 0xFFFU + ((magnitude >> 13) & 1U); // drop 13 bits, ties to even
    return static_cast<uint16_t>(sign | ((rounded >> 13) - (112U << 10)));
#endif
}

STAR_HD float toFloat(float value)
{
    return value;
}

STAR_HD float toFloat(uint16_t bits)
{
    return halfToFloat(bits);
}

template <typename T>
STAR_HD T fromFloat(float value);

template <>
STAR_HD float fromFloat<float>(float value)
{
    return value;
}

template <>
STAR_HD uint16_t fromFloat<uint16_t>(float value)
{
    return floatToHalf(value);
}

//! The bilinear sample of one plane of float32 or float16 (bits) features, in float32, each product
//! fused (fmaf) in torchvision's order: the same value on the device and in the host mirror.
template <typename T>
STAR_HD float sampleFused(T const* plane, BilinearTap const& tap)
{
    float value = 0.0F;
    STAR_UNROLL
    for (int n = 0; n < 4; ++n)
    {
        value = fmaf(tap.weight[n], toFloat(plane[tap.offset[n]]), value);
    }
    return value;
}

// ---------------------------------------------------------------------------------------------
// Raw memory moves with two bodies: the device stores 16-bit halves and 16-byte vectors directly
// (two threads may write the two halves of one word at once); the host does the same bytes in
// plain C++ without type punning.
// ---------------------------------------------------------------------------------------------

//! Writes float16 `bits` as half number `index` of an array of 32-bit words (little-endian: half
//! 2w is the low half of word w, as in an mma fragment register).
STAR_HD void storeHalf(uint32_t* words, int index, uint16_t bits)
{
#if defined(__CUDA_ARCH__)
    reinterpret_cast<uint16_t*>(words)[index] = bits;
#else
    uint32_t const shift = (index & 1) * 16U;
    uint32_t& word = words[index >> 1];
    word = (word & ~(0xFFFFU << shift)) | (static_cast<uint32_t>(bits) << shift);
#endif
}

//! Copies 16 bytes; both addresses 16-byte aligned.
STAR_HD void copy16(void* destination, void const* source)
{
#if defined(__CUDA_ARCH__)
    *reinterpret_cast<uint4*>(destination) = *reinterpret_cast<uint4 const*>(source);
#else
    memcpy(destination, source, 16);
#endif
}

//! Copies 16 bytes from global to shared memory without a register round trip where the GPU can
//! (sm_80 and newer: cp.async, L1 bypassed), so the copy flies while the thread samples; visible to
//! the block after waitAsyncCopies() and the barrier. Elsewhere (sm_75, the host) a plain copy.
STAR_HD void copy16Async(void* destination, void const* source)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    unsigned const address = static_cast<unsigned>(__cvta_generic_to_shared(destination));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(address), "l"(source) : "memory");
#else
    copy16(destination, source);
#endif
}

//! Waits for this thread's copy16Async copies (before the barrier that publishes shared memory).
STAR_HD void waitAsyncCopies()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_all;\n" ::: "memory");
#endif
}

//! Zeroes 16 bytes (16-byte aligned).
STAR_HD void zero16(void* destination)
{
#if defined(__CUDA_ARCH__)
    *reinterpret_cast<uint4*>(destination) = make_uint4(0U, 0U, 0U, 0U);
#else
    memset(destination, 0, 16);
#endif
}

//! Stores 4 floats as one 16-byte vector (16-byte aligned).
STAR_HD void store4(float* destination, float a, float b, float c, float d)
{
#if defined(__CUDA_ARCH__)
    *reinterpret_cast<float4*>(destination) = make_float4(a, b, c, d);
#else
    float const values[4] = {a, b, c, d};
    memcpy(destination, values, sizeof values);
#endif
}

//! Loads 4 floats as one 16-byte vector (16-byte aligned).
STAR_HD void load4(float (&destination)[4], float const* source)
{
#if defined(__CUDA_ARCH__)
    float4 const v = *reinterpret_cast<float4 const*>(source);
    destination[0] = v.x;
    destination[1] = v.y;
    destination[2] = v.z;
    destination[3] = v.w;
#else
    memcpy(destination, source, sizeof destination);
#endif
}

//! Loads 2 floats as one 8-byte vector (8-byte aligned).
STAR_HD void load2(float (&destination)[2], float const* source)
{
#if defined(__CUDA_ARCH__)
    float2 const v = *reinterpret_cast<float2 const*>(source);
    destination[0] = v.x;
    destination[1] = v.y;
#else
    memcpy(destination, source, sizeof destination);
#endif
}

//! Two float16 results as one 32-bit store (output index even, buffer 4-byte aligned).
STAR_HD void storeHalfPair(uint16_t* output, uint16_t low, uint16_t high)
{
#if defined(__CUDA_ARCH__)
    *reinterpret_cast<uint32_t*>(output) = static_cast<uint32_t>(low) | (static_cast<uint32_t>(high) << 16);
#else
    output[0] = low;
    output[1] = high;
#endif
}

// ---------------------------------------------------------------------------------------------
// The tiled kernels' problem, block and thread geometry.
// ---------------------------------------------------------------------------------------------

constexpr int kBlockThreads = 256; //!< 8 warps
constexpr int kWarpSize = 32;
constexpr int kRowWords = 36;      //!< one output channel's weight row of a group: 144 bytes = 9 vectors of 16 bytes

//! One call. `T` is float (float32) or uint16_t (float16 bits). The flags are decided by the
//! launcher, once per call, from the sizes and the buffers' addresses.
template <typename T>
struct Problem
{
    T const* features;  //!< [B, C, H, W]
    float const* bbox;  //!< [B, 4, H, W]
    T const* weight;    //!< [C_out, C, 3, 3]
    T* output;          //!< [B, C_out, H, W]
    int channels;       //!< C
    int height;         //!< H
    int width;          //!< W
    int outChannels;    //!< C_out
    float stride;       //!< pixels per cell
    bool weightVectors; //!< C % kGroupChannels == 0 and the weight's address allows vector loads
    bool outputPairs;   //!< H * W even and the output 4-byte aligned: float16 results stored two at a time
};

//! A call's problem with the flags decided from its sizes and addresses, by the launcher and the
//! host mirror alike: weight vectors when every group is whole and the weight's address is aligned to
//! a vector (kGroupChannels elements); float16 pairs when H * W is even and the output 4-byte aligned.
template <class Tile, typename T>
STAR_HD Problem<T> problemOf(T const* features, float const* bbox, T const* weight, T* output, int channels, int height,
    int width, int outChannels, float stride)
{
    uintptr_t const vectorBytes = Tile::kGroupChannels * sizeof(T);
    bool const weightVectors = channels % Tile::kGroupChannels == 0 && reinterpret_cast<uintptr_t>(weight) % vectorBytes == 0;
    bool const outputPairs = (height * width) % 2 == 0 && reinterpret_cast<uintptr_t>(output) % 4 == 0;
    return Problem<T>{features, bbox, weight, output, channels, height, width, outChannels, stride, weightVectors, outputPairs};
}

//! Which tile of the grid a block computes: (cell tile, output-channel tile, image).
struct BlockTile
{
    int cellTile;
    int rowTile;
    int image;
};

//! The cell a thread samples for (fixed for the whole block) and its box divided by the stride.
//! Kept small: it lives in registers next to the accumulators for the whole kernel.
struct CellState
{
    int cell; //!< index into the H * W plane, or -1 past the map's end
    float left;
    float top;
    float right;
    float bottom;
};

//! The thread's cell: warp w of a block samples cells 32 (w % (kCells / 32)) + lane of the tile, so
//! a warp's 32 lanes are 32 consecutive cells (coalesced bbox reads, neighbouring star points).
template <class Tile>
STAR_HD int sampledCell(int thread)
{
    return kWarpSize * ((thread / kWarpSize) % (Tile::kCells / kWarpSize)) + thread % kWarpSize;
}

//! The thread's tap set s, 0 <= s < kTapSets: it samples taps s, s + kTapSets, ... (all channels of
//! the group) and tap 8 for channels s * kTap8Channels ... (s + 1) * kTap8Channels - 1.
template <class Tile>
STAR_HD int tapSet(int thread)
{
    return (thread / kWarpSize) / (Tile::kCells / kWarpSize);
}

template <class Tile, typename T>
STAR_HD CellState cellState(Problem<T> const& p, BlockTile const& block, int thread)
{
    int const cells = p.height * p.width;
    int const cell = block.cellTile * Tile::kCells + sampledCell<Tile>(thread);
    CellState state{-1, 0.0F, 0.0F, 0.0F, 0.0F};
    if (cell < cells)
    {
        float const* box = p.bbox + static_cast<size_t>(block.image) * 4 * cells + cell;
        state = CellState{cell, box[0] / p.stride, box[cells] / p.stride, box[2 * static_cast<size_t>(cells)] / p.stride,
            box[3 * static_cast<size_t>(cells)] / p.stride};
    }
    return state;
}

//! Samples tap `k` of the thread's cell for channels [first, first + count) of the group starting
//! at channel `groupChannel`, zero for channels >= C and cells past the map; hands each value to
//! `put(row of K within the group, value)`.
template <class Tile, typename T, class Put>
STAR_HD void sampleTap(Problem<T> const& p, BlockTile const& block, CellState const& cell, int groupChannel, int k,
    int first, int count, Put const& put)
{
    int const cells = p.height * p.width;
    BilinearTap tap{{0, 0, 0, 0}, {0.0F, 0.0F, 0.0F, 0.0F}};
    if (cell.cell >= 0)
    {
        float row;
        float column;
        starPointScaled(cell.left, cell.top, cell.right, cell.bottom, cell.cell / p.width, cell.cell % p.width, k, row, column);
        tap = bilinearTap(row, column, p.height, p.width);
    }
    T const* image = p.features + static_cast<size_t>(block.image) * p.channels * cells;
    STAR_UNROLL
    for (int c = first; c < first + count; ++c)
    {
        int const channel = groupChannel + c;
        float value = 0.0F;
        if (cell.cell >= 0 && channel < p.channels)
        {
            value = sampleFused(image + static_cast<size_t>(channel) * cells, tap);
        }
        put(kTaps * c + k, value);
    }
}

//! Phase 1b: the thread's share of the group's sampled columns (18 values per thread for both tiles).
template <class Tile, typename T, class Put>
STAR_HD void sampleGroup(Problem<T> const& p, BlockTile const& block, CellState const& cell, int group, int thread, Put const& put)
{
    constexpr int kTapSets = kBlockThreads / Tile::kCells;                  // threads per cell
    constexpr int kTap8Channels = Tile::kGroupChannels / kTapSets;          // tap 8 is split over the tap sets
    static_assert(8 % kTapSets == 0 && Tile::kGroupChannels % kTapSets == 0, "taps 0-7 and tap 8 split evenly");
    int const set = tapSet<Tile>(thread);
    int const groupChannel = group * Tile::kGroupChannels;
    STAR_ROLLED // one tap's neighbours and loads in flight at a time
    for (int r = 0; r < 8 / kTapSets; ++r)
    {
        sampleTap<Tile>(p, block, cell, groupChannel, set + kTapSets * r, 0, Tile::kGroupChannels, put);
    }
    sampleTap<Tile>(p, block, cell, groupChannel, 8, set * kTap8Channels, kTap8Channels, put);
}

//! Phase 1a: the group's weight rows [kRows][kDepth] into shared memory, kRowWords words per row
//! (row r at word 36 r; element k of the row at float k (float32 tiles) or half k (float16 tiles)).
//! Rows >= C_out and channels >= C read 0. With weightVectors each row is 9 aligned vectors of
//! kGroupChannels elements (16 bytes of float32 or float16; 8 bytes of float16 widened to float32).
template <class Tile, typename T, typename Word>
STAR_HD void loadWeightGroup(Problem<T> const& p, BlockTile const& block, int group, int thread, Word* rows)
{
    static_assert(sizeof(Word) == 4, "rows are arrays of 32-bit words");
    int const depth = p.channels * kTaps;
    int const firstRow = block.rowTile * Tile::kRows;
    int const groupChannel = group * Tile::kGroupChannels;
    if (p.weightVectors)
    {
        STAR_ROLLED
        for (int v = thread; v < Tile::kRows * kTaps; v += kBlockThreads)
        {
            int const r = v / kTaps;
            int const chunk = v % kTaps;
            Word* destination = rows + r * kRowWords + 4 * chunk;
            int const m = firstRow + r;
            if (m >= p.outChannels)
            {
                zero16(destination);
                continue;
            }
            T const* source = p.weight + static_cast<size_t>(m) * depth + kTaps * groupChannel + Tile::kGroupChannels * chunk;
            if constexpr (sizeof(typename Tile::Stored) == sizeof(T))
            {
                copy16Async(destination, source);
            }
            else // float16 weights into float32 rows: 4 halves (8 bytes) widened
            {
                store4(destination, toFloat(source[0]), toFloat(source[1]), toFloat(source[2]), toFloat(source[3]));
            }
        }
        return;
    }
    STAR_ROLLED
    for (int e = thread; e < Tile::kRows * Tile::kDepth; e += kBlockThreads)
    {
        int const r = e / Tile::kDepth;
        int const k = e % Tile::kDepth;
        int const m = firstRow + r;
        float value = 0.0F;
        if (m < p.outChannels && groupChannel + k / kTaps < p.channels)
        {
            value = toFloat(p.weight[static_cast<size_t>(m) * depth + kTaps * groupChannel + k]);
        }
        Tile::storeRowElement(rows, r, k, value);
    }
}

// ---------------------------------------------------------------------------------------------
// The tensor-core tile (float16): 256 output channels x 64 cells, groups of 8 channels (K = 72).
// ---------------------------------------------------------------------------------------------

struct TensorCoreTile
{
    using Stored = uint16_t;
    static constexpr int kRows = 256;
    static constexpr int kCells = 64;
    static constexpr int kGroupChannels = 8;
    static constexpr int kDepth = kTaps * kGroupChannels; // 72 halves = 36 words per row

    //! Weight row r, element k (float16) at half 72 r + k.
    STAR_HD static void storeRowElement(uint32_t* rows, int r, int k, float value)
    {
        storeHalf(rows, 2 * kRowWords * r + k, floatToHalf(value));
    }

    //! The columns [cell][k] are stored cell-major, 36 words per cell like the weight rows, with
    //! the word index inside each aligned 4-word quad XOR-ed with (cell / 8) % 4: the 32 cells a
    //! warp's sampling store writes (same k) then fall into 32 different banks, and the fragment
    //! loads (8 cells x 4 consecutive words) still do. Returns the half index of (cell, k).
    STAR_HD static int columnHalf(int cell, int k)
    {
        int const word = (k >> 1) ^ ((cell >> 3) & 3);
        return 2 * (kRowWords * cell + word) + (k & 1);
    }
};

struct TensorCoreShared
{
    uint32_t weight[TensorCoreTile::kRows * kRowWords];  // 36,864 bytes
    uint32_t column[TensorCoreTile::kCells * kRowWords]; //  9,216 bytes
};

//! Phase 1 of the tensor-core tile: weight rows and float16 columns of group `group`.
template <typename T>
STAR_HD void tensorCoreLoad(TensorCoreShared& shared, Problem<T> const& p, BlockTile const& block, CellState const& cell, int group, int thread)
{
    loadWeightGroup<TensorCoreTile>(p, block, group, thread, shared.weight);
    int const local = sampledCell<TensorCoreTile>(thread);
    uint32_t* columns = shared.column;
    sampleGroup<TensorCoreTile>(p, block, cell, group, thread,
        [columns, local](int k, float value) { storeHalf(columns, TensorCoreTile::columnHalf(local, k), floatToHalf(value)); });
    waitAsyncCopies();
}

//! A lane's accumulators: 4 x 4 tiles of 16 x 8 (warp tile 64 x 32), 4 floats each (mma's C layout).
struct TensorCoreAccumulators
{
    float value[4][4][4];
};

//! A lane's operands for one k16 step: A fragments of the warp's 4 row tiles, B of its 4 cell tiles.
struct TensorCoreFragments
{
    uint32_t a[4][4];
    uint32_t b[4][2];
};

// A lane's fragments of step k0 (0, 16, 32, 48: m16n8k16; 64: m16n8k8, which uses a[.][0..1]
// and b[.][0] only), from shared memory. mma's register layout (PTX ISA, "Matrix fragments for
// mma.m16n8k16 with floating point type"), g = lane / 4, t = lane % 4:
//   A (row-major 16 x 16): a0 = (row g, k 2t..2t+1), a1 = (g + 8, 2t..), a2 = (g, 2t+8..), a3 = (g + 8, 2t+8..)
//   B (16 x 8, k-pairs):   b0 = (k 2t..2t+1, column g), b1 = (k 2t+8.., g)
// Each register is one 32-bit word of shared memory: the lower k in the lower half. k0 is a
// multiple of 8, so word k0 / 2 + t of a row is quad k0 / 8, word t, and the column swizzle only
// permutes t inside the quad.

//! The B fragments of the warp's 4 cell tiles (cells 32 (warp / 4) + 8 j + g).
STAR_HD void loadColumnFragments(TensorCoreShared const& shared, int warp, int lane, int k0, TensorCoreFragments& f)
{
    int const g = lane >> 2;
    int const t = lane & 3;
    STAR_UNROLL
    for (int j = 0; j < 4; ++j)
    {
        int const n = 32 * (warp / 4) + 8 * j + g;
        uint32_t const* quad = shared.column + kRowWords * n + (t ^ ((n >> 3) & 3)); // + 4 * (k / 8)
        f.b[j][0] = quad[k0 >> 1];
        f.b[j][1] = k0 < 64 ? quad[(k0 >> 1) + 4] : 0U;
    }
}

//! The A fragment of the warp's row tile i (rows 64 (warp % 4) + 16 i + g, + 8).
STAR_HD void loadWeightFragment(TensorCoreShared const& shared, int warp, int lane, int k0, int i, TensorCoreFragments& f)
{
    int const g = lane >> 2;
    int const t = lane & 3;
    uint32_t const* row = shared.weight + kRowWords * (64 * (warp % 4) + 16 * i + g) + (k0 >> 1) + t;
    f.a[i][0] = row[0];
    f.a[i][1] = row[8 * kRowWords];
    f.a[i][2] = k0 < 64 ? row[4] : 0U;
    f.a[i][3] = k0 < 64 ? row[8 * kRowWords + 4] : 0U;
}

// The tensor-core step: D (16 x 8, float32) += A (16 x 16 or 16 x 8, float16) x B, for row tile i
// and cell tile j of the warp. Two bodies with one tile shape and one rounding (float16 products
// are exact in float32; sums in float32): the device's takes one lane's registers (Lanes = 1), the
// host's the registers of all 32 lanes of a warp (Lanes = 32).
#if defined(__CUDACC__)
__device__ __forceinline__ void mmaK8Registers(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t b0)
{
    asm("mma.sync.aligned.m16n8k8.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5}, {%6}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a0), "r"(a1), "r"(b0));
}

__device__ __forceinline__ void mmaK16(TensorCoreAccumulators (&acc)[1], TensorCoreFragments const (&f)[1], int i, int j)
{
    float(&d)[4] = acc[0].value[i][j];
#if __CUDA_ARCH__ >= 800
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(f[0].a[i][0]), "r"(f[0].a[i][1]), "r"(f[0].a[i][2]), "r"(f[0].a[i][3]), "r"(f[0].b[j][0]), "r"(f[0].b[j][1]));
#else // sm_75: m16n8k16 is two m16n8k8 (k 0-7: a0, a1, b0; k 8-15: a2, a3, b1)
    mmaK8Registers(d, f[0].a[i][0], f[0].a[i][1], f[0].b[j][0]);
    mmaK8Registers(d, f[0].a[i][2], f[0].a[i][3], f[0].b[j][1]);
#endif
}

__device__ __forceinline__ void mmaK8(TensorCoreAccumulators (&acc)[1], TensorCoreFragments const (&f)[1], int i, int j)
{
    mmaK8Registers(acc[0].value[i][j], f[0].a[i][0], f[0].a[i][1], f[0].b[j][0]);
}
#endif

//! The host body: rebuilds the 16 x depth A tile and the depth x 8 B tile from the 32 lanes'
//! registers by the layout above, multiplies in float32 (each product of two float16 is exact) and
//! hands each lane its 4 results back in the C layout (c0, c1 = row g, columns 2t, 2t+1; c2, c3 = row g + 8).
inline void mmaHost(TensorCoreAccumulators (&acc)[32], TensorCoreFragments const (&f)[32], int i, int j, int depth)
{
    float a[16][16];
    float b[16][8];
    for (int lane = 0; lane < 32; ++lane)
    {
        int const g = lane >> 2;
        int const t = lane & 3;
        for (int h = 0; h < 2; ++h)
        {
            a[g][2 * t + h] = halfToFloat(static_cast<uint16_t>(f[lane].a[i][0] >> (16 * h)));
            a[g + 8][2 * t + h] = halfToFloat(static_cast<uint16_t>(f[lane].a[i][1] >> (16 * h)));
            a[g][2 * t + 8 + h] = halfToFloat(static_cast<uint16_t>(f[lane].a[i][2] >> (16 * h)));
            a[g + 8][2 * t + 8 + h] = halfToFloat(static_cast<uint16_t>(f[lane].a[i][3] >> (16 * h)));
            b[2 * t + h][g] = halfToFloat(static_cast<uint16_t>(f[lane].b[j][0] >> (16 * h)));
            b[2 * t + 8 + h][g] = halfToFloat(static_cast<uint16_t>(f[lane].b[j][1] >> (16 * h)));
        }
    }
    for (int lane = 0; lane < 32; ++lane)
    {
        int const g = lane >> 2;
        int const t = lane & 3;
        for (int c = 0; c < 4; ++c)
        {
            int const row = g + 8 * (c >> 1);
            int const column = 2 * t + (c & 1);
            float sum = acc[lane].value[i][j][c];
            for (int k = 0; k < depth; ++k)
            {
                sum += a[row][k] * b[k][column];
            }
            acc[lane].value[i][j][c] = sum;
        }
    }
}

inline void mmaK16(TensorCoreAccumulators (&acc)[32], TensorCoreFragments const (&f)[32], int i, int j)
{
    mmaHost(acc, f, i, j, 16);
}

inline void mmaK8(TensorCoreAccumulators (&acc)[32], TensorCoreFragments const (&f)[32], int i, int j)
{
    mmaHost(acc, f, i, j, 8);
}

//! Phase 2 of the tensor-core tile: warp `warp` multiplies its 64 rows x 32 cells over the group's
//! 72 rows of K (4 steps of k16, 1 of k8). The device calls it per lane (Lanes = 1, lane0 = the
//! lane), the host per warp (Lanes = 32, lane0 = 0).
template <int Lanes>
STAR_HD void tensorCoreMultiply(TensorCoreShared const& shared, int warp, int lane0, TensorCoreAccumulators (&acc)[Lanes])
{
    STAR_UNROLL
    for (int k0 = 0; k0 < TensorCoreTile::kDepth; k0 += 16)
    {
        TensorCoreFragments f[Lanes];
        for (int l = 0; l < Lanes; ++l)
        {
            loadColumnFragments(shared, warp, lane0 + l, k0, f[l]);
        }
        STAR_UNROLL
        for (int i = 0; i < 4; ++i)
        {
            for (int l = 0; l < Lanes; ++l)
            {
                loadWeightFragment(shared, warp, lane0 + l, k0, i, f[l]);
            }
            STAR_UNROLL
            for (int j = 0; j < 4; ++j)
            {
                if (k0 + 16 <= TensorCoreTile::kDepth)
                {
                    mmaK16(acc, f, i, j);
                }
                else
                {
                    mmaK8(acc, f, i, j);
                }
            }
        }
    }
}

//! Phase 3 of the tensor-core tile: lane `lane` of warp `warp` rounds its 64 results to float16 and
//! stores them (rows 64 (w % 4) + 16 i + g (+8), cells 32 (w / 4) + 8 j + 2t (+1)).
STAR_HD void tensorCoreStore(Problem<uint16_t> const& p, BlockTile const& block, int warp, int lane, TensorCoreAccumulators const& acc)
{
    int const cells = p.height * p.width;
    int const g = lane >> 2;
    int const t = lane & 3;
    uint16_t* image = p.output + static_cast<size_t>(block.image) * p.outChannels * cells;
    STAR_UNROLL
    for (int i = 0; i < 4; ++i)
    {
        STAR_UNROLL
        for (int half = 0; half < 2; ++half)
        {
            int const m = block.rowTile * TensorCoreTile::kRows + 64 * (warp % 4) + 16 * i + g + 8 * half;
            if (m >= p.outChannels)
            {
                continue;
            }
            STAR_UNROLL
            for (int j = 0; j < 4; ++j)
            {
                int const cell = block.cellTile * TensorCoreTile::kCells + 32 * (warp / 4) + 8 * j + 2 * t;
                uint16_t* out = image + static_cast<size_t>(m) * cells + cell;
                uint16_t const low = floatToHalf(acc.value[i][j][2 * half]);
                uint16_t const high = floatToHalf(acc.value[i][j][2 * half + 1]);
                if (p.outputPairs && cell + 1 < cells)
                {
                    storeHalfPair(out, low, high);
                    continue;
                }
                if (cell < cells)
                {
                    out[0] = low;
                }
                if (cell + 1 < cells)
                {
                    out[1] = high;
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The CUDA-core tile (float32, and float16 inputs widened to float32): 128 output channels x 128
// cells, groups of 4 channels (K = 36), 8 x 8 outputs per thread.
// ---------------------------------------------------------------------------------------------

struct CudaCoreTile
{
    using Stored = float;
    static constexpr int kRows = 128;
    static constexpr int kCells = 128;
    static constexpr int kGroupChannels = 4;
    static constexpr int kDepth = kTaps * kGroupChannels; // 36 floats = 36 words per row

    STAR_HD static void storeRowElement(float* rows, int r, int k, float value)
    {
        rows[kRowWords * r + k] = value;
    }
};

struct CudaCoreShared
{
    float weight[CudaCoreTile::kRows * kRowWords];             // [row][k] float32, 18,432 bytes
    float column[CudaCoreTile::kDepth * CudaCoreTile::kCells]; // [k][cell] float32, 18,432 bytes
};

template <typename T>
STAR_HD void cudaCoreLoad(CudaCoreShared& shared, Problem<T> const& p, BlockTile const& block, CellState const& cell, int group, int thread)
{
    loadWeightGroup<CudaCoreTile>(p, block, group, thread, shared.weight);
    int const local = sampledCell<CudaCoreTile>(thread);
    float* columns = shared.column;
    sampleGroup<CudaCoreTile>(p, block, cell, group, thread,
        [columns, local](int k, float value) { columns[CudaCoreTile::kCells * k + local] = value; });
    waitAsyncCopies();
}

//! A thread's 8 x 8 outputs: rows ty + 16 i, cells 4 tx + j (j < 4) and 64 + 4 tx + (j - 4).
struct CudaCoreAccumulators
{
    float value[8][8];
};

//! Phase 2 of the CUDA-core tile: thread (tx, ty) = (thread % 16, thread / 16) accumulates the group.
//! Per 2 rows of K: 8 8-byte loads of weight pairs (2 distinct addresses per warp: broadcast) and
//! per row of K 2 16-byte loads of columns (16 lanes x 16 consecutive bytes), for 128 fmaf.
STAR_HD void cudaCoreMultiply(CudaCoreShared const& shared, int thread, CudaCoreAccumulators& acc)
{
    int const tx = thread % 16;
    int const ty = thread / 16;
    STAR_UNROLL
    for (int q = 0; q < CudaCoreTile::kDepth / 2; ++q)
    {
        float a[8][2];
        STAR_UNROLL
        for (int i = 0; i < 8; ++i)
        {
            load2(a[i], shared.weight + kRowWords * (ty + 16 * i) + 2 * q);
        }
        STAR_UNROLL
        for (int kk = 0; kk < 2; ++kk)
        {
            float b[2][4];
            float const* row = shared.column + CudaCoreTile::kCells * (2 * q + kk);
            load4(b[0], row + 4 * tx);
            load4(b[1], row + 64 + 4 * tx);
            STAR_UNROLL
            for (int i = 0; i < 8; ++i)
            {
                STAR_UNROLL
                for (int j = 0; j < 8; ++j)
                {
                    acc.value[i][j] = fmaf(a[i][kk], b[j / 4][j % 4], acc.value[i][j]);
                }
            }
        }
    }
}

template <typename T>
STAR_HD void cudaCoreStore(Problem<T> const& p, BlockTile const& block, int thread, CudaCoreAccumulators const& acc)
{
    int const cells = p.height * p.width;
    int const tx = thread % 16;
    int const ty = thread / 16;
    T* image = p.output + static_cast<size_t>(block.image) * p.outChannels * cells;
    STAR_UNROLL
    for (int i = 0; i < 8; ++i)
    {
        int const m = block.rowTile * CudaCoreTile::kRows + ty + 16 * i;
        if (m >= p.outChannels)
        {
            continue;
        }
        STAR_UNROLL
        for (int j = 0; j < 8; ++j)
        {
            int const cell = block.cellTile * CudaCoreTile::kCells + 64 * (j / 4) + 4 * tx + j % 4;
            if (cell < cells)
            {
                image[static_cast<size_t>(m) * cells + cell] = fromFloat<T>(acc.value[i][j]);
            }
        }
    }
}

//! Blocks of a call: (cell tiles, row tiles, images), as the CUDA grid (x, y, z).
template <class Tile>
STAR_HD void gridOf(int cells, int outChannels, int& cellTiles, int& rowTiles)
{
    cellTiles = (cells + Tile::kCells - 1) / Tile::kCells;
    rowTiles = (outChannels + Tile::kRows - 1) / Tile::kRows;
}

template <class Tile>
STAR_HD int groupsOf(int channels)
{
    return (channels + Tile::kGroupChannels - 1) / Tile::kGroupChannels;
}

} // namespace star
} // namespace vfnet
