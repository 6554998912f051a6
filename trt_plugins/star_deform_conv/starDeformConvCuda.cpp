/*
 * C interface of libvfnet_star_deform_conv_cuda.so: the kernel on device pointers, for tests and
 * benchmarks that drive it without TensorRT (e.g. from PyTorch tensors' data_ptr()).
 *   type 0: float32, 1: float16 (features, weight, output); bbox always float32.
 * Returns the cudaError_t of the launch (0 when queued on `stream`).
 */
#include "starDeformConvKernel.h"

extern "C" __attribute__((visibility("default"))) int vfnetStarDeformConvCuda(int type, void const* features,
    float const* bbox, void const* weight, void* output, int batch, int channels, int height, int width,
    int outChannels, int stride, void* stream)
{
    auto const dataType = type == 1 ? vfnet::star::DataType::kFloat16 : vfnet::star::DataType::kFloat32;
    return static_cast<int>(vfnet::star::starDeformConvForward(dataType, features, bbox, weight, output, batch,
        channels, height, width, outChannels, static_cast<float>(stride), static_cast<cudaStream_t>(stream)));
}
