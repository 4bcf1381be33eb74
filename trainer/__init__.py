"""The trainer daemon: builds PyTorch models from commands, trains and tests them."""
