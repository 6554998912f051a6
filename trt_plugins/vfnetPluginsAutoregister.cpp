/*
 * libvfnet_trt_plugins_autoregister.so: registers every creator of libvfnet_trt_plugins.so in
 * TensorRT's global registry (namespace "") when it is loaded. For hosts that dlopen plugin
 * libraries and then look creators up: ctypes.CDLL in Python, ONNX Runtime's TensorRT execution
 * provider (trt_extra_plugin_lib_paths). Hosts that call loadLibrary take libvfnet_trt_plugins.so.
 */
#include <NvInferRuntime.h>

#include <cstdint>
#include <cstdio>

extern "C" nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators) noexcept;

namespace
{
struct RegisterAtLoad
{
    RegisterAtLoad()
    {
        int32_t count = 0;
        nvinfer1::IPluginCreatorInterface* const* creators = getCreators(count);
        for (int32_t i = 0; i < count; ++i)
        {
            if (!getPluginRegistry()->registerCreator(*creators[i], ""))
            {
                std::fprintf(stderr, "vfnet_trt_plugins: creator %d could not be registered (already registered?)\n", i);
            }
        }
    }
};
RegisterAtLoad const gRegisterAtLoad;
} // namespace
