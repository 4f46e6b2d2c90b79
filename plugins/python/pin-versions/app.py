"""pin-versions (Python): pin the IC version per guest OS, and deny known-bad releases.

The same policy as the Rust example in plugins/pin-versions, built with componentize-py.

Settings (all optional):
- "pin.windows", "pin.linux", "pin.unknown": family@version, for example
  "pin.windows" = "virtio-win@0.1.262". A pinned version that is not among the
  candidates refuses the install with HRESULT_FROM_WIN32(ERROR_FILE_NOT_FOUND).
- deny: comma-separated family@version. If the built-in choice is denied, the newest
  candidate of the same family that is not denied is chosen instead.
"""

from wit_world import exports
from wit_world.imports import host
from wit_world.imports.types import (
    Candidate,
    ContractError,
    GuestKind,
    Level,
    PolicyContext,
    PolicyDecision,
    PolicyDecision_Choose,
    PolicyDecision_Defer,
    PolicyDecision_Refuse,
    Refusal,
)

KINDS = {GuestKind.LINUX: "linux", GuestKind.WINDOWS: "windows", GuestKind.UNKNOWN: "unknown"}


def pairs(text: str) -> list[tuple[str, str]]:
    """family@version pairs from a comma-separated list."""
    out = []
    for item in text.split(","):
        family, at, version = item.strip().partition("@")
        if at:
            out.append((family.strip(), version.strip()))
    return out


def is_release(c: Candidate, family: str, version: str) -> bool:
    return c.usable and c.family == family and c.version == version


def version_key(v: str) -> tuple[list[int], bool]:
    """Numeric per dotted component; text after a dash sorts below the release."""
    release, dash, _ = v.partition("-")
    nums = [int(n) if n.isdigit() else 0 for n in release.split(".")]
    return (nums, not dash)


def refuse(message: str) -> PolicyDecision:
    return PolicyDecision_Refuse(Refusal(ContractError.FILE_NOT_FOUND, message))


class IsoPolicy(exports.IsoPolicy):
    def choose(self, ctx: PolicyContext) -> PolicyDecision:
        guest = KINDS[ctx.guest.kind]
        pin = host.setting(f"pin.{guest}")
        if pin is not None:
            pinned = pairs(pin)
            if not pinned:
                return refuse(f"pin.{guest} = {pin!r} is not family@version")
            family, version = pinned[0]
            for i, c in enumerate(ctx.candidates):
                if is_release(c, family, version):
                    host.log(Level.INFO, f"{guest} guests are pinned to {family} {version}")
                    return PolicyDecision_Choose(i)
            return refuse(
                f"{guest} guests are pinned to {family} {version}, "
                f"which is not among the {len(ctx.candidates)} candidates"
            )

        deny = pairs(host.setting("deny") or "")

        def denied(c: Candidate) -> bool:
            return any(is_release(c, f, v) for f, v in deny)

        if ctx.default_choice is None:
            return PolicyDecision_Defer()
        chosen = ctx.candidates[ctx.default_choice]
        if not denied(chosen):
            return PolicyDecision_Defer()
        family, version = chosen.family or "", chosen.version or ""
        allowed = [
            (i, c)
            for i, c in enumerate(ctx.candidates)
            if c.usable and c.family == family and not denied(c)
        ]
        if not allowed:
            return refuse(f"{family} {version} is denied and no other {family} candidate is available")
        i, best = max(allowed, key=lambda ic: version_key(ic[1].version or "0"))
        host.log(Level.WARN, f"{family} {version} is denied; using {best.version or '?'}")
        return PolicyDecision_Choose(i)
