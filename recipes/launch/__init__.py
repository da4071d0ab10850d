"""From one GPU to a node: which process does what (``distributed``), and the command
lines aha builds for ``accelerate launch`` and TRL's ``vllm-serve`` (``commands``)."""
