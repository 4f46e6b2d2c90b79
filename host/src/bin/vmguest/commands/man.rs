//! `man`: the man page (roff), from the clap definition.

use clap::CommandFactory;
use vmguest::HResult;

use crate::args::Cli;

pub fn exec() -> i32 {
    match write(&mut std::io::stdout()) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("vmguest : writing the man page: {e}");
            HResult::DispException.exit_code()
        }
    }
}

/// Write the man page: the command, its common parameters, cmdlets and exit codes.
pub fn write(out: &mut dyn std::io::Write) -> std::io::Result<()> {
    clap_mangen::Man::new(Cli::command()).render(out)
}
