/*
 * The star deformable convolution on the CPU, as C functions for the Python face (vfnet.trt_plugins)
 * and ONNX Runtime's CPU path.
 *
 * vfnetStarDeformConvF32, the host build proper: the same sampling as the CUDA kernels
 * (starDeformConvCore.h) and float32 accumulation. Per image: the 9 bilinear taps of every cell,
 * then the sampled columns [C * 9, cells] of a band of cells, then output[c_out, cells] +=
 * weight[c_out, k] * columns[k, cells] with the cells innermost (contiguous, vectorised by the
 * compiler; an AVX2 + FMA clone where the CPU has them) and four output channels per pass. Bands are
 * split over `threads` threads.
 *
 * vfnetStarDeformConvTiled, the host mirror of the kernels: runs starDeformConvCore.h's tile code
 * block by block, and within a block phase by phase as the kernels' barriers separate them, each
 * phase for every thread (or warp) of the block in turn. Shared memory is a per-worker buffer filled
 * with NaN before every load phase, so that a read of a word the phase did not write poisons the
 * result. Slow (a test tool), but it is the kernels' own index arithmetic.
 */
#include "starDeformConvCore.h"
#include "starDeformConvHost.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

namespace
{

using vfnet::star::BilinearTap;
using vfnet::star::kTaps;

constexpr int kBand = 256; // cells per band: a band's columns and outputs stay in the core's cache

struct Problem
{
    float const* features;
    float const* bbox;
    float const* weight;
    float* output;
    int channels;
    int height;
    int width;
    int outChannels;
    float stride;
};

void accumulate(float const* weight, float const* columns, float* out, int outChannels, int depth, int band, int stride);

//! Output cells [first, last) of one image.
void convolveBand(Problem const& p, int image, int first, int last, std::vector<float>& columns)
{
    int const cells = p.height * p.width;
    int const band = last - first;
    int const depth = p.channels * kTaps;
    float const* features = p.features + static_cast<size_t>(image) * p.channels * cells;
    float const* box = p.bbox + static_cast<size_t>(image) * 4 * cells;
    float* output = p.output + static_cast<size_t>(image) * p.outChannels * cells;

    columns.assign(static_cast<size_t>(depth) * band, 0.0F); // [K, band]
    for (int n = 0; n < band; ++n)
    {
        int const cell = first + n;
        for (int k = 0; k < kTaps; ++k)
        {
            float row;
            float column;
            vfnet::star::starPoint(box[cell], box[cells + cell], box[2 * cells + cell], box[3 * cells + cell], p.stride,
                cell / p.width, cell % p.width, k, row, column);
            BilinearTap const tap = vfnet::star::bilinearTap(row, column, p.height, p.width);
            for (int c = 0; c < p.channels; ++c)
            {
                columns[static_cast<size_t>(c * kTaps + k) * band + n]
                    = vfnet::star::sample(features + static_cast<size_t>(c) * cells, tap);
            }
        }
    }
    accumulate(p.weight, columns.data(), output + first, p.outChannels, depth, band, cells);
}

//! out[o, n] = sum_k weight[o, k] * columns[k, n] for a band of `band` cells (rows of out are
//! `stride` apart), four output channels at a time so that each column value loaded feeds 4
//! products. Cloned for AVX2 + FMA, chosen at load time where the CPU has them.
__attribute__((target_clones("avx2,fma", "default"))) void accumulate(
    float const* weight, float const* columns, float* out, int outChannels, int depth, int band, int stride)
{
    int o = 0;
    for (; o + 4 <= outChannels; o += 4)
    {
        float* rows[4];
        float const* w[4];
        for (int r = 0; r < 4; ++r)
        {
            rows[r] = out + static_cast<size_t>(o + r) * stride;
            w[r] = weight + static_cast<size_t>(o + r) * depth;
            std::fill(rows[r], rows[r] + band, 0.0F);
        }
        for (int k = 0; k < depth; ++k)
        {
            float const* column = columns + static_cast<size_t>(k) * band;
            float const w0 = w[0][k], w1 = w[1][k], w2 = w[2][k], w3 = w[3][k];
            float* __restrict__ r0 = rows[0];
            float* __restrict__ r1 = rows[1];
            float* __restrict__ r2 = rows[2];
            float* __restrict__ r3 = rows[3];
            for (int n = 0; n < band; ++n)
            {
                float const c = column[n];
                r0[n] += w0 * c;
                r1[n] += w1 * c;
                r2[n] += w2 * c;
                r3[n] += w3 * c;
            }
        }
    }
    for (; o < outChannels; ++o) // the last 1-3 channels
    {
        float* row = out + static_cast<size_t>(o) * stride;
        std::fill(row, row + band, 0.0F);
        for (int k = 0; k < depth; ++k)
        {
            float const scale = weight[static_cast<size_t>(o) * depth + k];
            float const* column = columns + static_cast<size_t>(k) * band;
            for (int n = 0; n < band; ++n)
            {
                row[n] += scale * column[n];
            }
        }
    }
}

void writeError(char* error, size_t size, char const* message)
{
    if (error != nullptr && size > 0)
    {
        std::strncpy(error, message, size - 1);
        error[size - 1] = '\0';
    }
}

//! Runs job(0) ... job(jobs - 1) on min(threads, jobs) threads (threads <= 0: one per hardware thread).
void parallelFor(int jobs, int threads, std::function<void(int worker, int job)> const& job)
{
    int const workers = std::max(1, std::min(threads > 0 ? threads : static_cast<int>(std::thread::hardware_concurrency()), jobs));
    auto work = [&](int worker) {
        for (int j = worker; j < jobs; j += workers)
        {
            job(worker, j);
        }
    };
    std::vector<std::thread> pool;
    for (int worker = 1; worker < workers; ++worker)
    {
        pool.emplace_back(work, worker);
    }
    work(0);
    for (std::thread& thread : pool)
    {
        thread.join();
    }
}

char const* checkSizes(int batch, int channels, int height, int width, int outChannels, int stride)
{
    if (batch < 0 || channels <= 0 || height < 0 || width < 0 || outChannels <= 0 || stride <= 0)
    {
        return "StarDeformConv: sizes must be positive (batch, height, width may be 0) and stride > 0";
    }
    return nullptr;
}

namespace star = vfnet::star;

//! Fills shared memory with NaN bytes (0xFF: NaN as float32 and as float16).
template <class Shared>
void poison(Shared& shared)
{
    std::memset(&shared, 0xFF, sizeof shared);
}

//! One block of the CUDA-core kernel, phase by phase (starDeformConvKernel.cu, starDeformConvCudaCores).
template <typename T>
void cudaCoreBlock(star::Problem<T> const& p, star::BlockTile const& block, star::CudaCoreShared& shared)
{
    std::vector<star::CellState> cells(star::kBlockThreads);
    std::vector<star::CudaCoreAccumulators> acc(star::kBlockThreads, star::CudaCoreAccumulators{});
    for (int thread = 0; thread < star::kBlockThreads; ++thread)
    {
        cells[thread] = star::cellState<star::CudaCoreTile>(p, block, thread);
    }
    for (int group = 0; group < star::groupsOf<star::CudaCoreTile>(p.channels); ++group)
    {
        poison(shared);
        for (int thread = 0; thread < star::kBlockThreads; ++thread)
        {
            star::cudaCoreLoad(shared, p, block, cells[thread], group, thread);
        }
        // __syncthreads()
        for (int thread = 0; thread < star::kBlockThreads; ++thread)
        {
            star::cudaCoreMultiply(shared, thread, acc[thread]);
        }
        // __syncthreads()
    }
    for (int thread = 0; thread < star::kBlockThreads; ++thread)
    {
        star::cudaCoreStore(p, block, thread, acc[thread]);
    }
}

//! One block of the tensor-core kernel (starDeformConvKernel.cu, starDeformConvTensorCores): the
//! multiply phase warp by warp, the tensor-core step taking all 32 lanes' fragments at once.
void tensorCoreBlock(star::Problem<uint16_t> const& p, star::BlockTile const& block, star::TensorCoreShared& shared)
{
    constexpr int kWarps = star::kBlockThreads / star::kWarpSize;
    struct Warp
    {
        star::TensorCoreAccumulators lanes[star::kWarpSize];
    };
    std::vector<star::CellState> cells(star::kBlockThreads);
    std::vector<Warp> acc(kWarps, Warp{});
    for (int thread = 0; thread < star::kBlockThreads; ++thread)
    {
        cells[thread] = star::cellState<star::TensorCoreTile>(p, block, thread);
    }
    for (int group = 0; group < star::groupsOf<star::TensorCoreTile>(p.channels); ++group)
    {
        poison(shared);
        for (int thread = 0; thread < star::kBlockThreads; ++thread)
        {
            star::tensorCoreLoad(shared, p, block, cells[thread], group, thread);
        }
        // __syncthreads()
        for (int warp = 0; warp < kWarps; ++warp)
        {
            star::tensorCoreMultiply<star::kWarpSize>(shared, warp, 0, acc[warp].lanes);
        }
        // __syncthreads()
    }
    for (int warp = 0; warp < kWarps; ++warp)
    {
        for (int lane = 0; lane < star::kWarpSize; ++lane)
        {
            star::tensorCoreStore(p, block, warp, lane, acc[warp].lanes[lane]);
        }
    }
}

//! Every block of the grid, spread over `threads` workers, each with its own shared memory.
template <class Tile, class Shared, typename T, class Block>
void mirror(star::Problem<T> const& p, int batch, int threads, Block const& runBlock)
{
    int cellTiles;
    int rowTiles;
    star::gridOf<Tile>(p.height * p.width, p.outChannels, cellTiles, rowTiles);
    int const blocks = cellTiles * rowTiles * batch;
    int const workers = std::max(1, threads > 0 ? threads : static_cast<int>(std::thread::hardware_concurrency()));
    std::vector<std::unique_ptr<Shared>> shared(static_cast<size_t>(std::min(workers, std::max(blocks, 1))));
    for (auto& buffer : shared)
    {
        buffer = std::make_unique<Shared>();
    }
    parallelFor(blocks, static_cast<int>(shared.size()), [&](int worker, int b) {
        star::BlockTile const block{b % cellTiles, (b / cellTiles) % rowTiles, b / (cellTiles * rowTiles)};
        runBlock(p, block, *shared[static_cast<size_t>(worker)]);
    });
}

} // namespace

extern "C" int vfnetStarDeformConvF32(float const* features, float const* bbox, float const* weight, float* output,
    int batch, int channels, int height, int width, int outChannels, int stride, int threads, char* error,
    size_t errorSize)
{
    if (char const* message = checkSizes(batch, channels, height, width, outChannels, stride))
    {
        writeError(error, errorSize, message);
        return 1;
    }
    int const cells = height * width;
    if (batch == 0 || cells == 0)
    {
        return 0; // an empty output: nothing to read or write
    }
    if (features == nullptr || bbox == nullptr || weight == nullptr || output == nullptr)
    {
        writeError(error, errorSize, "StarDeformConv: a null buffer");
        return 1;
    }
    Problem const problem{features, bbox, weight, output, channels, height, width, outChannels, static_cast<float>(stride)};
    int const bandsPerImage = (cells + kBand - 1) / kBand;
    try
    {
        std::vector<std::vector<float>> columns(static_cast<size_t>(std::max(1, threads > 0 ? threads : static_cast<int>(std::thread::hardware_concurrency()))));
        parallelFor(batch * bandsPerImage, static_cast<int>(columns.size()), [&](int worker, int job) {
            int const image = job / bandsPerImage;
            int const first = (job % bandsPerImage) * kBand;
            convolveBand(problem, image, first, std::min(cells, first + kBand), columns[static_cast<size_t>(worker)]);
        });
    }
    catch (std::exception const& exc) // bad_alloc, or no thread could be started
    {
        writeError(error, errorSize, exc.what());
        return 2;
    }
    return 0;
}

extern "C" int vfnetStarDeformConvTiled(int algorithm, int type, void const* features, float const* bbox,
    void const* weight, void* output, int batch, int channels, int height, int width, int outChannels, int stride,
    int threads, char* error, size_t errorSize)
{
    if (char const* message = checkSizes(batch, channels, height, width, outChannels, stride))
    {
        writeError(error, errorSize, message);
        return 1;
    }
    if (algorithm < 0 || algorithm > 2 || type < 0 || type > 1 || (algorithm == 2 && type != 1))
    {
        writeError(error, errorSize, "StarDeformConv: algorithm 0 (default), 1 (CUDA cores: type 0 or 1) or 2 (tensor cores: type 1)");
        return 1;
    }
    if (batch == 0 || height == 0 || width == 0)
    {
        return 0; // an empty output: nothing to read or write
    }
    if (features == nullptr || bbox == nullptr || weight == nullptr || output == nullptr)
    {
        writeError(error, errorSize, "StarDeformConv: a null buffer");
        return 1;
    }
    float const scale = static_cast<float>(stride);
    try
    {
        if (type == 1 && algorithm != 1)
        {
            auto const p = star::problemOf<star::TensorCoreTile>(static_cast<uint16_t const*>(features), bbox,
                static_cast<uint16_t const*>(weight), static_cast<uint16_t*>(output), channels, height, width, outChannels, scale);
            mirror<star::TensorCoreTile, star::TensorCoreShared>(p, batch, threads, tensorCoreBlock);
        }
        else if (type == 1)
        {
            auto const p = star::problemOf<star::CudaCoreTile>(static_cast<uint16_t const*>(features), bbox,
                static_cast<uint16_t const*>(weight), static_cast<uint16_t*>(output), channels, height, width, outChannels, scale);
            mirror<star::CudaCoreTile, star::CudaCoreShared>(p, batch, threads, cudaCoreBlock<uint16_t>);
        }
        else
        {
            auto const p = star::problemOf<star::CudaCoreTile>(static_cast<float const*>(features), bbox,
                static_cast<float const*>(weight), static_cast<float*>(output), channels, height, width, outChannels, scale);
            mirror<star::CudaCoreTile, star::CudaCoreShared>(p, batch, threads, cudaCoreBlock<float>);
        }
    }
    catch (std::exception const& exc) // bad_alloc, or no thread could be started
    {
        writeError(error, errorSize, exc.what());
        return 2;
    }
    return 0;
}

extern "C" int vfnetStarHalfRoundTrip(float const* values, uint16_t* halves, float* widened, size_t count)
{
    for (size_t i = 0; i < count; ++i)
    {
        halves[i] = vfnet::star::floatToHalf(values[i]);
        widened[i] = vfnet::star::halfToFloat(halves[i]);
    }
    return 0;
}
