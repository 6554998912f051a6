/*
 * StarDeformConvPlugin and its creator (see starDeformConvPlugin.h); the kernel is in
 * starDeformConvKernel.cu and knows nothing of TensorRT.
 */
#include "starDeformConvPlugin.h"

#include "starDeformConvKernel.h"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <iterator>
#include <cstring>
#include <exception>
#include <new>
#include <sstream>

namespace vfnet
{
namespace plugin
{
namespace
{

using nvinfer1::DataType;
using nvinfer1::Dims;

constexpr int32_t kFeatures = 0;
constexpr int32_t kBbox = 1;
constexpr int32_t kWeight = 2;
constexpr int32_t kOutput = 3;
constexpr int32_t kNbInputs = 3;

std::atomic<nvinfer1::ILoggerFinder*> gLoggerFinder{nullptr}; // never the logger itself: see logError

std::string describe(Dims const& dims)
{
    std::ostringstream text;
    text << "[";
    for (int32_t i = 0; i < dims.nbDims; ++i)
    {
        text << (i ? ", " : "") << dims.d[i];
    }
    text << "]";
    return text.str();
}

bool known(int64_t a, int64_t b)
{
    return a >= 0 && b >= 0;
}

} // namespace

void logError(std::string const& message) noexcept
{
    nvinfer1::ILogger* logger{nullptr};
    nvinfer1::ILoggerFinder* finder = gLoggerFinder.load(std::memory_order_acquire);
    if (finder != nullptr)
    {
        try
        {
            logger = finder->findLogger(); // not noexcept in the header
        }
        catch (...)
        {
            logger = nullptr;
        }
    }
    if (logger != nullptr)
    {
        logger->log(nvinfer1::ILogger::Severity::kERROR, message.c_str());
    }
    else
    {
        std::fprintf(stderr, "%s\n", message.c_str());
    }
}

void setLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept
{
    gLoggerFinder.store(finder, std::memory_order_release);
}

StarDeformConvPlugin::StarDeformConvPlugin(int32_t stride)
    : mStride(stride)
{
    mFields.emplace_back("stride", &mStride, nvinfer1::PluginFieldType::kINT32, 1);
    mFieldCollection.nbFields = static_cast<int32_t>(mFields.size());
    mFieldCollection.fields = mFields.data();
}

nvinfer1::IPluginCapability* StarDeformConvPlugin::getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept
{
    switch (type)
    {
    case nvinfer1::PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
    case nvinfer1::PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
    case nvinfer1::PluginCapabilityType::kRUNTIME: return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
    }
    return nullptr;
}

nvinfer1::IPluginV3* StarDeformConvPlugin::clone() noexcept
{
    try
    {
        auto* copy = new StarDeformConvPlugin(mStride);
        copy->mErrorRecorder = mErrorRecorder;
        return copy;
    }
    catch (std::exception const& exc)
    {
        report(exc.what());
        return nullptr;
    }
}

char const* StarDeformConvPlugin::getPluginName() const noexcept
{
    return kStarDeformConvName;
}

char const* StarDeformConvPlugin::getPluginVersion() const noexcept
{
    return kStarDeformConvVersion;
}

char const* StarDeformConvPlugin::getPluginNamespace() const noexcept
{
    return "";
}

int32_t StarDeformConvPlugin::getNbOutputs() const noexcept
{
    return 1;
}

int32_t StarDeformConvPlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    if (nbInputs != kNbInputs || nbOutputs != 1)
    {
        report("expects 3 inputs (features, bbox_init, weight) and 1 output");
        return -1;
    }
    outputTypes[0] = inputTypes[kFeatures]; // strongly typed networks: the output follows the features
    return 0;
}

int32_t StarDeformConvPlugin::getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
    nvinfer1::DimsExprs const* /*shapeInputs*/, int32_t /*nbShapeInputs*/, nvinfer1::DimsExprs* outputs,
    int32_t nbOutputs, nvinfer1::IExprBuilder& /*exprBuilder*/) noexcept
{
    if (nbInputs != kNbInputs || nbOutputs != 1 || inputs[kFeatures].nbDims != 4 || inputs[kWeight].nbDims != 4)
    {
        report("features and weight must be 4-D ([B, C, H, W] and [C_out, C, 3, 3])");
        return -1;
    }
    outputs[0].nbDims = 4;
    outputs[0].d[0] = inputs[kFeatures].d[0]; // B
    outputs[0].d[1] = inputs[kWeight].d[0];   // C_out
    outputs[0].d[2] = inputs[kFeatures].d[2]; // H
    outputs[0].d[3] = inputs[kFeatures].d[3]; // W
    return 0;
}

bool StarDeformConvPlugin::supportsFormatCombination(
    int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    if (nbInputs != kNbInputs || nbOutputs != 1 || pos < 0 || pos > kOutput)
    {
        return false;
    }
    nvinfer1::PluginTensorDesc const& desc = inOut[pos].desc;
    if (desc.format != nvinfer1::TensorFormat::kLINEAR)
    {
        return false;
    }
    switch (pos)
    {
    case kFeatures: return desc.type == DataType::kFLOAT || desc.type == DataType::kHALF;
    case kBbox: return desc.type == DataType::kFLOAT;
    default: return desc.type == inOut[kFeatures].desc.type; // weight and output follow the features
    }
}

std::string StarDeformConvPlugin::checkShapes(
    Dims const& features, Dims const& bbox, Dims const& weight, Dims const& output) const
{
    if (features.nbDims != 4 || bbox.nbDims != 4 || weight.nbDims != 4 || output.nbDims != 4)
    {
        return "features, bbox_init, weight and output must all be 4-D";
    }
    std::ostringstream problem;
    if (bbox.d[1] >= 0 && bbox.d[1] != 4)
    {
        problem << "bbox_init must have 4 channels (l, t, r, b), got " << describe(bbox) << "; ";
    }
    if ((weight.d[2] >= 0 && weight.d[2] != 3) || (weight.d[3] >= 0 && weight.d[3] != 3))
    {
        problem << "weight must be [C_out, C, 3, 3], got " << describe(weight) << "; ";
    }
    if (known(weight.d[1], features.d[1]) && weight.d[1] != features.d[1])
    {
        problem << "weight " << describe(weight) << " does not fit features " << describe(features) << "; ";
    }
    for (int32_t axis : {0, 2, 3})
    {
        if (known(bbox.d[axis], features.d[axis]) && bbox.d[axis] != features.d[axis])
        {
            problem << "bbox_init " << describe(bbox) << " does not fit features " << describe(features) << "; ";
            break;
        }
    }
    std::string text = problem.str();
    return text.empty() ? text : text.substr(0, text.size() - 2);
}

int32_t StarDeformConvPlugin::configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
    nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    if (nbInputs != kNbInputs || nbOutputs != 1)
    {
        report("expects 3 inputs (features, bbox_init, weight) and 1 output");
        return -1;
    }
    try
    {
        std::string const problem
            = checkShapes(in[kFeatures].desc.dims, in[kBbox].desc.dims, in[kWeight].desc.dims, out[0].desc.dims);
        if (!problem.empty())
        {
            report(problem.c_str());
            return -1;
        }
        return 0;
    }
    catch (std::exception const& exc) // std::bad_alloc while describing shapes
    {
        report(exc.what());
        return -1;
    }
}

int32_t StarDeformConvPlugin::onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs,
    nvinfer1::PluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    if (nbInputs != kNbInputs || nbOutputs != 1)
    {
        report("expects 3 inputs (features, bbox_init, weight) and 1 output");
        return -1;
    }
    try
    {
        std::string const problem = checkShapes(in[kFeatures].dims, in[kBbox].dims, in[kWeight].dims, out[0].dims);
        if (!problem.empty())
        {
            report(problem.c_str());
            return -1;
        }
        return 0;
    }
    catch (std::exception const& exc)
    {
        report(exc.what());
        return -1;
    }
}

int32_t StarDeformConvPlugin::enqueue(nvinfer1::PluginTensorDesc const* inputDesc,
    nvinfer1::PluginTensorDesc const* /*outputDesc*/, void const* const* inputs, void* const* outputs,
    void* /*workspace*/, cudaStream_t stream) noexcept
{
    Dims const& features = inputDesc[kFeatures].dims;
    Dims const& weight = inputDesc[kWeight].dims;
    int64_t const sizes[] = {features.d[0], features.d[1], features.d[2], features.d[3], weight.d[0]};
    bool const fits = std::all_of(std::begin(sizes), std::end(sizes), [](int64_t size) { return size <= INT32_MAX / 16; })
        && features.d[2] * features.d[3] <= INT32_MAX / 16 && features.d[0] <= 65535;
    if (!fits)
    {
        report("features or weight too large for 32-bit indexing (or batch over 65535)");
        return -1;
    }
    auto const type = inputDesc[kFeatures].type == DataType::kHALF ? star::DataType::kFloat16 : star::DataType::kFloat32;
    cudaError_t const status = star::starDeformConvForward(type, inputs[kFeatures], static_cast<float const*>(inputs[kBbox]),
        inputs[kWeight], outputs[0], static_cast<int>(features.d[0]), static_cast<int>(features.d[1]),
        static_cast<int>(features.d[2]), static_cast<int>(features.d[3]), static_cast<int>(weight.d[0]),
        static_cast<float>(mStride), stream);
    if (status != cudaSuccess)
    {
        report(cudaGetErrorString(status)); // report() adds the plugin's name
        return -1;
    }
    return 0;
}

nvinfer1::IPluginV3* StarDeformConvPlugin::attachToContext(nvinfer1::IPluginResourceContext* context) noexcept
{
    auto* copy = static_cast<StarDeformConvPlugin*>(clone());
    if (copy != nullptr && context != nullptr)
    {
        copy->mErrorRecorder = context->getErrorRecorder();
    }
    return copy;
}

nvinfer1::PluginFieldCollection const* StarDeformConvPlugin::getFieldsToSerialize() noexcept
{
    return &mFieldCollection;
}

void StarDeformConvPlugin::report(char const* message) const noexcept
{
    try
    {
        std::string const text = std::string(kStarDeformConvName) + ": " + message;
        if (mErrorRecorder != nullptr)
        {
            mErrorRecorder->reportError(nvinfer1::ErrorCode::kINVALID_ARGUMENT, text.c_str());
        }
        else
        {
            logError(text);
        }
    }
    catch (...) // std::bad_alloc while building the message: nothing better can be said
    {
    }
}

StarDeformConvPluginCreator::StarDeformConvPluginCreator()
{
    mFields.emplace_back("stride", nullptr, nvinfer1::PluginFieldType::kINT32, 1);
    mFieldCollection.nbFields = static_cast<int32_t>(mFields.size());
    mFieldCollection.fields = mFields.data();
}

nvinfer1::IPluginV3* StarDeformConvPluginCreator::createPlugin(
    char const* name, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase /*phase*/) noexcept
{
    try
    {
        int64_t stride = 0;
        for (int32_t i = 0; fc != nullptr && i < fc->nbFields; ++i)
        {
            nvinfer1::PluginField const& field = fc->fields[i];
            if (std::strcmp(field.name, "stride") != 0 || field.length != 1 || field.data == nullptr)
            {
                continue;
            }
            if (field.type == nvinfer1::PluginFieldType::kINT32)
            {
                stride = *static_cast<int32_t const*>(field.data);
            }
            else if (field.type == nvinfer1::PluginFieldType::kINT64)
            {
                stride = *static_cast<int64_t const*>(field.data);
            }
        }
        if (stride <= 0 || stride > 4096)
        {
            logError(std::string(kStarDeformConvName) + ": layer " + (name ? name : "?")
                + " needs an int32 field stride in 1..4096 (the FPN level's stride), got " + std::to_string(stride));
            return nullptr;
        }
        return new StarDeformConvPlugin(static_cast<int32_t>(stride));
    }
    catch (std::exception const& exc)
    {
        logError(std::string(kStarDeformConvName) + ": createPlugin failed: " + exc.what());
        return nullptr;
    }
}

nvinfer1::PluginFieldCollection const* StarDeformConvPluginCreator::getFieldNames() noexcept
{
    return &mFieldCollection;
}

char const* StarDeformConvPluginCreator::getPluginName() const noexcept
{
    return kStarDeformConvName;
}

char const* StarDeformConvPluginCreator::getPluginVersion() const noexcept
{
    return kStarDeformConvVersion;
}

char const* StarDeformConvPluginCreator::getPluginNamespace() const noexcept
{
    return "";
}

} // namespace plugin
} // namespace vfnet
