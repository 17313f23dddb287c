//! Integration tests: typical_flow.
