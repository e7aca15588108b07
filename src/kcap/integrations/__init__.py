"""kcap inside other people's training code: a PyTorch dataset of the exposure-exact stream
(`kcap.integrations.pytorch`) and a Hugging Face `Trainer` callback that measures the bits stored
(`kcap.integrations.transformers`). (kcap's own trainer writes TensorBoard scalars through
`kcap.training.tensorboard`.)

Each module imports its third-party package only when it is itself imported.
"""
