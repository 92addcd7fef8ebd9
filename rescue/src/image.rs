//! The image file format (see docs/FORMAT.md). Being written.
