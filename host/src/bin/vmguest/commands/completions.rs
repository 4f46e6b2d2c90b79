//! `completions`: a shell's completion script, from the clap definition.

use clap::{Args, CommandFactory};
use clap_complete::Shell;

use crate::args::Cli;

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    #[arg(value_enum)]
    pub shell: Shell,
}

pub fn exec(a: CompletionsArgs) -> i32 {
    write(a.shell, &mut std::io::stdout());
    0
}

/// Write the completion script for `shell`.
pub fn write(shell: Shell, out: &mut dyn std::io::Write) {
    clap_complete::generate(shell, &mut Cli::command(), "vmguest", out);
}
