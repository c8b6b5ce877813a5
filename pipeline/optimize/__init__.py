"""Model-level optimizations with tensorflow-model-optimization: pruning and quantization-aware training."""
