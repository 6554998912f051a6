/*
 * The entry points of libvfnet_trt_plugins.so, as TensorRT's dynamic plugin loading expects them:
 * IPluginRegistry::loadLibrary, trtexec --dynamicPlugins and IBuilderConfig::setPluginsToSerialize
 * call getCreators() and register what it returns; setLoggerFinder() hands us TensorRT's logger.
 * Loading the library does not register anything by itself (libvfnet_trt_plugins_autoregister.so
 * does, for hosts that only dlopen plugin libraries).
 */
#include "star_deform_conv/starDeformConvPlugin.h"

#define VFNET_EXPORT extern "C" __attribute__((visibility("default")))

namespace
{
vfnet::plugin::StarDeformConvPluginCreator gStarDeformConvCreator;
nvinfer1::IPluginCreatorInterface* gCreators[] = {&gStarDeformConvCreator};
} // namespace

VFNET_EXPORT void setLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept
{
    vfnet::plugin::setLogger(finder != nullptr ? finder->findLogger() : nullptr);
}

VFNET_EXPORT nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators) noexcept
{
    nbCreators = static_cast<int32_t>(sizeof(gCreators) / sizeof(gCreators[0]));
    return gCreators;
}
