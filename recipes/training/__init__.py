"""Training: the base model and the backend that runs it (hf, unsloth), the training data,
TRL's trainers, the vLLM-on-CPU weight-sync fix, and the export writers."""

LOG_HISTORY_FILE = "log_history.json"  # what a trainer logged, beside its adapter (train_and_save writes it)
