/*
 * C interface of libvfnet_star_deform_conv_cuda.so: the kernels on device pointers, for tests and
 * benchmarks that drive them without TensorRT (e.g. from PyTorch tensors' data_ptr()).
 *   type 0: float32, 1: float16 (features, weight, output); bbox always float32.
 *   algorithm 0: the default (what the TensorRT plugin runs: tensor cores for float16, CUDA cores
 *   for float32); 1: the CUDA-core kernel (float32 multiplies; float16 inputs widened); 2: the
 *   tensor-core kernel (float16 only).
 * Returns the cudaError_t of the launch (0 when queued on `stream`).
 */
#include "starDeformConvKernel.h"

namespace
{
vfnet::star::DataType dataType(int type)
{
    return type == 1 ? vfnet::star::DataType::kFloat16 : vfnet::star::DataType::kFloat32;
}
} // namespace

extern "C" __attribute__((visibility("default"))) int vfnetStarDeformConvCuda(int type, void const* features,
    float const* bbox, void const* weight, void* output, int batch, int channels, int height, int width,
    int outChannels, int stride, void* stream)
{
    return static_cast<int>(vfnet::star::starDeformConvForward(dataType(type), features, bbox, weight, output, batch,
        channels, height, width, outChannels, static_cast<float>(stride), static_cast<cudaStream_t>(stream)));
}

extern "C" __attribute__((visibility("default"))) int vfnetStarDeformConvCudaWith(int algorithm, int type,
    void const* features, float const* bbox, void const* weight, void* output, int batch, int channels, int height,
    int width, int outChannels, int stride, void* stream)
{
    if (algorithm < 0 || algorithm > 2 || type < 0 || type > 1)
    {
        return static_cast<int>(cudaErrorInvalidValue);
    }
    return static_cast<int>(vfnet::star::starDeformConvForwardWith(static_cast<vfnet::star::Algorithm>(algorithm),
        dataType(type), features, bbox, weight, output, batch, channels, height, width, outChannels,
        static_cast<float>(stride), static_cast<cudaStream_t>(stream)));
}
