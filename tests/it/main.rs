//! The whole acceptance suite in one binary. Every VM test runs real QEMU processes.

mod cli;
mod fixtures;
mod locate;
mod outcomes;
mod plugins;
