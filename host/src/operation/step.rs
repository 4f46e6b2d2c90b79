//! The steps of the operation, in the order they run, and their names in reports.

/// The steps, in the order they run; their names appear in the report's `phases`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Resolve,
    Lock,
    Connect,
    Recover,
    CheckRunning,
    ConnectAgent,
    LocateIso,
    CheckVersion,
    ChooseDrive,
    PreInstall,
    IsoDigest,
    StageIso,
    Journal,
    BorrowMedia,
    InsertIc,
    Autorun,
    PrepareGuest,
    RunInstaller,
    UnmountInGuest,
    EjectIc,
    RestoreMedia,
    VerifyVersion,
    RestartGuest,
}

impl Step {
    /// Clean-up steps run even after a cancel request: they put the drive back.
    pub fn is_cleanup(self) -> bool {
        matches!(
            self,
            Step::Recover | Step::UnmountInGuest | Step::EjectIc | Step::RestoreMedia
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            Step::Resolve => "resolve",
            Step::Lock => "lock",
            Step::Connect => "connect",
            Step::Recover => "recover",
            Step::CheckRunning => "check-running",
            Step::ConnectAgent => "connect-agent",
            Step::LocateIso => "locate-iso",
            Step::CheckVersion => "check-version",
            Step::ChooseDrive => "choose-drive",
            Step::PreInstall => "pre-install",
            Step::IsoDigest => "iso-digest",
            Step::StageIso => "stage-iso",
            Step::Journal => "journal",
            Step::BorrowMedia => "borrow-media",
            Step::InsertIc => "insert-ic",
            Step::Autorun => "autorun",
            Step::PrepareGuest => "prepare-guest",
            Step::RunInstaller => "run-installer",
            Step::UnmountInGuest => "unmount-in-guest",
            Step::EjectIc => "eject-ic",
            Step::RestoreMedia => "restore-media",
            Step::VerifyVersion => "verify-version",
            Step::RestartGuest => "restart-guest",
        }
    }
}
