//! Integration tests: overlay.
