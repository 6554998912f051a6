/*
 * libvfnet_trt_plugins_autoregister.so: registers every creator of libvfnet_trt_plugins.so in
 * TensorRT's global registry (namespace "") when it is loaded. For hosts that dlopen plugin
 * libraries and then look creators up: ctypes.CDLL in Python, ONNX Runtime's TensorRT execution
 * provider (trt_extra_plugin_lib_paths). Hosts that call loadLibrary take libvfnet_trt_plugins.so.
 *
 * It is linked against libnvinfer (getPluginRegistry) and libvfnet_trt_plugins.so (getCreators,
 * found beside it through RUNPATH $ORIGIN), so it loads where TensorRT's symbols are not global
 * (pip-installed TensorRT, ONNX Runtime's RTLD_LOCAL provider libraries).
 *
 * Both of our libraries may meet in one process (the server's TensorRT backend loads
 * libvfnet_trt_plugins.so through loadLibrary, ONNX Runtime's provider this one). The registry
 * refuses a second creator of the same name, version and namespace, so a creator already there is
 * left alone: silently when it is ours (the same object: one libvfnet_trt_plugins.so per process),
 * with one line when another library registered that name. The registry is searched through
 * getAllCreators, not getCreator: TensorRT's registry logs an error for every lookup that misses,
 * which here is the normal first load.
 */
#include <NvInferRuntime.h>

#include <cstdint>
#include <cstdio>
#include <cstring>

extern "C" nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators) noexcept;

namespace
{

constexpr char const* kPrefix = "vfnet_trt_plugins_autoregister";

struct Identity
{
    char const* name{nullptr};
    char const* version{nullptr};
    char const* nameSpace{nullptr};
};

//! Name, version and namespace of a creator whose interface we know (IPluginCreatorV3One), else all null.
Identity identify(nvinfer1::IPluginCreatorInterface const* creator) noexcept
{
    if (creator == nullptr || std::strcmp(creator->getInterfaceInfo().kind, "PLUGIN CREATOR_V3ONE") != 0)
    {
        return {};
    }
    auto const* v3 = static_cast<nvinfer1::IPluginCreatorV3One const*>(creator);
    return {v3->getPluginName(), v3->getPluginVersion(), v3->getPluginNamespace()};
}

bool same(char const* a, char const* b) noexcept
{
    return std::strcmp(a != nullptr ? a : "", b != nullptr ? b : "") == 0;
}

//! The registered creator with `wanted`'s name, version and namespace (or `wanted` itself), else nullptr.
nvinfer1::IPluginCreatorInterface* registered(
    nvinfer1::IPluginRegistry& registry, nvinfer1::IPluginCreatorInterface* wanted, Identity const& id) noexcept
{
    int32_t count = 0;
    nvinfer1::IPluginCreatorInterface* const* all = registry.getAllCreators(&count);
    for (int32_t i = 0; all != nullptr && i < count; ++i)
    {
        if (all[i] == wanted)
        {
            return wanted;
        }
        Identity const other = identify(all[i]);
        if (id.name != nullptr && other.name != nullptr && same(other.name, id.name) && same(other.version, id.version)
            && same(other.nameSpace, id.nameSpace))
        {
            return all[i];
        }
    }
    return nullptr;
}

void registerAll() noexcept
{
    nvinfer1::IPluginRegistry* registry = getPluginRegistry();
    if (registry == nullptr)
    {
        std::fprintf(stderr, "%s: TensorRT gave no plugin registry; StarDeformConv is not registered\n", kPrefix);
        return;
    }
    int32_t count = 0;
    nvinfer1::IPluginCreatorInterface* const* creators = getCreators(count);
    for (int32_t i = 0; creators != nullptr && i < count; ++i)
    {
        nvinfer1::IPluginCreatorInterface* creator = creators[i];
        if (creator == nullptr)
        {
            continue;
        }
        Identity const id = identify(creator);
        char const* name = id.name != nullptr ? id.name : "?";
        char const* version = id.version != nullptr ? id.version : "?";
        nvinfer1::IPluginCreatorInterface* present = registered(*registry, creator, id);
        if (present == creator)
        {
            continue; // ours, registered already (libvfnet_trt_plugins.so came through loadLibrary first)
        }
        if (present != nullptr)
        {
            std::fprintf(stderr, "%s: %s version %s is registered already by another library; that one is used\n", kPrefix,
                name, version);
            continue;
        }
        if (!registry->registerCreator(*creator, id.nameSpace != nullptr ? id.nameSpace : ""))
        {
            std::fprintf(stderr, "%s: TensorRT refused to register %s version %s (its log says why)\n", kPrefix, name, version);
        }
    }
}

struct RegisterAtLoad
{
    RegisterAtLoad() noexcept
    {
        registerAll();
    }
};
RegisterAtLoad const gRegisterAtLoad;

} // namespace
