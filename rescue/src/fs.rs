//! Used-block maps per filesystem. Being written.
