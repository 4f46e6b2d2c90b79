//! The whole acceptance suite in one binary. Every VM test runs real QEMU processes.

mod agent_life;
mod authoring;
mod cli;
mod crash;
mod debian;
mod fake;
mod fixtures;
mod guests;
mod hosts;
mod layout;
mod libvirt;
mod libvirtd;
mod locate;
mod monitor_sharing;
mod operation;
mod outcomes;
mod peers;
mod plugins;
mod pve;
mod pve_emulation;
mod winagent;
