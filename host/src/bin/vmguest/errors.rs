//! Failures as the user sees them: `-ErrorAction`, the error record on stderr, and the
//! exit code.

use std::path::Path;

use vmguest::{Failure, HResult};

use crate::args::{Common, ErrorAction};
use crate::output;

/// Apply -ErrorAction to one outcome; returns whether to go on.
pub fn report(common: &Common, cmdlet: &str, target: &str, failure: &Failure) -> bool {
    if common.error_action != ErrorAction::SilentlyContinue {
        output::error_record(
            cmdlet,
            target,
            failure.hresult,
            &format!("{:#}", failure.error),
            &failure.causes(),
        );
    }
    common.error_action != ErrorAction::Stop
}

/// [`report`], remembering the first outcome for the exit code.
pub fn first_of(
    common: &Common,
    cmdlet: &str,
    target: &str,
    failure: &Failure,
    first: &mut Option<HResult>,
) -> bool {
    first.get_or_insert(failure.hresult);
    report(common, cmdlet, target, failure)
}

/// A cmdlet of one result: shown, or its error record; the exit code either way.
pub fn one_result<T>(
    common: &Common,
    cmdlet: &str,
    target: &Path,
    result: Result<T, Failure>,
    show: impl FnOnce(T),
) -> i32 {
    match result {
        Ok(v) => {
            show(v);
            0
        }
        Err(f) => {
            let mut first_error = None;
            first_of(
                common,
                cmdlet,
                &target.display().to_string(),
                &f,
                &mut first_error,
            );
            first_error.map_or(0, HResult::exit_code)
        }
    }
}
