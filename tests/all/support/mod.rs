//! Shared helpers for the end-to-end tests (fake servers, fixtures). Not tests
//! themselves, and nothing here is specific to one test module.

pub mod fake_http;
