//! Integration tests: directory.
