"""One reader of ML Metadata for runs, leaves and lineage.

`store` opens a store (read-only for readers) and redacts passwords; `layout` holds the names an
orchestrator gives contexts and types (TFX's local layout today); `reader` reads a store in a
layout; `runs`, `leaves` and `lineage` build on it; `read` has the entry points the CLI and the
report use; `run_records` is what `collabopt run` writes besides TFX. The modules that read
artifact properties import TFX (and so TensorFlow): import them where needed, not here.
"""
