"""maintenance-window (Python): allow installs only inside a daily window (UTC), read
from the WASI wall clock.

The same hook as the Rust example in plugins/maintenance-window, built with
componentize-py.

Setting window = "HH:MM-HH:MM" (UTC; may wrap past midnight, for example 22:00-06:00).
Outside it, pre-install vetoes with DISP_E_EXCEPTION and says when the window opens.
Without the setting every install is vetoed: a window plugin that nobody configured must
not let installs through.
"""

import time
from typing import Optional

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import host
from wit_world.imports.types import ContractError, InstallContext, InstallOutcome, Level, Refusal


def minutes(hhmm: str) -> Optional[int]:
    h, colon, m = hhmm.strip().partition(":")
    if not (colon and h.isdigit() and m.isdigit()):
        return None
    h, m = int(h), int(m)
    return h * 60 + m if h <= 24 and m < 60 and h * 60 + m <= 24 * 60 else None


def hhmm(minute: int) -> str:
    return f"{minute // 60:02}:{minute % 60:02}"


def veto(message: str) -> Err[Refusal]:
    return Err(Refusal(ContractError.UNEXPECTED, message))


class InstallHooks(exports.InstallHooks):
    def pre_install(self, ctx: InstallContext) -> None:
        window = host.setting("window")
        if window is None:
            raise veto("no maintenance window configured (setting `window`)")
        start_text, dash, end_text = window.partition("-")
        start, end = minutes(start_text), minutes(end_text)
        if not dash or start is None or end is None:
            raise veto(f"window {window!r} is not HH:MM-HH:MM")
        now = int(time.time()) // 60 % (24 * 60)
        inside = start <= now < end if start <= end else now >= start or now < end
        if not inside:
            raise veto(
                f"outside the maintenance window {window} UTC (now {hhmm(now)} UTC); "
                f"it opens at {hhmm(start)} UTC"
            )
        host.log(Level.INFO, f"{ctx.vm.name}: inside the window {window} UTC (now {hhmm(now)})")

    def post_install(self, ctx: InstallContext, outcome: InstallOutcome) -> None:
        pass
