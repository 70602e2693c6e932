//! Helpers shared by integration tests (`mod support;` in a test file).

#![allow(dead_code)] // each test uses a part

pub mod contract;
pub mod restart;
