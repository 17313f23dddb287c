//! Integration tests: pn_establishment.
