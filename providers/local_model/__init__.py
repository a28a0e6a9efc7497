"""The local provider's machinery: model runtimes, the ONNX export, what the model sees of long texts."""
