//! `Get-Plugin`: the plugins found, what each implements, and whether it was admitted.

use vmguest::plugin::PluginSet;
use vmguest::Settings;

use crate::args::Common;
use crate::output;

pub fn exec(common: &Common, settings: &Settings) -> i32 {
    let set = PluginSet::discover(settings);
    output::plugins(common.output_format, &set.infos());
    0
}
