/*
 * The star deformable convolution on the CPU, float32: the same sampling as the CUDA kernel
 * (starDeformConvCore.h) and float32 accumulation, as a C function for the Python face
 * (vfnet.trt_plugins) and ONNX Runtime's CPU path.
 *
 * Per image: the 9 bilinear taps of every cell, then the sampled columns [C * 9, cells] of a band
 * of cells, then output[c_out, cells] += weight[c_out, k] * columns[k, cells] with the cells
 * innermost (contiguous, vectorised by the compiler; an AVX2 + FMA clone where the CPU has them)
 * and four output channels per pass. Bands are split over `threads` threads.
 */
#include "starDeformConvCore.h"
#include "starDeformConvHost.h"

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <exception>
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

} // namespace

extern "C" int vfnetStarDeformConvF32(float const* features, float const* bbox, float const* weight, float* output,
    int batch, int channels, int height, int width, int outChannels, int stride, int threads, char* error,
    size_t errorSize)
{
    if (batch < 0 || channels <= 0 || height < 0 || width < 0 || outChannels <= 0 || stride <= 0)
    {
        writeError(error, errorSize, "StarDeformConv: sizes must be positive (batch, height, width may be 0) and stride > 0");
        return 1;
    }
    if (features == nullptr || bbox == nullptr || weight == nullptr || output == nullptr)
    {
        writeError(error, errorSize, "StarDeformConv: a null buffer");
        return 1;
    }
    Problem const problem{features, bbox, weight, output, channels, height, width, outChannels, static_cast<float>(stride)};
    int const cells = height * width;
    int const bandsPerImage = (cells + kBand - 1) / kBand;
    int const jobs = batch * bandsPerImage;
    int const workers = std::max(1, std::min(threads > 0 ? threads : static_cast<int>(std::thread::hardware_concurrency()), jobs));
    try
    {
        auto work = [&](int worker) {
            std::vector<float> columns;
            for (int job = worker; job < jobs; job += workers)
            {
                int const image = job / bandsPerImage;
                int const first = (job % bandsPerImage) * kBand;
                convolveBand(problem, image, first, std::min(cells, first + kBand), columns);
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
    catch (std::exception const& exc) // bad_alloc, or no thread could be started
    {
        writeError(error, errorSize, exc.what());
        return 2;
    }
    return 0;
}
