//! Every bound the host puts on a plugin, each defined once with the reason for its
//! value. `docs/plugins.md` ("The sandbox") states the ones an author can meet.
//!
//! A plugin is untrusted code that runs inside every install, as root under `sudo`: each
//! resource it can take from the host (time, memory, descriptors, threads, log volume) has
//! a cap here, and reaching a cap ends the call with DISP_E_EXCEPTION naming the plugin,
//! never the host.

use std::time::Duration;

// Time.

/// A call's deadline when the manifest sets none (`[limits] timeout_ms`): ample for a
/// policy or hook, which answers in milliseconds, and short enough to bound a stuck
/// install.
pub const DEFAULT_TIMEOUT_MS: u64 = 1000;
/// The longest deadline a manifest may ask for: a minute is enough for a hook that
/// writes an audit record to a slow disk, and short enough that an install never looks
/// hung.
pub const MAX_TIMEOUT_MS: u64 = 60_000;
/// How often the epoch thread makes running calls compare the clock with their deadline
/// (`engine.rs`): a loop is stopped at most this late (plus scheduling delay), and ticks
/// this sparse cost the host next to nothing.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

// Memory.

/// Linear memory, all of a call's memories together, when the manifest sets none
/// (`[limits] memory_mb`): the example plugins, in every language, run within it.
pub const DEFAULT_MEMORY_MB: u64 = 64;
/// The most a manifest may ask for: a plugin never needs a large share of a host that
/// also runs VMs.
pub const MAX_MEMORY_MB: u64 = 1024;
/// The deepest wasm stack a plugin may use (wasmtime's default, set explicitly so an
/// upgrade cannot change it): deeper recursion stops with "overflowed its stack".
pub const MAX_WASM_STACK: usize = 512 * 1024;
/// Table elements, all of a call's tables together: far above what a component's
/// indirect-call tables need, far below what would cost the host memory.
pub const TABLE_ELEMENTS: usize = 100_000;
/// Core instances, tables and memories a component may create: a component is one
/// core instance per module plus the shims, well under these.
pub const INSTANCES: usize = 64;
pub const TABLES: usize = 64;
pub const MEMORIES: usize = 16;

// Host resources.

/// Open handles a plugin may hold at once: files, directories, streams, pollables. Each
/// open file is a descriptor in vmguest's own process, so this bounds what a plugin can
/// take from the host.
pub const MAX_HANDLES: usize = 256;
/// Helper threads for WASI file calls, per calling thread (`runtime.rs`). A call blocked
/// in the kernel keeps its helper; this bounds how many such threads plugins can leave.
pub const MAX_BLOCKING_THREADS: usize = 8;
/// How long an idle helper thread for file calls waits for the next one: long enough
/// to serve one call's burst of file operations, short enough to leave nothing behind.
pub const BLOCKING_KEEP_ALIVE: Duration = Duration::from_millis(100);

// What a plugin says.

/// Bytes of stdout, and of stderr, kept per call; the rest is counted and dropped
/// (`stdio.rs`), never refused, so a chatty plugin is not a failing one. 64 KiB holds
/// any traceback and keeps the log readable.
pub const OUTPUT_CAP: usize = 64 * 1024;
/// Lines of stderr quoted in a failed call's error record: a Rust panic message, the
/// end of a Python traceback.
pub const STDERR_TAIL_LINES: usize = 4;
/// Bytes of those lines at most, so an error record stays one readable line.
pub const STDERR_TAIL_BYTES: usize = 1024;
/// Bytes of one `host.log` message; the rest is cut. One message is a line in the log,
/// not a channel for bulk data.
pub const LOG_MESSAGE_BYTES: usize = 4096;
/// Longest string accepted in an answer (a refusal's message, a provided path): it goes
/// into error records and reports, and no real path or message comes near it.
pub const MAX_ANSWER: usize = 4096;
