"""The knowledge measure: span losses, the bit lower bound, capacity ratio, recall accuracy."""
