// The TensorRT glue of StarDeformConv without TensorRT's library: built against its headers, with a
// fake kernel standing in for the CUDA one (it records its arguments), fake loggers, a fake logger
// finder (asked at log time, from the logging thread) and a fake error recorder. Run by test_plugin_glue.py once per header set; prints "ok N checks" or the
// failed checks, and exits non-zero on a failure.
#include "star_deform_conv/starDeformConvKernel.h"
#include "star_deform_conv/starDeformConvPlugin.h"

#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

extern "C" nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators) noexcept;
extern "C" void setLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept;

using namespace nvinfer1;

namespace
{
int gChecks = 0;
int gFailures = 0;

void check(bool condition, char const* what, int line)
{
    ++gChecks;
    if (!condition)
    {
        ++gFailures;
        std::printf("FAILED line %d: %s\n", line, what);
    }
}
#define CHECK(condition) check((condition), #condition, __LINE__)

// The fake kernel: what enqueue passed, and what to answer.
struct KernelCall
{
    vfnet::star::DataType type;
    int batch, channels, height, width, outChannels;
    float stride;
    void const* features;
    void* output;
};
std::vector<KernelCall> gCalls;
cudaError_t gKernelAnswer = cudaSuccess;

struct Logger : ILogger
{
    std::vector<std::string> errors;
    void log(Severity severity, AsciiChar const* message) noexcept override
    {
        if (severity <= Severity::kERROR)
        {
            errors.emplace_back(message);
        }
    }
} gLogger, gLaterLogger;

// TensorRT's finder: which logger it gives changes over time (none until a builder or runtime exists),
// and it must be asked from the thread that logs.
struct Finder : ILoggerFinder
{
    ILogger* current{nullptr};
    int calls{0};
    std::thread::id caller;
    ILogger* findLogger() override
    {
        ++calls;
        caller = std::this_thread::get_id();
        return current;
    }
} gFinder;

struct Recorder : IErrorRecorder
{
    std::vector<std::string> errors;
    int32_t getNbErrors() const noexcept override { return static_cast<int32_t>(errors.size()); }
    ErrorCode getErrorCode(int32_t) const noexcept override { return ErrorCode::kINVALID_ARGUMENT; }
    ErrorDesc getErrorDesc(int32_t i) const noexcept override { return errors[static_cast<size_t>(i)].c_str(); }
    bool hasOverflowed() const noexcept override { return false; }
    void clear() noexcept override { errors.clear(); }
    bool reportError(ErrorCode, ErrorDesc desc) noexcept override { errors.emplace_back(desc); return true; }
    RefCount incRefCount() noexcept override { return 1; }
    RefCount decRefCount() noexcept override { return 0; }
} gRecorder;

struct ResourceContext : IPluginResourceContext
{
    IGpuAllocator* getGpuAllocator() const noexcept override { return nullptr; }
    IErrorRecorder* getErrorRecorder() const noexcept override { return &gRecorder; }
} gContext;

bool contains(std::vector<std::string> const& messages, char const* text)
{
    for (auto const& m : messages)
    {
        if (m.find(text) != std::string::npos)
        {
            return true;
        }
    }
    return false;
}

Dims dims4(int64_t a, int64_t b, int64_t c, int64_t d)
{
    Dims dims;
    dims.nbDims = 4;
    dims.d[0] = a;
    dims.d[1] = b;
    dims.d[2] = c;
    dims.d[3] = d;
    return dims;
}

DynamicPluginTensorDesc tensor(DataType type, Dims dims, TensorFormat format = TensorFormat::kLINEAR)
{
    DynamicPluginTensorDesc desc{};
    desc.desc.type = type;
    desc.desc.format = format;
    desc.desc.dims = dims;
    desc.min = desc.max = desc.opt = dims;
    return desc;
}

IPluginV3* create(IPluginCreatorV3One& creator, std::vector<PluginField> const& fields, TensorRTPhase phase = TensorRTPhase::kBUILD)
{
    PluginFieldCollection collection{static_cast<int32_t>(fields.size()), fields.data()};
    return creator.createPlugin("layer", &collection, phase);
}
} // namespace

namespace vfnet
{
namespace star
{
cudaError_t starDeformConvForward(DataType type, void const* features, float const* /*bbox*/, void const* /*weight*/,
    void* output, int batch, int channels, int height, int width, int outChannels, float stride, cudaStream_t) noexcept
{
    gCalls.push_back({type, batch, channels, height, width, outChannels, stride, features, output});
    return gKernelAnswer;
}
} // namespace star
} // namespace vfnet

int main()
{
    // logging: TensorRT sets the finder when it loads the library, before any logger exists; the
    // plugin asks the finder each time it logs, from the logging thread, and uses what it gives then
    setLoggerFinder(&gFinder);
    CHECK(gFinder.calls == 0); // not asked (and its answer not kept) at load
    int32_t count = 0;
    IPluginCreatorInterface* const* creators = getCreators(count);
    CHECK(count == 1);
    CHECK(std::strcmp(creators[0]->getInterfaceInfo().kind, "PLUGIN CREATOR_V3ONE") == 0);
    auto& creator = *static_cast<IPluginCreatorV3One*>(creators[0]);
    char const* const noStride = "StarDeformConv: layer layer needs an int32 field stride";
    CHECK(creator.createPlugin("layer", nullptr, TensorRTPhase::kBUILD) == nullptr); // no logger yet: stderr
    CHECK(gFinder.calls == 1 && gLogger.errors.empty());
    gFinder.current = &gLogger; // a builder (and its logger) appears
    CHECK(creator.createPlugin("layer", nullptr, TensorRTPhase::kBUILD) == nullptr);
    CHECK(gFinder.calls == 2 && gLogger.errors.size() == 1 && contains(gLogger.errors, noStride));
    gFinder.current = &gLaterLogger; // another one replaces it
    std::thread worker([&creator] { creator.createPlugin("layer", nullptr, TensorRTPhase::kBUILD); });
    std::thread::id const workerId = worker.get_id();
    worker.join();
    CHECK(gFinder.calls == 3 && gFinder.caller == workerId); // asked on the thread that logged
    CHECK(gLaterLogger.errors.size() == 1 && contains(gLaterLogger.errors, noStride) && gLogger.errors.size() == 1);
    setLoggerFinder(nullptr); // no finder: stderr, nobody asked
    CHECK(creator.createPlugin("layer", nullptr, TensorRTPhase::kBUILD) == nullptr);
    CHECK(gFinder.calls == 3 && gLogger.errors.size() == 1 && gLaterLogger.errors.size() == 1);
    gLogger.errors.clear();
    gFinder.current = &gLogger;
    setLoggerFinder(&gFinder); // the rest of the checks read gLogger
    CHECK(std::strcmp(creator.getPluginName(), "StarDeformConv") == 0);
    CHECK(std::strcmp(creator.getPluginVersion(), "1") == 0 && std::strcmp(creator.getPluginNamespace(), "") == 0);
    PluginFieldCollection const* names = creator.getFieldNames();
    CHECK(names->nbFields == 1 && std::strcmp(names->fields[0].name, "stride") == 0 && names->fields[0].type == PluginFieldType::kINT32);

    // fields: int32 and int64 strides are taken; missing or out-of-range ones are refused with the reason
    int32_t const stride8 = 8;
    int64_t const stride16 = 16;
    int32_t const stride0 = 0;
    IPluginV3* plugin = create(creator, {PluginField("stride", &stride8, PluginFieldType::kINT32, 1)});
    CHECK(plugin != nullptr);
    IPluginV3* plugin16 = create(creator, {PluginField("stride", &stride16, PluginFieldType::kINT64, 1)});
    CHECK(plugin16 != nullptr);
    CHECK(create(creator, {}) == nullptr && contains(gLogger.errors, "StarDeformConv: layer layer needs an int32 field stride"));
    CHECK(create(creator, {PluginField("stride", &stride0, PluginFieldType::kINT32, 1)}) == nullptr);

    auto* core = static_cast<IPluginV3OneCore*>(plugin->getCapabilityInterface(PluginCapabilityType::kCORE));
    auto* build = static_cast<IPluginV3OneBuild*>(plugin->getCapabilityInterface(PluginCapabilityType::kBUILD));
    auto* runtime = static_cast<IPluginV3OneRuntime*>(plugin->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    CHECK(core && build && runtime && std::strcmp(core->getPluginName(), "StarDeformConv") == 0);
    CHECK(std::strcmp(core->getInterfaceInfo().kind, "PLUGIN_V3ONE_CORE") == 0);
    CHECK(std::strcmp(build->getInterfaceInfo().kind, "PLUGIN_V3ONE_BUILD") == 0);
    CHECK(std::strcmp(runtime->getInterfaceInfo().kind, "PLUGIN_V3ONE_RUNTIME") == 0);

    // types: the output follows the features (strongly typed networks)
    DataType out{};
    DataType const half[] = {DataType::kHALF, DataType::kFLOAT, DataType::kHALF};
    CHECK(build->getOutputDataTypes(&out, 1, half, 3) == 0 && out == DataType::kHALF);
    DataType const single[] = {DataType::kFLOAT, DataType::kFLOAT, DataType::kFLOAT};
    CHECK(build->getOutputDataTypes(&out, 1, single, 3) == 0 && out == DataType::kFLOAT);
    CHECK(build->getOutputDataTypes(&out, 1, single, 2) != 0);

    // formats: linear only; features float or half, bbox float, weight and output as the features
    Dims const features = dims4(2, 4, 10, 12), box = dims4(2, 4, 10, 12), weight = dims4(8, 4, 3, 3), output = dims4(2, 8, 10, 12);
    std::vector<DynamicPluginTensorDesc> io{tensor(DataType::kHALF, features), tensor(DataType::kFLOAT, box),
        tensor(DataType::kHALF, weight), tensor(DataType::kHALF, output)};
    CHECK(build->supportsFormatCombination(0, io.data(), 3, 1) && build->supportsFormatCombination(1, io.data(), 3, 1));
    CHECK(build->supportsFormatCombination(2, io.data(), 3, 1) && build->supportsFormatCombination(3, io.data(), 3, 1));
    io[2].desc.type = DataType::kFLOAT;
    CHECK(!build->supportsFormatCombination(2, io.data(), 3, 1));
    io[1].desc.type = DataType::kHALF;
    CHECK(!build->supportsFormatCombination(1, io.data(), 3, 1));
    io[0].desc.type = DataType::kINT8;
    CHECK(!build->supportsFormatCombination(0, io.data(), 3, 1));
    io[0] = tensor(DataType::kFLOAT, features, TensorFormat::kCHW4);
    CHECK(!build->supportsFormatCombination(0, io.data(), 3, 1));

    // shapes: [B, C_out, H, W] from the features and the weight (expressions passed through)
    int tokens[8];
    DimsExprs in[3];
    for (int t = 0; t < 3; ++t)
    {
        in[t].nbDims = 4;
        for (int i = 0; i < 4; ++i)
        {
            in[t].d[i] = reinterpret_cast<IDimensionExpr const*>(&tokens[(t * 4 + i) % 8]);
        }
    }
    DimsExprs shapeOut{};
    alignas(IExprBuilder) unsigned char builderStorage[sizeof(IExprBuilder)]{}; // the plugin never touches it
    CHECK(build->getOutputShapes(in, 3, nullptr, 0, &shapeOut, 1, *reinterpret_cast<IExprBuilder*>(builderStorage)) == 0);
    CHECK(shapeOut.nbDims == 4 && shapeOut.d[0] == in[0].d[0] && shapeOut.d[1] == in[2].d[0] && shapeOut.d[2] == in[0].d[2] && shapeOut.d[3] == in[0].d[3]);

    // configure: fitting shapes (also unknown -1 dims) pass, others are named
    std::vector<DynamicPluginTensorDesc> good{tensor(DataType::kFLOAT, features), tensor(DataType::kFLOAT, box), tensor(DataType::kFLOAT, weight)};
    DynamicPluginTensorDesc goodOut = tensor(DataType::kFLOAT, output);
    CHECK(build->configurePlugin(good.data(), 3, &goodOut, 1) == 0);
    good[0].desc.dims = dims4(-1, 4, -1, -1);
    CHECK(build->configurePlugin(good.data(), 3, &goodOut, 1) == 0);
    good[2].desc.dims = dims4(8, 3, 3, 3);
    CHECK(build->configurePlugin(good.data(), 3, &goodOut, 1) == -1);
    CHECK(contains(gLogger.errors, "StarDeformConv: weight [8, 3, 3, 3] does not fit features [-1, 4, -1, -1]"));
    good[2].desc.dims = weight;
    good[1].desc.dims = dims4(2, 5, 10, 12);
    CHECK(build->configurePlugin(good.data(), 3, &goodOut, 1) == -1 && contains(gLogger.errors, "bbox_init must have 4 channels"));

    // serialisation: the fields round-trip through a runtime-phase creation
    PluginFieldCollection const* saved = runtime->getFieldsToSerialize();
    CHECK(saved->nbFields == 1 && std::strcmp(saved->fields[0].name, "stride") == 0 && *static_cast<int32_t const*>(saved->fields[0].data) == 8);
    std::vector<PluginField> savedFields(saved->fields, saved->fields + saved->nbFields);
    IPluginV3* restored = create(creator, savedFields, TensorRTPhase::kRUNTIME);
    CHECK(restored != nullptr);

    // enqueue: sizes, type and stride reach the kernel; a kernel error is reported, with the name,
    // to the error recorder of the context the plugin was attached to
    IPluginV3* attachedPlugin = static_cast<IPluginV3OneRuntime*>(restored->getCapabilityInterface(PluginCapabilityType::kRUNTIME))
                                    ->attachToContext(&gContext);
    CHECK(attachedPlugin != nullptr && attachedPlugin != restored);
    auto* attached = static_cast<IPluginV3OneRuntime*>(attachedPlugin->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    PluginTensorDesc desc[4]{};
    desc[0].dims = features;
    desc[0].type = DataType::kHALF;
    desc[1].dims = box;
    desc[1].type = DataType::kFLOAT;
    desc[2].dims = weight;
    desc[2].type = DataType::kHALF;
    desc[3].dims = output;
    desc[3].type = DataType::kHALF;
    CHECK(attached->onShapeChange(desc, 3, desc + 3, 1) == 0);
    float buffers[4];
    void const* inputs[3] = {&buffers[0], &buffers[1], &buffers[2]};
    void* outputs[1] = {&buffers[3]};
    CHECK(attached->enqueue(desc, desc + 3, inputs, outputs, nullptr, nullptr) == 0 && gCalls.size() == 1);
    KernelCall const& call = gCalls.back();
    CHECK(call.type == vfnet::star::DataType::kFloat16 && call.batch == 2 && call.channels == 4 && call.height == 10 && call.width == 12);
    CHECK(call.outChannels == 8 && call.stride == 8.0F && call.features == inputs[0] && call.output == outputs[0]);
    gKernelAnswer = cudaErrorInvalidValue;
    CHECK(attached->enqueue(desc, desc + 3, inputs, outputs, nullptr, nullptr) == -1);
    CHECK(contains(gRecorder.errors, "StarDeformConv: ") && !contains(gLogger.errors, "invalid argument"));
    desc[2].dims = dims4(8, 5, 3, 3);
    CHECK(attached->onShapeChange(desc, 3, desc + 3, 1) == -1 && contains(gRecorder.errors, "does not fit features"));

    // clone keeps the stride
    IPluginV3* copy = plugin16->clone();
    auto* copyRuntime = static_cast<IPluginV3OneRuntime*>(copy->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    CHECK(*static_cast<int32_t const*>(copyRuntime->getFieldsToSerialize()->fields[0].data) == 16);

    for (IPluginV3* p : {plugin, plugin16, restored, copy, attachedPlugin})
    {
        delete p;
    }
    if (gFailures == 0)
    {
        std::printf("ok %d checks\n", gChecks);
    }
    return gFailures == 0 ? 0 : 1;
}
