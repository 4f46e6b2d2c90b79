//! `New-Plugin`: a buildable plugin skeleton.

use std::path::PathBuf;

use clap::Args;
use vmguest::plugin::skeleton::{self, Language, World};

use crate::args::Common;
use crate::{errors, output};

#[derive(Args, Debug)]
pub struct NewPluginArgs {
    /// The plugin's name: lowercase letters, digits and dashes
    #[arg(long)]
    pub name: String,
    #[arg(long, value_enum, ignore_case = true)]
    pub language: Language,
    /// policy: choose the ISO; hooks: pre- and post-install
    #[arg(long, value_enum, ignore_case = true)]
    pub world: World,
    /// The directory to write (default: ./NAME); it must be empty or missing
    #[arg(long, value_name = "DIR")]
    pub path: Option<PathBuf>,
    /// Write into a directory that is not empty
    #[arg(long)]
    pub force: bool,
    /// Show what would be written; write nothing
    #[arg(long)]
    pub what_if: bool,
}

pub fn exec(common: &Common, a: NewPluginArgs) -> i32 {
    let dir = a.path.unwrap_or_else(|| PathBuf::from(&a.name));
    let made = skeleton::create(&a.name, a.language, a.world, &dir, a.force, a.what_if);
    errors::one_result(common, "New-Plugin", &dir, made, |s| {
        if a.what_if {
            println!(
                "What if: writing {} into {}",
                s.files.join(", "),
                dir.display()
            );
        } else {
            output::skeleton(common.output_format, &s);
        }
    })
}
