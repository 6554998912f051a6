/*
 * StarDeformConv (version "1", namespace ""): the TensorRT IPluginV3 around the fused kernel.
 *
 * Inputs  features [B, C, H, W] float32 or float16, bbox_init [B, 4, H, W] float32,
 *         weight [C_out, C, 3, 3] (the features' type); output [B, C_out, H, W] (the features' type).
 * Field   stride (int32 > 0): the FPN level's stride, pixels per feature cell.
 * Linear (NCHW) formats only; any batch, height and width; no workspace.
 *
 * Every method is noexcept: failures are reported through the engine's error recorder when one is
 * attached, else through TensorRT's logger, always starting with "StarDeformConv".
 */
#pragma once

#include <NvInferRuntime.h>

#include <string>
#include <vector>

namespace vfnet
{
namespace plugin
{

constexpr char const* kStarDeformConvName = "StarDeformConv";
constexpr char const* kStarDeformConvVersion = "1";

class StarDeformConvPlugin final : public nvinfer1::IPluginV3,
                                   public nvinfer1::IPluginV3OneCore,
                                   public nvinfer1::IPluginV3OneBuild,
                                   public nvinfer1::IPluginV3OneRuntime
{
public:
    explicit StarDeformConvPlugin(int32_t stride);

    // IPluginV3
    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override;
    nvinfer1::IPluginV3* clone() noexcept override;

    // IPluginV3OneCore
    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;

    // IPluginV3OneBuild
    int32_t getNbOutputs() const noexcept override;
    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs, nvinfer1::DataType const* inputTypes,
        int32_t nbInputs) const noexcept override;
    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs, nvinfer1::DimsExprs const* shapeInputs,
        int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
        nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
        int32_t nbOutputs) noexcept override;
    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;

    // IPluginV3OneRuntime
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs, nvinfer1::PluginTensorDesc const* out,
        int32_t nbOutputs) noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

private:
    //! Empty when the shapes fit (dims < 0 are unknown and pass), else what is wrong.
    std::string checkShapes(nvinfer1::Dims const& features, nvinfer1::Dims const& bbox, nvinfer1::Dims const& weight,
        nvinfer1::Dims const& output) const;
    void report(char const* message) const noexcept; //!< prefixed with the plugin's name

    int32_t mStride;
    nvinfer1::IErrorRecorder* mErrorRecorder{nullptr};
    std::vector<nvinfer1::PluginField> mFields;
    nvinfer1::PluginFieldCollection mFieldCollection{};
};

class StarDeformConvPluginCreator final : public nvinfer1::IPluginCreatorV3One
{
public:
    StarDeformConvPluginCreator();

    nvinfer1::IPluginV3* createPlugin(
        char const* name, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase phase) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override;
    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;

private:
    std::vector<nvinfer1::PluginField> mFields;
    nvinfer1::PluginFieldCollection mFieldCollection{};
};

//! Report `message` at kERROR through the logger that the finder (setLoggerFinder) gives at this moment,
//! or on stderr when there is no finder or it has no logger. The finder is asked on every call, from
//! the calling thread (ILoggerFinder::findLogger's contract): TensorRT hands it over when it loads the
//! library, before any builder or runtime (and so any logger) may exist.
void logError(std::string const& message) noexcept;

//! The finder logError asks (TensorRT's; it owns it). nullptr: stderr. The last one set is used.
void setLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept;

} // namespace plugin
} // namespace vfnet
