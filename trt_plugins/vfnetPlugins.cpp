/*
 * The entry points of libvfnet_trt_plugins.so, as TensorRT's dynamic plugin loading expects them:
 * IPluginRegistry::loadLibrary, trtexec --dynamicPlugins and IBuilderConfig::setPluginsToSerialize
 * call getCreators() and register what it returns; setLoggerFinder() hands us TensorRT's logger finder.
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

// TensorRT calls this when it loads the library, usually before any builder or runtime (and so any
// logger) exists: keep the finder and ask it for the logger each time a message is logged (on the
// logging thread, as ILoggerFinder::findLogger requires), never the logger it gives now.
VFNET_EXPORT void setLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept
{
    vfnet::plugin::setLoggerFinder(finder);
}

VFNET_EXPORT nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators) noexcept
{
    nbCreators = static_cast<int32_t>(sizeof(gCreators) / sizeof(gCreators[0]));
    return gCreators;
}
