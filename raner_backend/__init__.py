"""raner-backend: a Label Studio ML backend for Chinese named entity recognition."""
import os

# oneDNN (torch's CPU kernels) keeps a compiled primitive, with its own copy of reordered weights,
# for every input shape it meets, up to 1,024 by default: texts of every length grew the process by
# ~400 MB over 1,500 sentences, and a 10,000-task ranking by 1.1 GB. With 8 it stays within ~70 MB at
# the same speed (benchmarks/engine_memory.py). It is read at torch's first CPU operation, so it is
# set on import; a value set in the environment wins.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "8")
